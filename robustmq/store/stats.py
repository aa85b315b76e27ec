"""Store counters: appends, bytes and commits on the loop, fsync latency on the fsync thread.

Counted per commit and per fdatasync, never per message, so the hot path pays nothing for them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# upper bounds of the fsync latency buckets, in seconds (the last bucket is +Inf)
FSYNC_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class FsyncTimings:
    """A latency histogram written by the fsync thread only; readers take a ``snapshot``."""

    __slots__ = ("sum_s", "buckets")

    def __init__(self) -> None:
        self.sum_s = 0.0
        self.buckets = [0] * (len(FSYNC_BUCKETS_S) + 1)

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(FSYNC_BUCKETS_S, seconds)] += 1
        self.sum_s += seconds

    def snapshot(self) -> FsyncSnapshot:
        buckets = list(self.buckets)
        return FsyncSnapshot(count=sum(buckets), sum_s=self.sum_s, buckets=buckets)


@dataclass(frozen=True)
class FsyncSnapshot:
    count: int
    sum_s: float
    buckets: list[int] = field(default_factory=list)  # per bucket of FSYNC_BUCKETS_S, then +Inf

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus-style ``(le, count)`` pairs, +Inf last."""
        out, running = [], 0
        for bound, n in zip((*map(str, FSYNC_BUCKETS_S), "+Inf"), self.buckets, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass(frozen=True)
class StoreStats:
    """What ``Store.stats()`` returns: figures since the store started."""

    appends: int
    appended_bytes: int
    commits: int
    fsync: FsyncSnapshot
