"""The router: one subject space shared by every front-end and by in-process services.

A publish from any protocol is delivered to every matching subscription, whatever protocol
owns it: plain subscriptions all get it, each queue group gives it to one member. Streams of
the store subscribe here too; their ``deliver`` returns an awaitable that completes when the
message is durable, which ``publish_durable`` gathers so a front-end can acknowledge after it.

Headers travel as a NATS header block (``NATS/1.0\\r\\nKey: Value\\r\\n\\r\\n``) or ``None``;
``robustmq.headers`` converts to and from key/value lists for the other protocols.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

from robustmq.subjects import NO_MATCH, MatchResult, SubjectTrie

# deliver(subject, reply, headers, payload) -> None, or an awaitable for a durable write
DeliverFn = Callable[[str, str | None, bytes | None, bytes], Awaitable[Any] | None]


class NoResponders(Exception):
    """An in-process request found nobody subscribed to its subject."""


class Subscription:
    """One interest in a subject pattern.

    In-process users pass a ``deliver`` callback; front-ends may subclass and define ``deliver``
    as a method instead. ``owner`` identifies the connection or service that holds it (used to
    honour NATS ``echo: false`` and to drop everything a connection held when it closes).
    """

    __slots__ = ("subject", "queue", "deliver", "owner", "__weakref__")

    def __init__(
        self, subject: str, deliver: DeliverFn | None = None, queue: str | None = None, owner: Any = None
    ) -> None:
        self.subject = subject
        self.queue = queue
        self.owner = owner
        if deliver is not None:
            self.deliver = deliver

    def deliver_many(self, subject: str, payloads: list[bytes]) -> None:
        """Several plain messages (no reply, no headers) on one subject, in order.

        Front-ends override this to encode a run of messages at once; the default delivers each.
        """
        deliver = self.deliver
        for payload in payloads:
            deliver(subject, None, None, payload)

    def deliver_plain(self, subject: str, payload: bytes) -> None:
        """One plain message (no reply, no headers); front-ends override it with a shorter path."""
        self.deliver(subject, None, None, payload)

    def __repr__(self) -> str:
        q = f" queue={self.queue}" if self.queue else ""
        return f"<Subscription {self.subject}{q}>"


class Router:
    def __init__(self) -> None:
        self.trie = SubjectTrie()
        self._inbox_prefix = "_INBOX." + os.urandom(8).hex() + "."
        self._inbox_seq = itertools.count(1)
        self._inbox_waiters: dict[str, asyncio.Future] = {}
        self._inbox_sub: Subscription | None = None
        self._rng = random.Random()
        # The client object whose publish is being delivered right now (None for in-process
        # publishes without one). Front-end clients offer client_id, protocol, user, name,
        # remote and add_close_callback(fn).
        self.current_origin: Any = None
        self._cache = self.trie.match_cache  # read directly on the publish hot path
        self._client_ids = itertools.count(1)

    def new_client_id(self) -> int:
        """A client id unique across every front-end of this broker (NATS, MQTT, ...)."""
        return next(self._client_ids)

    # -- subscriptions -------------------------------------------------------------------------

    def subscribe(
        self, subject: str, deliver: DeliverFn, queue: str | None = None, owner: Any = None
    ) -> Subscription:
        """Add an in-process subscription; ``subject`` must already be valid."""
        sub = Subscription(subject, deliver, queue, owner)
        self.trie.insert(sub)
        return sub

    def add(self, sub: Subscription) -> None:
        """Add a subscription object built by a front-end."""
        self.trie.insert(sub)

    def unsubscribe(self, sub: Subscription) -> bool:
        return self.trie.remove(sub)

    def has_interest(self, subject: str) -> bool:
        return bool(self.trie.match(subject))

    # -- publishing ----------------------------------------------------------------------------

    def publish(
        self,
        subject: str,
        payload: bytes,
        reply: str | None = None,
        headers: bytes | None = None,
        skip_owner: Any = None,
        origin: Any = None,
    ) -> int:
        """Deliver to every match; returns how many subscriptions received it.

        ``skip_owner``: subscriptions held by this owner are passed over (NATS ``echo: false``).
        ``origin``: the client that published (a connection object, see ``current_origin``).
        """
        result = self._cache.get(subject)
        if result is None:
            result = self.trie.match(subject)
        if result is NO_MATCH:
            return 0
        if result.guard is not None:
            return self._publish_guarded(result, subject, payload, reply, headers, skip_owner, origin)[0]
        previous = self.current_origin
        self.current_origin = origin
        count = 0
        try:
            for sub in result.plain:
                if skip_owner is not None and sub.owner is skip_owner:
                    continue
                sub.deliver(subject, reply, headers, payload)
                count += 1
            for members in result.queues:
                member = self._pick(members, skip_owner)
                if member is not None:
                    member.deliver(subject, reply, headers, payload)
                    count += 1
        finally:
            self.current_origin = previous
        return count

    def publish_durable(
        self,
        subject: str,
        payload: bytes,
        reply: str | None = None,
        headers: bytes | None = None,
        skip_owner: Any = None,
        origin: Any = None,
    ) -> tuple[int, list[Awaitable[Any]]]:
        """Like ``publish``, also returning the awaitables of every durable write it caused."""
        result = self.trie.match(subject)
        if not result:
            return 0, []
        if result.guard is not None:
            return self._publish_guarded(result, subject, payload, reply, headers, skip_owner, origin)
        pending: list[Awaitable[Any]] = []
        count = 0
        previous = self.current_origin
        self.current_origin = origin
        try:
            for sub in result.plain:
                if skip_owner is not None and sub.owner is skip_owner:
                    continue
                done = sub.deliver(subject, reply, headers, payload)
                if done is not None:
                    pending.append(done)
                count += 1
            for members in result.queues:
                member = self._pick(members, skip_owner)
                if member is not None:
                    done = member.deliver(subject, reply, headers, payload)
                    if done is not None:
                        pending.append(done)
                    count += 1
        finally:
            self.current_origin = previous
        return count, pending

    def publish_many(
        self, subject: str, payloads: list[bytes], skip_owner: Any = None, origin: Any = None
    ) -> int:
        """``publish`` for a run of plain messages (no reply, no headers) on one subject, in order.

        Matches once and hands each subscriber the whole run; every queue group still gives
        each message to one member. Returns how many subscriptions received the run.
        """
        result = self._cache.get(subject)
        if result is None:
            result = self.trie.match(subject)
        if result is NO_MATCH:
            return 0
        if result.shared_owner or result.guard is not None:
            count = 0
            for payload in payloads:
                count = max(count, self.publish(subject, payload, None, None, skip_owner, origin))
            return count
        previous = self.current_origin
        self.current_origin = origin
        count = 0
        try:
            for sub in result.plain:
                if skip_owner is not None and sub.owner is skip_owner:
                    continue
                sub.deliver_many(subject, payloads)
                count += 1
            for members in result.queues:
                delivered = False
                for payload in payloads:
                    member = self._pick(members, skip_owner)
                    if member is not None:
                        member.deliver(subject, None, None, payload)
                        delivered = True
                count += delivered
        finally:
            self.current_origin = previous
        return count

    def publish_batch(
        self,
        messages: list[Any],
        skip_owner: Any = None,
        origin: Any = None,
        on_error: Callable[[str], Any] | None = None,
    ) -> None:
        """``publish`` for plain messages (no reply, no headers) to varied subjects, in order.

        ``messages`` is flat: ``[subject, payload, subject, payload, ...]``. One loop, the match
        cache read inline, ``deliver_plain`` per subscriber. A delivery that raises is reported to
        ``on_error(subject)`` (or raised when there is none) and the rest of the batch goes on.
        """
        cache_get = self._cache.get
        match = self.trie.match
        previous = self.current_origin
        self.current_origin = origin
        it = iter(messages)
        try:
            for subject, payload in zip(it, it, strict=False):
                result = cache_get(subject)
                if result is None:
                    result = match(subject)
                try:
                    if result.one_by_one:
                        self.publish(subject, payload, None, None, skip_owner, origin)
                        continue
                    if skip_owner is None:
                        for sub in result.plain:
                            sub.deliver_plain(subject, payload)
                        continue
                    for sub in result.plain:
                        if sub.owner is not skip_owner:
                            sub.deliver_plain(subject, payload)
                except Exception:
                    if on_error is None:
                        raise
                    on_error(subject)
        finally:
            self.current_origin = previous

    def _publish_guarded(
        self,
        result: MatchResult,
        subject: str,
        payload: bytes,
        reply: str | None,
        headers: bytes | None,
        skip_owner: Any,
        origin: Any,
    ) -> tuple[int, list[Awaitable[Any]]]:
        """``publish`` for a subject whose match carries a guard (a protected mailbox's subject).

        The headers are stamped once for every receiver (the block the store keeps), and only the
        subscriptions the guard admits receive the message; a queue group picks among those.
        """
        guard = result.guard
        headers = guard.stamp(headers, origin)
        admits = guard.admits
        pending: list[Awaitable[Any]] = []
        count = 0
        previous = self.current_origin
        self.current_origin = origin
        try:
            for sub in result.plain:
                if (skip_owner is not None and sub.owner is skip_owner) or not admits(sub):
                    continue
                done = sub.deliver(subject, reply, headers, payload)
                if done is not None:
                    pending.append(done)
                count += 1
            for members in result.queues:
                eligible = [m for m in members if admits(m) and (skip_owner is None or m.owner is not skip_owner)]
                if eligible:
                    member = eligible[self._rng.randrange(len(eligible))] if len(eligible) > 1 else eligible[0]
                    done = member.deliver(subject, reply, headers, payload)
                    if done is not None:
                        pending.append(done)
                    count += 1
        finally:
            self.current_origin = previous
        return count, pending

    def _pick(self, members: tuple, skip_owner: Any) -> Any:
        if skip_owner is None or len(members) == 1:
            if skip_owner is not None and members[0].owner is skip_owner:
                return None
            return members[self._rng.randrange(len(members))] if len(members) > 1 else members[0]
        eligible = [m for m in members if m.owner is not skip_owner]
        return self._rng.choice(eligible) if eligible else None

    # -- in-process request/reply ----------------------------------------------------------------

    def new_inbox(self) -> str:
        return f"{self._inbox_prefix}{next(self._inbox_seq)}"

    async def request(
        self,
        subject: str,
        payload: bytes,
        headers: bytes | None = None,
        timeout: float = 5.0,
        origin: Any = None,
    ) -> tuple[bytes | None, bytes]:
        """Publish with a fresh reply subject and wait for the first reply: ``(headers, payload)``.

        ``origin``: the client the request is made for (None: the broker itself, trusted), so the
        services apply that client's rules, e.g. the control plane's caller.
        Raises ``NoResponders`` at once when nobody is subscribed, ``TimeoutError`` after ``timeout``.
        """
        if self._inbox_sub is None:
            self._inbox_sub = self.subscribe(self._inbox_prefix + "*", self._on_inbox_reply)
        inbox = self.new_inbox()
        fut = asyncio.get_running_loop().create_future()
        self._inbox_waiters[inbox] = fut
        try:
            if self.publish(subject, payload, inbox, headers, origin=origin) == 0:
                raise NoResponders(subject)
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._inbox_waiters.pop(inbox, None)

    def _on_inbox_reply(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        fut = self._inbox_waiters.pop(subject, None)
        if fut is not None and not fut.done():
            fut.set_result((headers, payload))
