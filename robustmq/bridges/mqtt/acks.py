"""Acknowledgements of a client's QoS 1/2 publishes, held until their durable writes are done.

A PUBACK or PUBREC must not promise more than the store has, and they go out in PUBLISH order.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from typing import TYPE_CHECKING, Any

from robustmq.bridges.mqtt import reason_codes as rc

if TYPE_CHECKING:
    from robustmq.bridges.mqtt.state import ConnectionState


class PublishAcks:
    """The acks waiting on durable writes, in PUBLISH order; ``waiting`` counts them."""

    __slots__ = ("_queue", "_state", "waiting")

    def __init__(self, state: ConnectionState) -> None:
        self._state = state
        # [first byte, packet id, reason code, writes outstanding, a write failed]
        self._queue: deque[list] = deque()
        self.waiting = 0

    def add(self, pending: list, first: int, pid: int, code: int) -> None:
        """Acknowledge once ``pending`` are all done and every earlier ack went out.

        No task per message: each durable write calls back when its commit is done, and the acks
        at the head of the queue whose writes are all done go out.
        """
        entry = [first, pid, code, len(pending), False]
        self._queue.append(entry)
        self.waiting += 1
        for done in pending:
            if getattr(done, "done", None) is not None and done.done():
                self._part_done(entry, done)
                continue
            add = getattr(done, "add_done_callback", None)
            if add is None:
                done = asyncio.ensure_future(done)
                add = done.add_done_callback
            add(functools.partial(self._part_done, entry))
        if not pending:
            self._release()

    def _part_done(self, entry: list, done: Any) -> None:
        try:
            failed = done.exception() is not None
        except asyncio.CancelledError:
            failed = True
        if failed:
            entry[4] = True
        entry[3] -= 1
        if entry[3] == 0:
            self._release()

    def _release(self) -> None:
        queue = self._queue
        state = self._state
        while queue and queue[0][3] <= 0:
            first, pid, code, _, failed = queue.popleft()
            self.waiting -= 1
            if state.closing:
                continue
            if not failed:
                state.write(state.ack_frame(first, pid, code))
            elif state.v5:
                state.write(state.ack_frame(first, pid, rc.IMPLEMENTATION_SPECIFIC_ERROR))
            else:
                state.close()  # 3.1.1 has no negative ack: the client resends on reconnect
