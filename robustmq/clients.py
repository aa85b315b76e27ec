"""Server-wide client counters shared by the NATS and MQTT listeners (connz/varz figures).

Closed connections' traffic is kept in four totals; the open ones' own counters are added at read time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class ClientTraffic(Protocol):
    in_msgs: int
    in_bytes: int
    out_msgs: int
    out_bytes: int


class ClientCounters:
    """Connections accepted since start and their traffic (closed connections plus the open ones).

    A listener calls ``count_opened`` and ``count_closed`` and says which connections are open;
    a message costs nothing more than its connection's own counters.
    """

    def __init__(self) -> None:
        self.total_connections = 0
        # traffic of the connections closed so far (in_msgs, in_bytes, out_msgs, out_bytes)
        self._closed_traffic = [0, 0, 0, 0]

    def open_clients(self) -> Iterable[ClientTraffic]:
        raise NotImplementedError

    def count_opened(self) -> None:
        self.total_connections += 1

    def count_closed(self, conn: ClientTraffic) -> None:
        closed = self._closed_traffic
        closed[0] += conn.in_msgs
        closed[1] += conn.in_bytes
        closed[2] += conn.out_msgs
        closed[3] += conn.out_bytes

    def _traffic(self, field: int, name: str) -> int:
        return self._closed_traffic[field] + sum(getattr(c, name) for c in self.open_clients())

    @property
    def in_msgs(self) -> int:
        """Messages received since start (PUB/HPUB on NATS, PUBLISH on MQTT)."""
        return self._traffic(0, "in_msgs")

    @property
    def in_bytes(self) -> int:
        return self._traffic(1, "in_bytes")

    @property
    def out_msgs(self) -> int:
        return self._traffic(2, "out_msgs")

    @property
    def out_bytes(self) -> int:
        return self._traffic(3, "out_bytes")
