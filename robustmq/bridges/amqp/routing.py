"""Exchanges and bindings: which queues a publish reaches, by RabbitMQ's rules, with no I/O.

Direct (exact key), fanout (every binding), topic (``*`` one word, ``#`` zero or more) and headers
(``x-match`` all/any) exchanges, the default exchange, exchange-to-exchange bindings and
alternate exchanges. Destinations are names: ``("q", name)`` for a queue, ``("e", name)`` for an
exchange. The listener and the persistence layer build on this; nothing here knows a socket.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")
PREDECLARED = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
    "amq.headers": "headers",
    "amq.match": "headers",
}
DEFAULT_EXCHANGE = ""
TOPIC_CACHE_MAX_KEYS = 4096

Destination = tuple[str, str]  # ("q", queue name) or ("e", exchange name)


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: words split on ``.``; ``*`` is one word, ``#`` zero or more."""
    return _match_words(pattern.split("."), 0, key.split("."), 0)


def _match_words(p: list[str], i: int, k: list[str], j: int) -> bool:
    while i < len(p):
        word = p[i]
        if word == "#":
            while i + 1 < len(p) and p[i + 1] == "#":
                i += 1
            if i + 1 == len(p):
                return True
            return any(_match_words(p, i + 1, k, n) for n in range(j, len(k) + 1))
        if j >= len(k) or (word != "*" and word != k[j]):
            return False
        i += 1
        j += 1
    return j == len(k)


def headers_match(binding_args: Mapping[str, Any], headers: Mapping[str, Any] | None) -> bool:
    """The headers exchange rule: ``x-match`` all (default) or any, over the non ``x-`` arguments.

    ``all-with-x`` and ``any-with-x`` also compare the ``x-`` arguments. A void (None) binding
    value asks only that the header be present.
    """
    mode = str(binding_args.get("x-match", "all"))
    with_x = mode.endswith("-with-x")
    wanted = [
        (k, v) for k, v in binding_args.items() if k != "x-match" and (with_x or not k.startswith("x-"))
    ]
    headers = headers or {}
    if mode.startswith("any"):
        return any(k in headers and (v is None or headers[k] == v) for k, v in wanted)
    return all(k in headers and (v is None or headers[k] == v) for k, v in wanted)


@dataclass(eq=False)
class Binding:
    source: str
    destination: Destination
    key: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> tuple[str, Destination, str, str]:
        return (self.source, self.destination, self.key, repr(sorted(self.arguments.items())))


@dataclass(eq=False)
class Exchange:
    name: str
    type: str
    durable: bool = False
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    bindings: dict[tuple, Binding] = field(default_factory=dict)
    _direct: dict[str, set[Destination]] = field(default_factory=dict)
    _topic_cache: dict[str, frozenset[Destination]] = field(default_factory=dict)

    @property
    def predeclared(self) -> bool:
        return self.name == DEFAULT_EXCHANGE or self.name in PREDECLARED

    @property
    def alternate(self) -> str | None:
        value = self.arguments.get("alternate-exchange")
        return str(value) if value else None

    def add(self, binding: Binding) -> bool:
        """Add a binding; False when the same one exists already (binding is idempotent)."""
        ident = binding.identity()
        if ident in self.bindings:
            return False
        self.bindings[ident] = binding
        if self.type == "direct":
            self._direct.setdefault(binding.key, set()).add(binding.destination)
        self._topic_cache.clear()
        return True

    def remove(self, binding: Binding) -> Binding | None:
        found = self.bindings.pop(binding.identity(), None)
        if found is not None:
            self._reindex()
        return found

    def remove_destination(self, destination: Destination) -> list[Binding]:
        gone = [b for b in self.bindings.values() if b.destination == destination]
        for b in gone:
            del self.bindings[b.identity()]
        if gone:
            self._reindex()
        return gone

    def _reindex(self) -> None:
        self._topic_cache.clear()
        if self.type == "direct":
            self._direct = {}
            for b in self.bindings.values():
                self._direct.setdefault(b.key, set()).add(b.destination)

    def route(self, routing_key: str, headers: Mapping[str, Any] | None) -> Iterable[Destination]:
        """The destinations this exchange's bindings give for one message."""
        kind = self.type
        if kind == "direct":
            return self._direct.get(routing_key, ())
        if kind == "fanout":
            return {b.destination for b in self.bindings.values()}
        if kind == "topic":
            hit = self._topic_cache.get(routing_key)
            if hit is None:
                hit = frozenset(
                    b.destination for b in self.bindings.values() if topic_matches(b.key, routing_key)
                )
                if len(self._topic_cache) >= TOPIC_CACHE_MAX_KEYS:
                    self._topic_cache.clear()
                self._topic_cache[routing_key] = hit
            return hit
        return {b.destination for b in self.bindings.values() if headers_match(b.arguments, headers)}


class Exchanges:
    """Every exchange of the vhost and the routing across them.

    ``queue_exists(name)`` lets the default exchange route to a queue by name.
    """

    def __init__(self, queue_exists: Callable[[str], bool]) -> None:
        self._queue_exists = queue_exists
        self.by_name: dict[str, Exchange] = {
            DEFAULT_EXCHANGE: Exchange(DEFAULT_EXCHANGE, "direct", durable=True)
        }
        for name, kind in PREDECLARED.items():
            self.by_name[name] = Exchange(name, kind, durable=True)

    def get(self, name: str) -> Exchange | None:
        return self.by_name.get(name)

    def declare(self, exchange: Exchange) -> Exchange:
        self.by_name[exchange.name] = exchange
        return exchange

    def delete(self, name: str) -> Exchange | None:
        """Remove the exchange, its own bindings and every binding that points at it."""
        ex = self.by_name.pop(name, None)
        if ex is not None:
            for other in self.by_name.values():
                other.remove_destination(("e", name))
        return ex

    def bindings_to(self, destination: Destination) -> list[Binding]:
        return [
            b for ex in self.by_name.values() for b in ex.bindings.values() if b.destination == destination
        ]

    def unbind_all(self, destination: Destination) -> list[Binding]:
        """Drop every binding that points at ``destination`` (a queue being deleted)."""
        gone: list[Binding] = []
        for ex in self.by_name.values():
            gone.extend(ex.remove_destination(destination))
        return gone

    def route(
        self, exchange: str, routing_key: str, headers: Mapping[str, Any] | None, skip_first: bool = False
    ) -> set[str]:
        """Names of the queues a message published to ``exchange`` reaches (each at most once).

        Follows exchange-to-exchange bindings (each exchange visited once) and falls back to an
        exchange's alternate exchange when it routed nowhere. ``skip_first`` starts from the
        bindings of ``exchange`` only (the default exchange's queue-by-name rule does not apply).
        """
        queues: set[str] = set()
        if exchange == DEFAULT_EXCHANGE and not skip_first:
            if self._queue_exists(routing_key):
                queues.add(routing_key)
            return queues
        self._walk(exchange, routing_key, headers, queues, set())
        return queues

    def _walk(
        self, name: str, key: str, headers: Mapping[str, Any] | None, queues: set[str], seen: set[str]
    ) -> bool:
        if name in seen:
            return False
        seen.add(name)
        ex = self.by_name.get(name)
        if ex is None:
            return False
        routed = False
        for kind, dest in ex.route(key, headers):
            if kind == "q":
                if self._queue_exists(dest):
                    queues.add(dest)
                    routed = True
            elif self._walk(dest, key, headers, queues, seen):
                routed = True
        if not routed and ex.alternate:
            routed = self._walk(ex.alternate, key, headers, queues, seen)
        return routed
