"""uvicorn's h11 protocol with a deadline and a cap for connections that have not sent a request head.

uvicorn has a keep-alive timeout but none for a request head that never completes, so half-open
sockets could pile up until every descriptor is gone and even ``/healthz`` fails.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from robustmq.admission import HandshakeGate, HandshakeTicket, peer_address


def guarded_h11_protocol(gate: HandshakeGate, head_timeout_s: float) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass bound to ``gate`` and the request-head deadline."""

    class GuardedH11Protocol(H11Protocol):
        """Closes a socket whose request head is not complete within the deadline.

        The first head must arrive within ``head_timeout_s`` of the accept and holds a ticket of
        ``gate`` until then; a later head on a keep-alive connection gets the same deadline from
        its first byte.
        """

        _ticket: HandshakeTicket | None = None
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._ticket = gate.admit(peer_address(transport))
            if self._ticket is None:  # too many sockets without a request head: refuse at once
                transport.abort()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
                self._arm()  # a head has begun and is not complete yet
            else:
                self._head_done()

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_done()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(head_timeout_s, self._head_timeout)

        def _head_done(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if self._ticket is not None:
                self._ticket.release()
                self._ticket = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.abort()

    return GuardedH11Protocol
