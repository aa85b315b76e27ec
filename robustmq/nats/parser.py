"""The sans-IO parser of the operations a NATS client sends: bytes in, events out.

Frames may be split at any byte or packed many to a read; a broken stream raises ``ProtocolViolation``.
"""

from __future__ import annotations

from itertools import repeat
from operator import itemgetter
from typing import Any

import orjson

from robustmq.nats import errors
from robustmq.nats.errors import ProtocolViolation
from robustmq.nats.events import PING, PONG, Connect, Pub, PubBatch, PubRun, Sub, Unsub
from robustmq.nats.limits import DEFAULT_MAX_CONTROL_LINE_BYTES, DEFAULT_MAX_PAYLOAD_BYTES

_MAX_SIZE_DIGITS = 9  # nats-server parses at most 9 digits of a size
_BLANKS = b" \t"
_NEED_ARGS = frozenset((b"PUB", b"HPUB", b"SUB", b"UNSUB"))
# a repeated control line is checked in bulk over at least / at most this many frames
_BULK_MIN_FRAMES = 16
_BULK_MAX_FRAMES = 8192


# plain PUB frames are read column by column over a window of at least / at most this many bytes
_COLUMNS_MIN_WINDOW_BYTES = 4096
_COLUMNS_MAX_WINDOW_BYTES = 256 * 1024
_COLUMNS_MIN_BYTES = 1024  # smaller reads go frame by frame
_COLUMNS_FIRST_BACKOFF_BYTES = 64  # after a miss, frame by frame this far on, doubling per miss
_first = itemgetter(0)
_second = itemgetter(1)
_third = itemgetter(2)

_SIZE_CACHE_MAX_ENTRIES = 4096
_SUBJECT_CACHE_MAX_ENTRIES = 256
_new_pub = tuple.__new__

# sizes seen so far, shared by every parser: most traffic uses a handful of sizes
_sizes: dict[bytes, int] = {}


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _size(raw: bytes, what: str) -> int:
    size = _sizes.get(raw)
    if size is not None:
        return size
    if not raw.isdigit() or len(raw) > _MAX_SIZE_DIGITS:
        raise ProtocolViolation(None, f"bad or missing {what} size")
    size = int(raw)
    if len(_sizes) < _SIZE_CACHE_MAX_ENTRIES:
        _sizes[raw] = size
    return size


