"""Admission of connections that have not finished their handshake (CONNECT, an HTTP request head, an upgrade).

Every listener caps them in total and per remote address, so a crowd of half-open sockets from one
place cannot take every descriptor and starve the real clients that arrive after it.
"""

from __future__ import annotations


class HandshakeTicket:
    """One admitted connection's place in its gate; ``release`` is idempotent."""

    __slots__ = ("_gate", "_address")

    def __init__(self, gate: HandshakeGate, address: str) -> None:
        self._gate: HandshakeGate | None = gate
        self._address = address

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate._release(self._address)


class HandshakeGate:
    """Counts one listener's connections still in their handshake; ``admit`` says whether one more fits."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.pending = 0
        self.refused = 0  # sockets closed at once because a cap was reached
        self._by_address: dict[str, int] = {}

    def admit(self, address: str) -> HandshakeTicket | None:
        """A ticket to hold until the handshake is done or the socket closes; None: close it now."""
        count = self._by_address.get(address, 0)
        if self.pending >= self.max_total or count >= self.max_per_address:
            self.refused += 1
            return None
        self._by_address[address] = count + 1
        self.pending += 1
        return HandshakeTicket(self, address)

    def _release(self, address: str) -> None:
        self.pending -= 1
        count = self._by_address[address] - 1
        if count:
            self._by_address[address] = count
        else:
            del self._by_address[address]


def peer_address(transport: object) -> str:
    """The remote IP of a transport ("" for a socket without one, e.g. a Unix socket)."""
    get = getattr(transport, "get_extra_info", None)
    peer = get("peername") if get is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""
