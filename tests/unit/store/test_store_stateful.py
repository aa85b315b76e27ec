"""Random appends, reads, acks, deletes, compactions, clock moves and reopenings, compared with a
simple in-memory model of what must be visible."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from robustmq.config import StoreSettings
from robustmq.store import ManualClock, Store

STREAMS = ("plain", "kv", "capped")  # kv is key-compacted, capped keeps the last CAP records
CAP = 5
PRIOS = ("normal", "urgent", "critical")
LONG = os.environ.get("ROBUSTMQ_LONG_TESTS") == "1"


@dataclass
class M:
    offset: int
    payload: bytes
    key: bytes | None
    priority: str
    expires_at: int | None
    deliver_after: int | None = None


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.mkdtemp(prefix="store-model-")
        self.clock = ManualClock()
        self.records: dict[str, list[M]] = {s: [] for s in STREAMS}
        self.deleted: dict[str, set[int]] = {s: set() for s in STREAMS}
        self.acked: set[int] = set()
        self.pending: set[int] = set()
        self.cursor = 0
        self.store = self._open()
        self.run(self._create())

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def _open(self) -> Store:
        st = Store(StoreSettings(data_dir=self.dir, segment_max_bytes=700), clock=self.clock, index=False)
        self.run(st.start())
        return st

    async def _create(self) -> None:
        self.store.create_stream({"name": "plain"})
        self.store.create_stream({"name": "kv", "compact": True})
        self.store.create_stream({"name": "capped", "max_msgs": CAP})
        self.consumer = self.store.consumer("plain", "g", config={"ack_wait_ms": 10**12})

    def teardown(self) -> None:
        self.run(self.store.stop())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the model -------------------------------------------------------------------------------

    def visible(self, stream: str) -> list[M]:
        now = self.clock.now_ms()
        newest: dict[bytes, int] = {}
        for r in self.records[stream]:
            if r.key is not None:
                newest[r.key] = r.offset
        out = []
        first = max(0, len(self.records[stream]) - CAP) if stream == "capped" else 0
        for r in self.records[stream]:
            if r.offset < first or r.offset in self.deleted[stream]:
                continue
            if (r.expires_at is not None and r.expires_at <= now) or (
                r.deliver_after is not None and r.deliver_after > now
            ):
                continue
            if stream == "kv" and r.key is not None and newest[r.key] != r.offset:
                continue
            out.append(r)
        return out

    # -- rules -----------------------------------------------------------------------------------

    @rule(
        stream=st.sampled_from(STREAMS),
        payload=st.binary(max_size=120),
        key=st.one_of(st.none(), st.sampled_from([b"a", b"b", b"c"])),
        priority=st.sampled_from(PRIOS),
        ttl=st.one_of(st.none(), st.integers(1, 3000)),
        delay=st.one_of(st.none(), st.integers(1, 3000)),
    )
    def append(self, stream, payload, key, priority, ttl, delay):
        if stream == "plain":
            delay = None  # the consumer model below does not model delays

        async def go():
            return await self.store.append(
                stream, payload, key=key, priority=priority, ttl_ms=ttl, deliver_after_ms=delay
            )

        off = self.run(go())
        assert off == len(self.records[stream])
        now = self.clock.now_ms()
        self.records[stream].append(
            M(off, payload, key, priority, now + ttl if ttl else None, now + delay if delay else None)
        )

    @rule(stream=st.sampled_from(STREAMS), n=st.integers(1, 20))
    def append_batch(self, stream, n):
        async def go():
            return await self.store.append_batch(stream, [b"batch%d" % i for i in range(n)])

        offs = self.run(go())
        base = len(self.records[stream])
        assert offs == list(range(base, base + n))
        self.records[stream].extend(M(base + i, b"batch%d" % i, None, "normal", None) for i in range(n))

    @precondition(lambda self: any(self.records.values()))
    @rule(data=st.data(), stream=st.sampled_from(STREAMS))
    def delete(self, data, stream):
        if not self.records[stream]:
            return
        off = data.draw(st.integers(0, len(self.records[stream]) - 1))

        async def go():
            fut = self.store.delete(stream, off)
            if fut is not None:
                await fut
            return fut is not None

        done = self.run(go())
        if off in self.deleted[stream]:
            assert not done  # already deleted (an expired record reclaimed by compaction is gone too)
        self.deleted[stream].add(off)

    @rule(ms=st.integers(0, 2000))
    def advance_clock(self, ms):
        async def go():  # timers fire inside the loop, as in the broker
            self.clock.advance(ms)

        self.run(go())

    @rule()
    def compact(self):
        self.run(self.store.compact())

    @rule()
    def reopen(self):
        self.run(self.store.stop())
        self.store = self._open()
        self.consumer = self.store.consumer("plain", "g", create=False)
        self.pending.clear()
        self.cursor = 0

    @rule(n=st.integers(1, 8))
    def fetch(self, n):
        got = [r.offset for r in self.consumer.fetch(n)]
        cands = [
            r.offset for r in self.visible("plain")
            if r.offset >= self.cursor and r.offset not in self.acked and r.offset not in self.pending
        ]  # fmt: skip
        assert got == cands[:n]
        self.pending.update(got)
        self.cursor = got[-1] + 1 if len(got) == n else len(self.records["plain"])

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def ack(self, data):
        off = data.draw(st.sampled_from(sorted(self.pending)))

        async def go():
            fut = self.consumer.ack(off)
            if fut is not None:
                await fut

        self.run(go())
        self.pending.discard(off)
        self.acked.add(off)

    # -- checks ----------------------------------------------------------------------------------

    @invariant()
    def reads_match_the_model(self):
        for stream in STREAMS:
            want = self.visible(stream)
            got = self.store.read(stream, 0, 10_000)
            assert [(r.offset, r.payload, r.key, r.priority) for r in got] == [
                (m.offset, m.payload, m.key, m.priority) for m in want
            ]
            start = len(self.records[stream]) // 2
            assert [r.offset for r in self.store.read(stream, start, 3)] == [
                m.offset for m in want if m.offset >= start
            ][:3]

    @invariant()
    def priority_reads_and_keys_match_the_model(self):
        for stream in STREAMS:
            want = self.visible(stream)
            order = {"critical": 0, "urgent": 1, "normal": 2}
            expect = [m.offset for m in sorted(want, key=lambda m: (order[m.priority], m.offset))]
            got, _pos = self.store.read_by_priority(stream, [0, 0, 0], 10_000)
            assert [r.offset for r in got] == expect
            first = max(0, len(self.records[stream]) - CAP) if stream == "capped" else 0
            for key in (b"a", b"b", b"c"):
                latest = [m for m in self.records[stream] if m.key == key and m.offset >= first]
                rec = self.store.latest_by_key(stream, key)
                if latest and latest[-1] in want:
                    assert rec is not None and rec.offset == latest[-1].offset
                else:
                    assert rec is None


StoreModel.TestCase.settings = settings(
    max_examples=150 if LONG else 25, stateful_step_count=40 if LONG else 25, deadline=None
)
TestStoreAgainstModel = StoreModel.TestCase
