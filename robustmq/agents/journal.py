"""The agent layer's journal: a registry's changes as JSON records on one stream of the store.

The agent API (directory and tasks), tools, pipelines and the mq9 agent registry all keep their
state this way, so one class writes the records and one replay reads them back at start-up, with
one policy for a record that does not decode (skip it, count it, say so once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import orjson

log = logging.getLogger("robustmq.agents.journal")

REPLAY_BATCH_RECORDS = 4096


class ReplayCount:
    """What one replay skipped: how many records did not decode, and the offset of the first."""

    __slots__ = ("stream", "bad", "first_bad_offset")

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.bad = 0
        self.first_bad_offset: int | None = None

    def skip(self, offset: int) -> None:
        if self.first_bad_offset is None:
            self.first_bad_offset = offset
        self.bad += 1

    def report(self) -> None:
        """One line per replay, however many records were bad (a log line each would flood)."""
        if self.bad:
            log.warning(
                "journal %s: skipped %d record(s) that are not JSON objects, the first at offset %d",
                self.stream,
                self.bad,
                self.first_bad_offset,
            )


def decode_record(payload: bytes, offset: int, count: ReplayCount, out: list[dict[str, Any]]) -> None:
    """Add the objects one record holds to ``out``.

    An empty payload is a deletion marker (it hides an older record of its key in a compacted
    stream) and holds nothing. A record is an object, or an array of objects (records gathered
    into one append); anything else (not JSON, truncated, another JSON value) is counted as bad.
    """
    if not payload:
        return
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        count.skip(offset)
        return
    if isinstance(value, dict):
        out.append(value)
    elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
        out.extend(value)
    else:
        count.skip(offset)


def replay(store: Any, stream: str) -> tuple[list[dict[str, Any]], ReplayCount]:
    """Every object kept on ``stream``, oldest first (a compacted stream gives the newest per key)."""
    out: list[dict[str, Any]] = []
    count = ReplayCount(stream)
    offset = store.first_offset(stream)
    while True:
        batch = store.read(stream, offset, REPLAY_BATCH_RECORDS)
        if not batch:
            break
        for rec in batch:
            decode_record(rec.payload, rec.offset, count, out)
        offset = batch[-1].offset + 1
    count.report()
    return out, count


class StoreJournal:
    """One stream of records: appended at once or gathered into one array record, replayed in order.

    ``append`` hands back the store's acknowledgement, which completes once the commit holding the
    record has returned (the caller replies after it); ``write`` is fire-and-forget and rides on
    the group commit, gathered for ``gather_ms`` when that is set so a busy registry makes few
    commits. Without a store (in-process tests, a broker built without one) records stay in memory.
    """

    def __init__(
        self,
        store: Any,
        config: dict[str, Any],
        *,
        gather_ms: float = 0.0,
        gather_max_records: int = 1,
    ) -> None:
        self.store = store
        self.config = config
        self.stream: str = config["name"]
        self.memory: list[tuple[str | None, dict[str, Any] | None]] = []  # (key, record) without a store
        self.last_replay: ReplayCount | None = None
        self._gather_s = gather_ms / 1000
        self._gather_max = gather_max_records
        self._pending: list[dict[str, Any]] = []
        self._timer: asyncio.Handle | None = None
        self._failed = False
        # what ``durable`` handed out for the gathered records, settled by the flush's commit
        self._waiters: list[asyncio.Future] = []
        self._last_ack: Any = None

    def open(self) -> None:
        """Create the stream unless it is there (an existing one keeps its definition)."""
        if self.store is not None:
            self.store.create_stream(dict(self.config), exist_ok=True)

    def replay(self) -> list[dict[str, Any]]:
        if self.store is None:
            if self.config.get("compact"):
                return _newest_per_key(self.memory)
            return [rec for _, rec in self.memory if rec is not None]
        records, self.last_replay = replay(self.store, self.stream)
        return records

    def append(self, record: dict[str, Any] | None, key: str | None = None) -> Any:
        """Append one record now (None: a deletion marker for ``key``); returns the store's ack.

        Raises what the store raises (closed, record too large): the caller has not replied yet.
        """
        if self.store is None:
            self.memory.append((key, record))
            return None
        payload = b"" if record is None else orjson.dumps(record)
        return self.store.append(self.stream, payload, key=key)

    def write(self, record: dict[str, Any], key: str | None = None) -> None:
        """Persist without waiting; a store that refuses is logged once, not once per record."""
        if self.store is None:
            self.memory.append((key, record))
        elif self._gather_s and key is None:
            self._gather(record)
        else:
            self._append_quietly(orjson.dumps(record), key)

    def durable(self) -> asyncio.Future | None:
        """A future that completes once every record written so far is committed (None: nothing
        is outstanding, or there is no store). Gathered records go out on the next loop tick, so
        a caller that must not answer before its record is safe waits one commit, not ``gather_ms``.
        It fails with the store's error when that commit fails."""
        if self.store is None:
            return None
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._pending:
            self._waiters.append(fut)
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_soon(self.flush)
            return fut
        ack = self._last_ack
        if ack is None or ack.done() and ack.exception() is None:
            return None
        _settle_when_done([fut], ack)
        return fut

    def commit_now(self) -> None:
        """Write out everything appended so far before returning (it then survives a crash)."""
        self.flush()
        if self.store is not None:
            try:
                self.store.commit_now()
            except Exception as exc:
                self._error(exc)

    def flush(self) -> None:
        """Append the gathered records as one array record."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            batch, self._pending = self._pending, []
            waiters, self._waiters = self._waiters, []
            ack = self._append_quietly(orjson.dumps(batch), None)
            if waiters:
                if ack is None:
                    for fut in waiters:
                        if not fut.done():
                            fut.set_exception(StoreUnavailable(self.stream))
                else:
                    _settle_when_done(waiters, ack)

    async def close(self) -> None:
        self.flush()

    def _gather(self, record: dict[str, Any]) -> None:
        pending = self._pending
        pending.append(record)
        if len(pending) >= self._gather_max:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._gather_s, self.flush)

    def _append_quietly(self, payload: bytes, key: str | None) -> Any:
        """Append and keep the ack (``durable`` hands it out); None when the store refused."""
        try:
            ack = self.store.append(self.stream, payload, key=key)
        except Exception as exc:
            self._error(exc)
            return None
        self._last_ack = ack
        return ack

    def _error(self, exc: Exception) -> None:
        if not self._failed:
            log.error("journal %s: cannot append to the store: %s", self.stream, exc)
            self._failed = True


class StoreUnavailable(Exception):
    """The store refused a journal's records: what waited for them must not be acknowledged."""


def _settle_when_done(waiters: list[asyncio.Future], ack: Any) -> None:
    def settle(done: Any) -> None:
        exc = done.exception()
        for fut in waiters:
            if not fut.done():
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)

    ack.add_done_callback(settle)


def _newest_per_key(
    entries: Iterable[tuple[str | None, dict[str, Any] | None]],
) -> list[dict[str, Any]]:
    """What a compacted stream shows: the newest record of each key (unkeyed ones all stay)."""
    kept: dict[Any, dict[str, Any] | None] = {}
    for i, (key, record) in enumerate(entries):
        slot = ("key", key) if key is not None else ("at", i)
        kept.pop(slot, None)  # the newest moves to the end, as its offset does
        kept[slot] = record
    return [rec for rec in kept.values() if rec is not None]