class ClientParser:
    """Decodes CONNECT, PUB, HPUB, SUB, UNSUB, PING and PONG.

    ``feed(data)`` returns the complete operations found so far. On a violation it raises
    ``ProtocolViolation`` carrying the events decoded before it; the parser then stays broken.
    """

    __slots__ = (
        "max_payload_bytes",
        "max_control_line_bytes",
        "_buf",
        "_parts",
        "_have",
        "_need",
        "_error",
        "_subjects",
        "merge_runs",
    )

    def __init__(
        self,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_control_line_bytes: int = DEFAULT_MAX_CONTROL_LINE_BYTES,
        merge_runs: bool = False,
    ) -> None:
        # merge_runs: consecutive plain PUBs to one subject within a read become one PubRun
        self.merge_runs = merge_runs
        self.max_payload_bytes = max_payload_bytes
        self.max_control_line_bytes = max_control_line_bytes
        self._buf = b""
        # while a large payload is arriving: its chunks, their length, and the length needed
        self._parts: list[bytes] = []
        self._have = 0
        self._need = 0
        self._error: ProtocolViolation | None = None
        # subject bytes -> str for recent publishes: saves decoding, and equal subjects become
        # the same str object (its hash is computed once, comparisons are by identity)
        self._subjects: dict[bytes, str] = {}

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf) + self._have

    def feed(self, data: bytes) -> list[Any]:
        if self._error is not None:
            raise self._error
        if self._need:
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            buf = b"".join(self._parts)
            self._parts = []
            self._have = self._need = 0
        elif self._buf:
            buf = self._buf + data
        else:
            buf = data
        events: list[Any] = []
        try:
            pos = self._parse(buf, events)
        except ProtocolViolation as exc:
            exc.events = events
            self._error = exc
            self._buf = b""
            raise
        if pos < len(buf):
            rest = buf[pos:]
            if self._need:
                self._parts = [rest]
                self._have = len(rest)
                self._buf = b""
            else:
                self._buf = rest
        else:
            self._buf = b""
        return events

    @staticmethod
    def _take_identical_frames(buf: bytes, pos: int, line: bytes, size: int) -> list[bytes]:
        """Payloads of the longest checked stretch of frames at ``pos`` that all repeat ``line``.

        Checks every frame's control line and CRLF column by column with strided slices (C loops),
        instead of one frame at a time; returns [] when the stretch is not clean.
        """
        frame = len(line) + size + 2
        count = min((len(buf) - pos) // frame, _BULK_MAX_FRAMES)
        end = pos + count * frame
        for j in range(len(line)):
            if buf[pos + j : end : frame] != line[j : j + 1] * count:
                return []
        tail = pos + len(line) + size
        if buf[tail:end:frame] != b"\r" * count or buf[tail + 1 : end : frame] != b"\n" * count:
            return []
        first = pos + len(line)
        return [buf[s : s + size] for s in range(first, end, frame)]

    @staticmethod
    def _start_run(events: list[Any], batch: PubBatch) -> list[bytes]:
        """Move the batch's last message (the parser's ``events[-1]``) into a new PubRun; return its payloads."""
        payload = batch.pop()
        subject = batch.pop()
        if not batch:
            events.pop()
        run = [payload]
        events.append(_new_pub(PubRun, (subject, run)))
        return run

    def _take_plain_frames(
        self, buf: bytes, pos: int, window: int
    ) -> tuple[list[bytes], list[str], list[bytes], bytes, int]:
        """The longest clean stretch of plain ``PUB <subject> <size>`` frames at ``pos``, read in columns.

        Splits a window of the buffer at CRLF once, then checks every line and size with C loops
        (``map``, list equality) instead of one frame at a time: ``(raw subjects, subjects,
        payloads, the last control line, bytes taken)``. A frame that is not an upper-case PUB without reply, has a size
        not yet seen, breaks a limit or has a payload holding CRLF ends the stretch; it and what
        follows are left to the frame-by-frame path, which raises the errors.
        """
        pieces = buf[pos : pos + window].split(b"\r\n")
        count = (len(pieces) - 1) >> 1  # (line, payload) pairs each followed by a CRLF
        lines = pieces[0 : 2 * count : 2]
        parts = list(map(bytes.split, lines))
        widths = list(map(len, parts))
        if widths.count(3) != count:
            count = widths.index(next(w for w in widths if w != 3))
            del parts[count:], lines[count:]
        if not count:
            return [], [], [], b"", 0
        ops = list(map(_first, parts))
        heads = list(map(_first, lines))  # 80: the line starts with "P", no blank before the op
        if ops.count(b"PUB") != count or heads.count(80) != count:
            count = next(i for i in range(count) if ops[i] != b"PUB" or heads[i] != 80)
        sizes = list(map(_sizes.get, map(_third, parts[:count])))
        if None in sizes:  # a size not seen yet: validated frame by frame first
            count = sizes.index(None)
        payloads = pieces[1 : 2 * count : 2]
        lengths = list(map(len, payloads))
        del sizes[count:], lines[count:]
        if lengths != sizes:  # a payload holding CRLF: the stretch ends at that frame
            count = next(i for i in range(count) if lengths[i] != sizes[i])
            del sizes[count:], lines[count:], payloads[count:]
        if not count:
            return [], [], [], b"", 0
        widths = list(map(len, lines))
        if sum(map(bytes.count, lines, repeat(b"\n"))) or max(widths) > self.max_control_line_bytes:
            return [], [], [], b"", 0  # a bare LF ends a line; a long line is an error: frame by frame
        if max(sizes) > self.max_payload_bytes:
            return [], [], [], b"", 0
        raws = list(map(_second, parts[:count]))
        subjects = list(map(self._subjects.get, raws))
        if None in subjects:
            subjects = [s if s is not None else self._subject(r) for s, r in zip(subjects, raws, strict=True)]
        return raws, subjects, payloads, lines[-1], sum(widths) + sum(sizes) + 4 * count

    def _subject(self, raw: bytes) -> str:
        subject = self._subjects.get(raw)
        if subject is None:
            subject = _text(raw)
            if len(self._subjects) >= _SUBJECT_CACHE_MAX_ENTRIES:
                self._subjects.clear()
            self._subjects[raw] = subject
        return subject

    def _parse(self, buf: bytes, events: list[Any]) -> int:
        """Append every complete operation in ``buf`` to ``events``; return where parsing stopped."""
        max_line = self.max_control_line_bytes
        max_payload = self.max_payload_bytes
        n = len(buf)
        pos = 0
        find = buf.find
        append = events.append
        subjects = self._subjects
        sizes = _sizes
        merge = self.merge_runs
        run_raw = None  # subject bytes of the last event when it is a plain Pub or a PubRun
        run: list[bytes] | None = None  # the payload list of that PubRun, once there is one
        run_line = b""  # the control line of that last plain PUB, terminator included
        run_size = 0
        batch: PubBatch | None = None  # the PubBatch at events[-1], while plain PUBs keep coming
        startswith = buf.startswith
        bulk = merge
        # columns: read plain PUBs in columns from columns_at on; backing off after a miss
        # (a frame or two first: one frame repeated is left to the strided check)
        columns_at = _COLUMNS_FIRST_BACKOFF_BYTES if merge and n >= _COLUMNS_MIN_BYTES else n
        columns_backoff = _COLUMNS_FIRST_BACKOFF_BYTES
        window = _COLUMNS_MIN_WINDOW_BYTES
        while pos < n:
            if run_line and startswith(run_line, pos):
                # the same control line again: same subject, same size, nothing new to check
                if bulk and n - pos >= _BULK_MIN_FRAMES * (len(run_line) + run_size + 2):
                    taken = self._take_identical_frames(buf, pos, run_line, run_size)
                    if taken:
                        if run is None:
                            run = self._start_run(events, batch)  # type: ignore[arg-type]
                            batch = None
                        run += taken
                        pos += len(taken) * (len(run_line) + run_size + 2)
                        continue
                    bulk = False  # not a clean stretch: frame by frame for the rest of this read
                start = pos + len(run_line)
                stop = start + run_size
                if stop + 2 > n:
                    self._need = stop + 2 - pos
                    return pos
                if buf[stop : stop + 2] != b"\r\n":
                    raise ProtocolViolation(errors.UNKNOWN_OPERATION)
                if run is None:
                    run = self._start_run(events, batch)  # type: ignore[arg-type]
                    batch = None
                run.append(buf[start:stop])
                pos = stop + 2
                continue
            if pos >= columns_at:
                raws, names, payloads, last_line, taken = self._take_plain_frames(buf, pos, window)
                if not taken:
                    columns_at = pos + columns_backoff
                    columns_backoff *= 2
                else:
                    pos += taken
                    columns_backoff = _COLUMNS_FIRST_BACKOFF_BYTES
                    raw = raws[0]
                    if raws.count(raw) == len(raws):  # one subject: a run
                        if raw != run_raw:
                            run = payloads
                            append(_new_pub(PubRun, (names[0], run)))
                        else:
                            if run is None:
                                run = self._start_run(events, batch)  # type: ignore[arg-type]
                            run += payloads
                        batch = None
                        run_raw = raw
                        size = len(payloads[-1])
                        if len(payloads[0]) == size:
                            # likely the same frame over and over: the strided check above takes over
                            run_line = last_line + b"\r\n"
                            run_size = size
                        else:
                            run_line = b""
                        continue
                    else:
                        window = min(max(2 * taken, _COLUMNS_MIN_WINDOW_BYTES), _COLUMNS_MAX_WINDOW_BYTES)
                        flat: list[Any] = [None] * (2 * len(raws))
                        flat[0::2] = names
                        flat[1::2] = payloads
                        if batch is None:
                            batch = PubBatch(flat)
                            append(batch)
                        else:
                            batch += flat
                        run = None
                    run_raw = raws[-1]
                    run_line = b""
                    continue
            nl = find(b"\n", pos)
            if nl < 0:
                if n - pos > max_line and n - pos - (buf[n - 1] == 13) > max_line:
                    raise ProtocolViolation(errors.MAX_CONTROL_LINE)
                return pos
            if nl - pos > max_line and nl - pos - (buf[nl - 1] == 13) > max_line:
                raise ProtocolViolation(errors.MAX_CONTROL_LINE)
            parts = buf[pos:nl].split()  # the CR, if any, is whitespace to split()
            op = parts[0] if parts else b""
            if op != b"PUB" or buf[pos] != 80:  # not an upper-case PUB: the general path
                if not parts or buf[pos] in _BLANKS:
                    raise ProtocolViolation(errors.UNKNOWN_OPERATION)
                op = op.upper()
                if len(parts) == 1 and op in _NEED_ARGS:
                    raise ProtocolViolation(errors.UNKNOWN_OPERATION)
            if op == b"PUB":
                nargs = len(parts)
                if nargs == 3:
                    reply = None
                elif nargs == 4:
                    reply = _text(parts[2])
                elif nargs == 1:
                    raise ProtocolViolation(errors.UNKNOWN_OPERATION)
                else:
                    raise ProtocolViolation(None, "bad PUB arguments")
                size = sizes.get(parts[-1])
                if size is None:
                    size = _size(parts[-1], "payload")
                if size > max_payload:
                    raise ProtocolViolation(errors.MAX_PAYLOAD)
                start = nl + 1
                stop = start + size
                if stop + 2 > n:
                    self._need = stop + 2 - pos
                    return pos
                if buf[stop : stop + 2] != b"\r\n":
                    raise ProtocolViolation(errors.UNKNOWN_OPERATION)
                raw = parts[1]
                line_start = pos
                pos = stop + 2
                if reply is None and merge:
                    if raw == run_raw:
                        if run is None:
                            run = self._start_run(events, batch)  # type: ignore[arg-type]
                            batch = None
                        run.append(buf[start:stop])
                        run_line = buf[line_start:start]
                        run_size = size
                        continue
                    # a run starts when the next PUB repeats this subject (above); the same
                    # line again goes to the run path before any read in columns
                    run_raw = raw
                    run = None
                    run_line = buf[line_start:start]
                    run_size = size
                    subject = subjects.get(raw) or self._subject(raw)
                    if batch is None:
                        batch = PubBatch((subject, buf[start:stop]))
                        append(batch)
                    else:
                        batch += (subject, buf[start:stop])
                    continue
                run_raw = None
                run_line = b""
                batch = None
                subject = subjects.get(raw)
                if subject is None:
                    subject = self._subject(raw)
                append(_new_pub(Pub, (subject, reply, None, buf[start:stop])))
                continue
            run_raw = None  # any other operation ends a run and a batch
            run_line = b""
            batch = None
            if op == b"HPUB":
                nargs = len(parts)
                if nargs == 4:
                    reply = None
                elif nargs == 5:
                    reply = _text(parts[2])
                else:
                    raise ProtocolViolation(None, "bad HPUB arguments")
                hsize = _size(parts[-2], "header")
                size = _size(parts[-1], "total")
                if hsize > size:
                    raise ProtocolViolation(None, "header size larger than total size")
                if size > max_payload:
                    raise ProtocolViolation(errors.MAX_PAYLOAD)
                start = nl + 1
                stop = start + size
                if stop + 2 > n:
                    self._need = stop + 2 - pos
                    return pos
                if buf[stop : stop + 2] != b"\r\n":
                    raise ProtocolViolation(errors.UNKNOWN_OPERATION)
                split = start + hsize
                # an empty header block is delivered as a plain message, as nats-server does
                headers = buf[start:split] if hsize else None
                append(Pub(self._subject(parts[1]), reply, headers, buf[split:stop]))
                pos = stop + 2
            elif op == b"SUB":
                nargs = len(parts)
                if nargs == 3:
                    append(Sub(_text(parts[1]), None, _text(parts[2])))
                elif nargs == 4:
                    append(Sub(_text(parts[1]), _text(parts[2]), _text(parts[3])))
                else:
                    raise ProtocolViolation(None, "bad SUB arguments")
                pos = nl + 1
            elif op == b"PING":
                append(PING)
                pos = nl + 1
            elif op == b"PONG":
                append(PONG)
                pos = nl + 1
            elif op == b"UNSUB":
                nargs = len(parts)
                if nargs == 2:
                    append(Unsub(_text(parts[1]), 0))
                elif nargs == 3:
                    # nats-server reads a bad count (``x``, ``-1``) as 0: remove at once
                    count = parts[2]
                    append(Unsub(_text(parts[1]), int(count) if count.isdigit() and len(count) <= 9 else 0))
                else:
                    raise ProtocolViolation(None, "bad UNSUB arguments")
                pos = nl + 1
            elif op == b"CONNECT":
                raw = buf[pos:nl].split(None, 1)
                try:
                    options = orjson.loads(raw[1]) if len(raw) == 2 else None
                except orjson.JSONDecodeError:
                    options = None
                if not isinstance(options, dict):
                    raise ProtocolViolation(None, "bad CONNECT JSON")
                append(Connect(options))
                pos = nl + 1
            elif op == b"INFO" or op == b"+OK":
                pos = nl + 1  # nats-server ignores both from a client
            else:
                raise ProtocolViolation(errors.UNKNOWN_OPERATION)
        return pos
