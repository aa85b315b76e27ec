"""Durable consumers: named cursors on a stream partition with out-of-order acks and redelivery.

State is an ack floor plus a set of acks above it, delivered-but-unacked records with their
deadlines, and records passed over because they were not yet due. Acks, commits and floors are
journalled with the partition; on restart everything at or above the floor that is not acked
is delivered again (at least once).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from robustmq.store.records import Record

if TYPE_CHECKING:
    from robustmq.store.log import PartitionLog

ACKED_FLOOR_RECOMPUTE = 1024  # recompute the floor when this many acks sit above it


class ConsumerConfig(BaseModel):
    """How a consumer delivers.

    ``order``: ``offset`` (FIFO) or ``priority`` (critical, then urgent, then normal; FIFO within).
    ``max_deliver``: after this many deliveries an unacked record goes to ``dead_letter`` (a stream
    name; dropped when unset) and counts as acked; 0 = unlimited.
    ``start``: where a new consumer begins: ``first`` record kept, ``new`` records only, or an offset.
    """

    model_config = ConfigDict(extra="forbid")

    ack_wait_ms: int = Field(30_000, gt=0)
    max_deliver: int = Field(0, ge=0)
    dead_letter: str | None = None
    order: Literal["offset", "priority"] = "offset"
    start: Literal["first", "new"] | int = "first"


class Consumer:
    """A named cursor. Use through ``Store.consumer(...)``; every method is synchronous and cheap."""

    def __init__(
        self,
        name: str,
        plog: PartitionLog,
        config: ConsumerConfig,
        floor: int,
        now_ms: Callable[[], int],
        journal: Callable[[PartitionLog, dict[str, Any]], asyncio.Future],
        dead_letter: Callable[[str, Record], None],
    ) -> None:
        self.name = name
        self.plog = plog
        self.config = config
        self.floor = floor
        self.acked: set[int] = set()
        self.pending: dict[int, list[int]] = {}  # offset -> [deliveries, redeliver_at_ms]
        self.deferred: list[tuple[int, int]] = []  # heap of (deliver_after_ms, offset)
        self.cursor = floor
        self.class_cursors = [floor, floor, floor]
        self.deleted = False
        # offsets below this may have been handed out by the consumer's owner before (journalled,
        # so a front-end can flag them as redelivered after a restart)
        self.delivered_below = 0
        self._now_ms = now_ms
        self._journal = journal
        self._dead_letter = dead_letter

    def __repr__(self) -> str:
        return f"<Consumer {self.name} on {self.plog.stream}/{self.plog.partition} floor={self.floor}>"

    @property
    def stream(self) -> str:
        return self.plog.stream

    @property
    def partition(self) -> int:
        return self.plog.partition

    # -- delivering ------------------------------------------------------------------------------

    def fetch(self, max_records: int = 100, now: int | None = None) -> list[Record]:
        """The next records to process: due redeliveries and released delays first, then new ones.

        Each returned record stays pending until acked; if not acked within ``ack_wait_ms`` it is
        delivered again (``delivery_count`` tells how many times).
        """
        if now is None:
            now = self._now_ms()
        plog = self.plog
        priority = self.config.order == "priority"
        again: list[int] = [o for o, (_n, due) in self.pending.items() if due <= now]
        while self.deferred and self.deferred[0][0] <= now:
            again.append(heapq.heappop(self.deferred)[1])
        out: list[Record] = []
        if again:
            if priority:
                again.sort(key=lambda o: (-plog.priority_of(o), o) if o >= plog.first_offset else (0, o))
            else:
                again.sort()
            for o in again:
                if len(out) >= max_records:
                    break
                rec = plog.get(o, now)
                if rec is None:
                    late = plog.get(o, now, include_invisible=True)
                    if late is not None and late.deliver_after_ms and late.deliver_after_ms > now:
                        heapq.heappush(self.deferred, (late.deliver_after_ms, o))
                    else:
                        self._settle(o)
                    continue
                self._deliver(rec, now, out)
        need = max_records - len(out)
        if need > 0:
            not_due: list[tuple[int, int]] = []
            if priority:
                fresh: list[Record] = []
                for prio in (2, 1, 0):
                    while len(fresh) < need and self.class_cursors[prio] < plog.end_offset:
                        recs, nxt = plog.read_class(
                            prio, self.class_cursors[prio], need - len(fresh), now, not_due
                        )
                        self.class_cursors[prio] = max(self.class_cursors[prio], nxt)
                        fresh.extend(r for r in recs if self._is_new(r.offset))
                        if not recs:
                            break
            else:
                fresh = []
                while len(fresh) < need and self.cursor < plog.end_offset:
                    chunk = plog.read(self.cursor, need - len(fresh), now, not_due)
                    if len(chunk) >= need - len(fresh):
                        self.cursor = chunk[-1].offset + 1
                    else:
                        self.cursor = max(self.cursor, plog.end_offset)
                    fresh.extend(r for r in chunk if self._is_new(r.offset))
                not_due = [(d, o) for d, o in not_due if o < self.cursor]
            for d, o in not_due:
                if self._is_new(o):
                    heapq.heappush(self.deferred, (d, o))
            for rec in fresh:
                self._deliver(rec, now, out)
        return out

    def _is_new(self, offset: int) -> bool:
        return offset >= self.floor and offset not in self.acked and offset not in self.pending

    def _deliver(self, rec: Record, now: int, out: list[Record]) -> None:
        entry = self.pending.get(rec.offset)
        count = entry[0] if entry else 0
        if self.config.max_deliver and count >= self.config.max_deliver:
            if self.config.dead_letter:
                self._dead_letter(self.config.dead_letter, rec)
            self.ack(rec.offset)
            return
        self.pending[rec.offset] = [count + 1, now + self.config.ack_wait_ms]
        rec.delivery_count = count + 1
        out.append(rec)

    def has_ready(self, now: int | None = None) -> bool:
        """Whether ``fetch`` would probably return something now."""
        if now is None:
            now = self._now_ms()
        plog = self.plog
        if self.config.order == "priority":
            if min(self.class_cursors) < plog.end_offset and any(
                c < plog.end_offset for c in self.class_cursors
            ):
                return True
        elif self.cursor < plog.end_offset:
            return True
        if self.deferred and self.deferred[0][0] <= now:
            return True
        return any(due <= now for _n, due in self.pending.values())

    def next_due_ms(self) -> int | None:
        """When the earliest redelivery or delayed release falls due (clock ms), if any."""
        dues = [due for _n, due in self.pending.values()]
        if self.deferred:
            dues.append(self.deferred[0][0])
        return min(dues) if dues else None

    async def wait(self, timeout_s: float) -> bool:
        """Until ``fetch`` may return something (new commit, delay released, ack-wait expired)."""
        if self.has_ready():
            return True
        due = self.next_due_ms()
        if due is not None:
            timeout_s = min(timeout_s, max(0.0, (due - self._now_ms()) / 1000.0))
        await self.plog.wait(timeout_s)
        return self.has_ready()

    # -- acknowledging ---------------------------------------------------------------------------

    def ack(self, offset: int) -> asyncio.Future | None:
        """Acknowledge one record (in any order). Returns the journal write's future."""
        return self.ack_many((offset,))

    def ack_many(self, offsets: list[int] | tuple[int, ...]) -> asyncio.Future | None:
        fresh = []
        for o in offsets:
            if o < self.floor or o in self.acked:
                continue
            self.acked.add(o)
            self.pending.pop(o, None)
            fresh.append(o)
        if not fresh:
            return None
        self._advance_floor()
        return self._journal(self.plog, {"t": "ack", "c": self.name, "o": fresh})

    def nack(self, offset: int, delay_ms: int = 0) -> None:
        """Deliver this pending record again (after ``delay_ms``)."""
        entry = self.pending.get(offset)
        if entry is not None:
            entry[1] = self._now_ms() + delay_ms

    def note_delivered(self, offset: int) -> None:
        """The owner handed ``offset`` (and what lies below it) to a client: journalled lazily
        with the next commit, so after a restart ``delivered_below`` tells which records a client
        may have seen already (AMQP's redelivered flag, MQTT's DUP)."""
        if offset >= self.delivered_below:
            self.delivered_below = offset + 1
            self.plog.add_journal({"t": "dlv", "c": self.name, "o": offset + 1})

    def _settle(self, offset: int) -> None:
        """A pending or deferred record that can never be delivered again (deleted, expired)."""
        self.pending.pop(offset, None)
        if offset >= self.floor:
            self.acked.add(offset)

    def _advance_floor(self) -> None:
        acked = self.acked
        floor = self.floor
        while floor in acked:
            acked.discard(floor)
            floor += 1
        if len(acked) > ACKED_FLOOR_RECOMPUTE:
            floor = max(floor, self.safe_floor())
            self.acked = {o for o in acked if o >= floor}
        if floor != self.floor:
            self.floor = floor
            self.plog.add_journal({"t": "floor", "c": self.name, "o": floor})

    def safe_floor(self) -> int:
        """Everything below this is acked or can never be delivered."""
        cursor = min(self.class_cursors) if self.config.order == "priority" else self.cursor
        cands = [cursor, self.plog.end_offset]
        if self.pending:
            cands.append(min(self.pending))
        if self.deferred:
            cands.append(min(o for _d, o in self.deferred))
        unacked_pending = min(cands)
        return max(self.floor, unacked_pending)

    def compact_state(self) -> None:
        """Move the floor over everything settled (called periodically, not per message)."""
        floor = self.safe_floor()
        if floor > self.floor:
            self.floor = floor
            self.acked = {o for o in self.acked if o >= floor}
            self._journal(self.plog, {"t": "floor", "c": self.name, "o": floor})

    def commit(self, offset: int) -> asyncio.Future:
        """Kafka-style: everything below ``offset`` is done. The committed offset may also go back."""
        self.floor = offset
        self.acked = {o for o in self.acked if o >= offset}
        self.pending = {o: e for o, e in self.pending.items() if o >= offset}
        self.deferred = [(d, o) for d, o in self.deferred if o >= offset]
        heapq.heapify(self.deferred)
        self.cursor = offset
        self.class_cursors = [offset, offset, offset]
        return self._journal(self.plog, {"t": "commit", "c": self.name, "o": offset})

    def committed(self) -> int:
        """The ack floor: the first offset not yet done (Kafka's committed offset)."""
        return self.floor

    def info(self) -> dict[str, Any]:
        plog = self.plog
        return {
            "name": self.name,
            "stream": plog.stream,
            "partition": plog.partition,
            "config": self.config.model_dump(),
            "ack_floor": self.floor,
            "cursor": self.cursor if self.config.order == "offset" else min(self.class_cursors),
            "num_pending": len(self.pending),
            "num_acked_above_floor": len(self.acked),
            "num_waiting": max(0, plog.end_offset - max(self.floor, plog.first_offset) - len(self.acked)),
        }

    # -- journal ---------------------------------------------------------------------------------

    def snapshot_entries(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [
            {"t": "cons", "c": self.name, "cfg": self.config.model_dump(), "floor": self.floor}
        ]
        if self.acked:
            out.append({"t": "ack", "c": self.name, "o": sorted(self.acked)})
        if self.delivered_below:
            out.append({"t": "dlv", "c": self.name, "o": self.delivered_below})
        return out

    def replay(self, entry: dict[str, Any]) -> None:
        t = entry["t"]
        if t == "ack":
            for o in entry["o"]:
                if o >= self.floor:
                    self.acked.add(o)
        elif t == "floor":
            if entry["o"] > self.floor:
                self.floor = entry["o"]
                self.acked = {o for o in self.acked if o >= self.floor}
        elif t == "dlv":
            self.delivered_below = max(self.delivered_below, entry["o"])
        elif t == "commit":
            self.floor = entry["o"]
            self.acked = {o for o in self.acked if o >= self.floor}

    def restart_at_floor(self) -> None:
        floor = max(self.floor, self.plog.first_offset) if self.plog.first_offset > self.floor else self.floor
        self.floor = floor
        while self.floor in self.acked:
            self.acked.discard(self.floor)
            self.floor += 1
        self.cursor = self.floor
        self.class_cursors = [self.floor] * 3
