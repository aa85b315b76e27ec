"""Stream definitions on disk: a snapshot (``streams.json``) plus an append-only journal.

Creating, changing or deleting a stream appends one checksummed entry and syncs it (O(1), not a
rewrite of every definition); the journal is folded into the snapshot at start-up and whenever
it grows past a few times the number of streams.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from robustmq.store.errors import OPEN_FAILED, StoreOpenError
from robustmq.store.journal import frame, parse
from robustmq.store.stream import StreamConfig

STREAMS_FILE = "streams.json"
STREAMS_JOURNAL_FILE = "streams.jnl"
MIN_COMPACT_ENTRIES = 1024  # journal entries before a fold is considered


class StreamDefinitions:
    """The durable set of stream definitions of a data directory."""

    def __init__(self, data_dir: Path, sync: bool = True) -> None:
        self.path = data_dir / STREAMS_FILE
        self.journal_path = data_dir / STREAMS_JOURNAL_FILE
        self.sync = sync  # False under the ``never`` fsync policy
        self._fd: int | None = None
        self._entries = 0

    def load(self) -> dict[str, StreamConfig]:
        """The snapshot with the journal replayed on top (a torn last entry is ignored)."""
        try:
            raw = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            raw = []
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StoreOpenError(0, OPEN_FAILED.format(path=self.path, reason=exc)) from None
        found: dict[str, dict[str, Any]] = {d["name"]: d for d in raw}
        try:
            entries, _valid = parse(self.journal_path.read_bytes())
        except FileNotFoundError:
            entries = []
        except OSError as exc:
            raise StoreOpenError(0, OPEN_FAILED.format(path=self.journal_path, reason=exc)) from None
        for e in entries:
            if e.get("op") == "put":
                found[e["cfg"]["name"]] = e["cfg"]
            elif e.get("op") == "del":
                found.pop(e["name"], None)
        return {name: StreamConfig.model_validate(d) for name, d in found.items()}

    def rewrite(self, configs: list[StreamConfig]) -> None:
        """Fold everything into a new snapshot (temp file, sync, rename), then empty the journal.

        A crash between the two leaves a journal whose replay over the new snapshot is harmless:
        each entry sets or removes a whole definition by name, and the last one wins."""
        tmp = self.path.with_suffix(".tmp")
        data = orjson.dumps([c.model_dump() for c in configs], option=orjson.OPT_INDENT_2)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._sync_dir()
        self.close()
        self._fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        if self.sync:
            os.fdatasync(self._fd)
        self._entries = 0

    def put(self, config: StreamConfig) -> None:
        self._append({"op": "put", "cfg": config.model_dump()})

    def remove(self, name: str) -> None:
        self._append({"op": "del", "name": name})

    def needs_fold(self, streams: int) -> bool:
        return self._entries > max(MIN_COMPACT_ENTRIES, 4 * streams)

    def _append(self, entry: dict[str, Any]) -> None:
        if self._fd is None:
            self._fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        data = frame(entry)
        size = os.fstat(self._fd).st_size
        try:
            done = 0
            while done < len(data):
                done += os.write(self._fd, data[done:])
            if self.sync:
                os.fdatasync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, size)
            except OSError:
                pass
            raise
        self._entries += 1

    def _sync_dir(self) -> None:
        if not self.sync:
            return
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
