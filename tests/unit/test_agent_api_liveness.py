"""Liveness of agent instances: the deadline heap gives the same answers as a scan of every instance.

No network and a fake clock; hypothesis drives heartbeats, closes, removals and sweeps.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from robustmq.agents.api import limits
from robustmq.agents.api.instances import Instance, InstanceTable

MISSES = limits.MISSED_HEARTBEATS_DOWN


class Origin:
    """A connection stand-in: close callbacks run on ``close()``."""

    def __init__(self) -> None:
        self.callbacks: list = []

    def add_close_callback(self, fn) -> None:
        self.callbacks.append(fn)

    def close(self) -> None:
        for fn in self.callbacks:
            fn()
        self.callbacks.clear()


def make_table(now: list[int]) -> tuple[InstanceTable, list[tuple[str, str]]]:
    downs: list[tuple[str, str]] = []
    table = InstanceTable(lambda inst, reason: downs.append((inst.instance_id, reason)), lambda: now[0])
    return table, downs


def test_an_instance_missing_three_intervals_is_down_once_and_forgotten_later():
    now = [1_000]
    table, downs = make_table(now)
    inst = Instance("a", "i1", 1, 100, now[0])
    table.add(inst)
    now[0] += 100 * MISSES  # exactly three intervals: still live
    table.sweep(now[0])
    assert inst.alive and downs == []
    now[0] += 1
    table.sweep(now[0])
    assert not inst.alive and downs == [("i1", "heartbeat")]
    table.sweep(now[0] + 10)
    assert downs == [("i1", "heartbeat")]
    assert table.of("a") == [inst]  # a down instance stays visible for a while
    now[0] += limits.DOWN_INSTANCE_KEEP_MS + 1
    table.sweep(now[0])
    assert table.of("a") == []
    assert list(table.agents()) == []


def test_heartbeats_keep_an_instance_live_and_a_sweep_only_rearms_it():
    now = [0]
    table, downs = make_table(now)
    inst = Instance("a", "i1", 1, 100, now[0])
    table.add(inst)
    for _ in range(50):
        now[0] += 90
        inst.last_heartbeat_ms = now[0]
        table.sweep(now[0])
    assert inst.alive and downs == []
    assert len(table._deadlines) == 1


def test_connection_close_is_down_at_once():
    now = [0]
    table, downs = make_table(now)
    origin = Origin()
    inst = Instance("a", "i1", 1, 1000, now[0], origin=origin)
    table.add(inst)
    origin.close()
    assert not inst.alive and downs == [("i1", "connection closed")]
    table.sweep(now[0] + 10_000)
    assert downs == [("i1", "connection closed")]


def test_a_sweep_looks_only_at_due_instances(monkeypatch):
    now = [0]
    table, downs = make_table(now)
    for n in range(10_000):
        table.add(Instance(f"a{n}", "i", 1, 5000 + n, now[0]))
    looked: list[str] = []
    real_expired = Instance.expired

    def counting(self: Instance, now_ms: int) -> bool:
        looked.append(self.agent)
        return real_expired(self, now_ms)

    monkeypatch.setattr(Instance, "expired", counting)
    table.sweep(50)
    assert looked == [] and downs == []
    table.sweep(5000 * MISSES + 3)  # due: the intervals 5000, 5001 and 5002 (three misses each)
    assert looked == ["a0"] and downs == [("i", "heartbeat")]


def test_superseded_entries_are_compacted():
    now = [0]
    table, _ = make_table(now)
    for n in range(5 * limits.DEADLINES_COMPACT_MIN):
        inst = Instance("a", f"i{n}", 1, 3_600_000, now[0])
        table.add(inst)
        table.remove("a", inst.instance_id)
    assert len(table._deadlines) <= 2 * limits.DEADLINES_COMPACT_MIN + 1


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 5), st.sampled_from([50, 100, 250])),
        st.tuples(st.just("beat"), st.integers(0, 40), st.just(0)),
        st.tuples(st.just("close"), st.integers(0, 40), st.just(0)),
        st.tuples(st.just("remove"), st.integers(0, 40), st.just(0)),
        st.tuples(st.just("tick"), st.integers(1, 400), st.just(0)),
        st.tuples(st.just("long"), st.just(0), st.just(0)),
    ),
    max_size=80,
)


def scan_sweep(instances: list[Instance], now_ms: int, downs: list) -> None:
    """The previous sweep: every instance, every time."""
    for inst in instances:
        if inst.alive and now_ms - inst.last_heartbeat_ms > inst.heartbeat_interval_ms * MISSES:
            inst.alive = False
            inst.down_ms = now_ms
            downs.append((inst.instance_id, "heartbeat"))


@settings(max_examples=150, deadline=None)
@given(ops)
def test_the_heap_agrees_with_a_full_scan(program):
    now = [10_000]
    table, downs = make_table(now)
    shadow: list[Instance] = []
    shadow_downs: list = []
    origins: list[Origin] = []
    made: list[Instance] = []
    for op, arg, interval in program:
        if op == "add":
            origin = Origin()
            inst = Instance(f"a{arg}", f"i{len(made)}", 1, interval, now[0], origin=origin)
            twin = Instance(inst.agent, inst.instance_id, 1, interval, now[0])
            table.add(inst)
            made.append(inst)
            shadow.append(twin)
            origins.append(origin)
        elif op == "beat" and arg < len(made):
            if made[arg].alive:
                made[arg].last_heartbeat_ms = shadow[arg].last_heartbeat_ms = now[0]
        elif op == "close" and arg < len(made):
            was_alive = made[arg].alive
            origins[arg].close()
            if was_alive and shadow[arg].alive:
                shadow[arg].alive = False
                shadow_downs.append((shadow[arg].instance_id, "connection closed"))
        elif op == "remove" and arg < len(made):
            if table.remove(made[arg].agent, made[arg].instance_id):
                shadow[arg].alive = False
        elif op in ("tick", "long"):
            now[0] += arg if op == "tick" else limits.DOWN_INSTANCE_KEEP_MS + 1
            table.sweep(now[0])
            scan_sweep(shadow, now[0], shadow_downs)
        assert [i.alive for i in made] == [i.alive for i in shadow]
        assert sorted(downs) == sorted(shadow_downs)  # within one sweep the order may differ
