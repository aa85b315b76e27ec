"""Live agent instances: one per registering connection, with heartbeats and liveness.

An instance belongs to the connection that registered it (down as soon as it closes) and is down
too when it misses ``MISSED_HEARTBEATS_DOWN`` heartbeat intervals. Only live instances get work.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

from robustmq.agents.api import limits

SERVE_PREFIX = "$mq9.AI.INVOKE."


def serve_subject(name: str, instance_id: str) -> str:
    return f"{SERVE_PREFIX}{name}.{instance_id}"


def new_instance_id() -> str:
    return os.urandom(8).hex()


class Instance:
    """One running process of an agent; ``in_flight`` counts the tasks the broker gave it."""

    __slots__ = (
        "instance_id", "agent", "serve_subject", "origin", "user", "max_concurrency",
        "heartbeat_interval_ms", "registered_ms", "last_heartbeat_ms", "alive", "down_ms",
        "in_flight", "tasks", "processed", "failed", "reported_in_flight", "reported_processed",
        "endpoint_stats", "armed",
    )  # fmt: skip

    def __init__(
        self,
        agent: str,
        instance_id: str,
        max_concurrency: int,
        heartbeat_interval_ms: int,
        now_ms: int,
        origin: Any = None,
        user: str | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.agent = agent
        self.serve_subject = serve_subject(agent, instance_id)
        self.origin = origin
        self.user = user
        self.max_concurrency = max_concurrency
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.registered_ms = now_ms
        self.last_heartbeat_ms = now_ms
        self.alive = True
        self.down_ms = 0
        self.in_flight = 0
        self.tasks: set[str] = set()
        self.processed = 0
        self.failed = 0
        self.reported_in_flight: int | None = None
        self.reported_processed: int | None = None
        # skill -> [requests, errors, processing_ns, last_error] for $SRV.STATS
        self.endpoint_stats: dict[str, list] = {}
        self.armed = 0  # the deadline entry of this instance that counts (older ones are stale)

    @property
    def has_capacity(self) -> bool:
        return self.alive and self.in_flight < self.max_concurrency

    def status(self, now_ms: int) -> str:
        if not self.alive:
            return "down"
        if now_ms - self.last_heartbeat_ms > self.heartbeat_interval_ms * 1.5:
            return "degraded"  # a heartbeat is late, not yet missed three times
        return "healthy"

    def expired(self, now_ms: int) -> bool:
        return now_ms > self.expiry_ms

    @property
    def expiry_ms(self) -> int:
        """The last moment this instance is still live without another heartbeat."""
        return self.last_heartbeat_ms + self.heartbeat_interval_ms * limits.MISSED_HEARTBEATS_DOWN

    @property
    def client_id(self) -> int | None:
        return getattr(self.origin, "client_id", None)

    def count_call(self, skill: str, ok: bool, latency_ns: int, error: str = "") -> None:
        stats = self.endpoint_stats.get(skill)
        if stats is None:
            stats = self.endpoint_stats[skill] = [0, 0, 0, ""]
        stats[0] += 1
        stats[2] += latency_ns
        if not ok:
            stats[1] += 1
            stats[3] = error


class InstanceTable:
    """Every instance by agent name, and the connections they are bound to.

    ``on_down(instance)`` is called once when an instance goes down for any reason other than
    an explicit deregistration (the invoker re-dispatches or fails its tasks).

    Liveness is a heap of deadlines ``(due_ms, entry, instance)``: a live instance's entry is due
    when it would expire had no heartbeat come since it was armed; a heartbeat only moves
    ``last_heartbeat_ms``, and the entry is re-armed lazily when it comes due. A down instance's
    entry is due when it is to be forgotten. A sweep pops only what is due, so its cost does not
    grow with the number of live instances. Entries superseded by a later one are skipped.
    """

    def __init__(self, on_down: Callable[[Instance, str], None], clock_ms: Callable[[], int]) -> None:
        self._by_agent: dict[str, dict[str, Instance]] = {}
        # keyed by the connection object; an entry lives until that connection closes
        self._by_origin: dict[Any, list[Instance]] = {}
        self._on_down = on_down
        self._clock_ms = clock_ms
        self._deadlines: list[tuple[int, int, Instance]] = []
        self._entries = itertools.count(1)
        self._compact_at = limits.DEADLINES_COMPACT_MIN

    def _arm(self, inst: Instance, due_ms: int) -> None:
        entry = next(self._entries)
        inst.armed = entry
        heapq.heappush(self._deadlines, (due_ms, entry, inst))
        if len(self._deadlines) > self._compact_at:
            self._compact()

    def _compact(self) -> None:
        """Drop superseded entries (instances removed or re-armed before theirs came due)."""
        kept = [d for d in self._deadlines if d[1] == d[2].armed]
        heapq.heapify(kept)
        self._deadlines = kept
        self._compact_at = max(limits.DEADLINES_COMPACT_MIN, 2 * len(kept))

    def add(self, instance: Instance) -> None:
        self._by_agent.setdefault(instance.agent, {})[instance.instance_id] = instance
        self._arm(instance, instance.expiry_ms)
        origin = instance.origin
        if origin is None:
            return
        bound = self._by_origin.get(origin)
        if bound is None:
            bound = self._by_origin[origin] = []
            add_close_callback = getattr(origin, "add_close_callback", None)
            if add_close_callback is not None:
                add_close_callback(lambda: self._connection_closed(origin))
        bound.append(instance)

    def get(self, agent: str, instance_id: str) -> Instance | None:
        return self._by_agent.get(agent, {}).get(instance_id)

    def of(self, agent: str) -> list[Instance]:
        return list(self._by_agent.get(agent, {}).values())

    def live(self, agent: str) -> list[Instance]:
        instances = self._by_agent.get(agent)
        if not instances:
            return []
        return [i for i in instances.values() if i.alive]

    def has_live(self, agent: str) -> bool:
        instances = self._by_agent.get(agent)
        return bool(instances) and any(i.alive for i in instances.values())

    def least_loaded(self, agent: str, exclude: set[str] | None = None) -> Instance | None:
        """The live instance with the fewest tasks in flight and room for one more, or None."""
        instances = self._by_agent.get(agent)
        if not instances:
            return None
        best: Instance | None = None
        for inst in instances.values():
            if not inst.alive or inst.in_flight >= inst.max_concurrency:
                continue
            if exclude and inst.instance_id in exclude:
                continue
            if best is None or inst.in_flight < best.in_flight:
                best = inst
        return best

    def remove(self, agent: str, instance_id: str | None = None) -> list[Instance]:
        """Drop one instance, or every instance of ``agent``; returns what was removed."""
        instances = self._by_agent.get(agent)
        if not instances:
            return []
        if instance_id is None:
            removed = list(instances.values())
            del self._by_agent[agent]
        else:
            inst = instances.pop(instance_id, None)
            removed = [inst] if inst is not None else []
            if not instances:
                del self._by_agent[agent]
        for inst in removed:
            inst.alive = False
            inst.armed = 0  # nothing left to watch
            self._unbind(inst)
        return removed

    def mark_down(self, inst: Instance, now_ms: int, reason: str) -> None:
        if not inst.alive:
            return
        inst.alive = False
        inst.down_ms = now_ms
        self._arm(inst, now_ms + limits.DOWN_INSTANCE_KEEP_MS)
        self._unbind(inst)
        self._on_down(inst, reason)

    def sweep(self, now_ms: int) -> None:
        """Mark instances that missed their heartbeats down; forget long-down ones.

        Looks only at the deadlines that are due: a live instance that heartbeated since its entry
        was armed is re-armed at its new expiry.
        """
        while self._deadlines and self._deadlines[0][0] < now_ms:
            _, entry, inst = heapq.heappop(self._deadlines)  # (re-arming may compact the heap)
            if entry != inst.armed:
                continue  # superseded, or the instance was removed
            if inst.alive:
                if inst.expired(now_ms):
                    self.mark_down(inst, now_ms, "heartbeat")
                else:
                    self._arm(inst, inst.expiry_ms)
            elif now_ms - inst.down_ms > limits.DOWN_INSTANCE_KEEP_MS:
                inst.armed = 0
                self._forget(inst)
            else:
                self._arm(inst, inst.down_ms + limits.DOWN_INSTANCE_KEEP_MS)

    def _forget(self, inst: Instance) -> None:
        instances = self._by_agent.get(inst.agent)
        if instances is None or instances.get(inst.instance_id) is not inst:
            return
        del instances[inst.instance_id]
        if not instances:
            del self._by_agent[inst.agent]

    def agents(self) -> Iterator[str]:
        return iter(list(self._by_agent))

    def all_live(self) -> Iterator[Instance]:
        for instances in list(self._by_agent.values()):
            for inst in instances.values():
                if inst.alive:
                    yield inst

    def _unbind(self, inst: Instance) -> None:
        if inst.origin is None:
            return
        bound = self._by_origin.get(inst.origin)
        if bound is not None and inst in bound:
            bound.remove(inst)
        inst.origin = None

    def _connection_closed(self, origin: Any) -> None:
        bound = self._by_origin.pop(origin, None)
        if not bound:
            return
        now_ms = self._clock_ms()
        for inst in list(bound):
            inst.origin = None  # already unbound
            if inst.alive:
                inst.alive = False
                inst.down_ms = now_ms
                self._arm(inst, now_ms + limits.DOWN_INSTANCE_KEEP_MS)
                self._on_down(inst, "connection closed")
