"""Open file descriptors of segments and journals: opened on first use, at most
``MAX_OPEN_LOG_FILES`` at a time, the least recently used closed first.

Ten thousand mailboxes are ten thousand streams; keeping each one's files open would take two
descriptors per stream. Busy files (the active segment of a busy stream) stay open because
they are used all the time. Loop thread only: other threads open files by path themselves.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Protocol

MAX_OPEN_LOG_FILES = 512


class HasFile(Protocol):
    fd: int | None

    def open_fd(self) -> int: ...


class OpenFiles:
    """A bounded LRU of descriptors, keyed by the object that owns each one."""

    def __init__(self, limit: int = MAX_OPEN_LOG_FILES) -> None:
        self.limit = limit
        self._lru: OrderedDict[HasFile, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lru)

    def fd(self, owner: HasFile) -> int:
        """The owner's descriptor, opened (and another one closed) when needed."""
        fd = owner.fd
        if fd is not None:
            self._lru.move_to_end(owner)
            return fd
        return self.add(owner, owner.open_fd())

    def add(self, owner: HasFile, fd: int) -> int:
        """Take a descriptor the owner just opened (e.g. creating its file)."""
        self.close(owner)
        owner.fd = fd
        self._lru[owner] = None
        while len(self._lru) > self.limit:
            old, _ = self._lru.popitem(last=False)
            if old.fd is not None:
                os.close(old.fd)
                old.fd = None
        return fd

    def close(self, owner: HasFile) -> None:
        self._lru.pop(owner, None)
        if owner.fd is not None:
            os.close(owner.fd)
            owner.fd = None


OPEN_FILES = OpenFiles()


def append_all(owner: HasFile, data: bytes, size: int) -> None:
    """Append all of ``data`` to ``owner``'s file, ``size`` bytes long, or nothing: on error the
    file is cut back to ``size`` and OSError raised (a write that makes no progress is ENOSPC)."""
    fd = OPEN_FILES.fd(owner)
    done = 0
    try:
        view = memoryview(data)
        while done < len(data):
            n = os.write(fd, view[done:])
            if n <= 0:
                raise OSError(28, os.strerror(28))
            done += n
    except OSError:
        if done:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
        raise
