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

from robustmq.isolation import DeliveryGuards, InboxClaims
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
        # set by ``isolate`` when users are configured (see robustmq/isolation.py)
        self.guards: DeliveryGuards | None = None

    def isolate(self, private_inboxes: bool = True) -> DeliveryGuards:
        """Turn on per-user delivery isolation: replies (unless ``private_inboxes`` is False, as with
        a shared token only), and whatever services guard, by subject. Idempotent."""
        if self.guards is None:
            inboxes = InboxClaims(self._inbox_prefix, self._cache) if private_inboxes else None
            # a source added or removed changes the answer for any subject: cached guards go
            self.guards = DeliveryGuards(inboxes, on_change=self._cache.clear)
            self.trie.guard_of = self.guards.guard_for  # the trie's setter clears its cache too
        return self.guards

    def new_client_id(self) -> int:
        """A client id unique across every front-end of this broker (NATS, MQTT, ...)."""
        return next(self._client_ids)

    # -- subscriptions -------------------------------------------------------------------------

    def subscribe(
        self, subject: str, deliver: DeliverFn, queue: str | None = None, owner: Any = None
    ) -> Subscription:
        """Add an in-process subscription; ``subject`` must already be valid."""
        sub = Subscription(subject, deliver, queue, owner)
        self.add(sub)
        return sub

    def add(self, sub: Subscription) -> None:
        """Add a subscription object built by a front-end."""
        if self.guards is not None and self.guards.inboxes is not None:
            self.guards.inboxes.added(sub)  # before the insert re-matches the subjects it covers
        self.trie.insert(sub)

    def unsubscribe(self, sub: Subscription) -> bool:
        removed = self.trie.remove(sub)
        if removed and self.guards is not None and self.guards.inboxes is not None:
            self.guards.inboxes.removed(sub)
        return removed

    def has_interest(self, subject: str) -> bool:
        return bool(self.trie.match(subject))

    # -- publishing ----------------------------------------------------------------------------
    #
    # Every publish goes through ``_deliver``, the one delivery loop: echo suppression
    # (``skip_owner``), the subject's isolation guard, queue-group picks and the durable writes a
    # delivery caused are its arguments. ``publish_many`` and ``publish_batch`` are the two bulk
    # entries: they hand plain runs to subscribers at once and send every other case to ``_deliver``.

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
        return self._deliver(result, subject, payload, reply, headers, skip_owner, origin, None)

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
        pending: list[Awaitable[Any]] = []
        count = self._deliver(result, subject, payload, reply, headers, skip_owner, origin, pending)
        return count, pending

    def publish_many(
        self, subject: str, payloads: list[bytes], skip_owner: Any = None, origin: Any = None
    ) -> int:
        """``publish`` for a run of plain messages (no reply, no headers) on one subject, in order.

        Matches once and hands each plain subscriber the whole run (``deliver_many``); every queue
        group still gives each message to one member. A guarded subject, or one connection holding
        several of the matches (whose interleaving must be kept), goes message by message.
        Returns how many subscriptions received the run.
        """
        result = self._cache.get(subject)
        if result is None:
            result = self.trie.match(subject)
        if result is NO_MATCH:
            return 0
        if result.shared_owner or result.stamper is not None:
            count = 0
            for payload in payloads:
                count = max(
                    count, self._deliver(result, subject, payload, None, None, skip_owner, origin, None)
                )
            return count
        previous = self.current_origin
        self.current_origin = origin
        count = 0
        try:
            for sub in result.plain:
                if skip_owner is None or sub.owner is not skip_owner:
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
        cache read inline, ``deliver_plain`` per plain subscriber; subjects with queue groups or a
        guard go through ``_deliver``. A delivery that raises is reported to ``on_error(subject)``
        (or raised when there is none) and the rest of the batch goes on.
        """
        cache_get = self._cache.get
        match = self.trie.match
        deliver = self._deliver
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
                        deliver(result, subject, payload, None, None, skip_owner, origin, None)
                    elif skip_owner is None:
                        for sub in result.plain:
                            sub.deliver_plain(subject, payload)
                    else:
                        for sub in result.plain:
                            if sub.owner is not skip_owner:
                                sub.deliver_plain(subject, payload)
                except Exception:
                    if on_error is None:
                        raise
                    on_error(subject)
        finally:
            self.current_origin = previous

    def _deliver(
        self,
        result: MatchResult,
        subject: str,
        payload: bytes,
        reply: str | None,
        headers: bytes | None,
        skip_owner: Any,
        origin: Any,
        pending: list[Awaitable[Any]] | None,
    ) -> int:
        """The delivery loop: one message to the subscriptions of ``result``; returns how many.

        ``result`` holds only the subscriptions entitled to the subject (the trie applied its
        isolation guard when it cached the match); a stamping guard rewrites the headers once for
        every receiver. When ``pending`` is a list, the awaitables of durable writes go into it.
        """
        if result.stamper is not None:
            headers = result.stamper.stamp(headers, origin)
        previous = self.current_origin
        self.current_origin = origin
        count = 0
        try:
            for sub in result.plain:
                if skip_owner is not None and sub.owner is skip_owner:
                    continue
                done = sub.deliver(subject, reply, headers, payload)
                if done is not None and pending is not None:
                    pending.append(done)
                count += 1
            for members in result.queues:
                member = self._pick(members, skip_owner)
                if member is not None:
                    done = member.deliver(subject, reply, headers, payload)
                    if done is not None and pending is not None:
                        pending.append(done)
                    count += 1
        finally:
            self.current_origin = previous
        return count

    def _pick(self, members: tuple, skip_owner: Any) -> Any:
        """One member of a queue group, at random, passing over ``skip_owner``'s; None if none is left."""
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
