"""The mq9 service: answers ``$mq9.AI.*`` requests on the router, in process.

One subscription on ``$mq9.AI.>`` receives every command; each gets exactly one JSON reply
(when it has a reply subject). ``$mq9.AI.API.*`` and the routed agent subjects are left alone.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from robustmq.agents import inputs
from robustmq.agents.discovery import Embedder, default_embedder
from robustmq.agents.mq9 import errors, schemas
from robustmq.agents.mq9.delayed import DelayedSends
from robustmq.agents.mq9.errors import Mq9Error
from robustmq.agents.mq9.guard import MailboxGuards
from robustmq.agents.mq9.legacy import LegacyMailboxes
from robustmq.agents.mq9.mailboxes import (
    FETCH_DEFAULT_MAX_WAIT_MS,
    FETCH_DEFAULT_NUM_MSGS,
    FETCH_MAX_WAIT_MS,
    LEGACY_TO_CURRENT,
    QUERY_DEFAULT_LIMIT,
    QUERY_MAX_LIMIT,
    MailboxStore,
    record_json,
)
from robustmq.agents.mq9.registry import DISCOVER_DEFAULT_LIMIT, AgentRegistry, RegistryJournal, parse_card
from robustmq.agents.mq9.sender import stamp_sender
from robustmq.agents.mq9.subjects import SERVICE_SUBJECT, Command, Kind, parse
from robustmq.headers import decode_headers
from robustmq.store import Record, StoreError
from robustmq.subjects import is_valid_publish_subject

if TYPE_CHECKING:
    from robustmq.config import Mq9Settings
    from robustmq.router import Router
    from robustmq.store import Store

log = logging.getLogger("robustmq.mq9")

# Expired mailboxes are deleted with their messages this often (one past its TTL is already
# invisible to every command in between). RobustMQ sweeps every 60 s.
SWEEP_INTERVAL_S = 5.0
LEGACY_CLIENT_NAME = "robustmq-mq9-python"
# semantic DISCOVER embeds at most this many new cards inline; more go to a worker thread
INLINE_EMBED_MAX = 64

_OK = b'{"error":""}'
_LEGACY_ONLY = frozenset({Kind.LEGACY_SEND, Kind.LEGACY_LIST, Kind.LEGACY_DELETE})
_READS_AFTER_SENDS = frozenset(
    {Kind.MSG_FETCH, Kind.MSG_QUERY, Kind.MSG_DELETE, Kind.LEGACY_LIST, Kind.LEGACY_DELETE}
)
_EMPTY_MESSAGES = b'{"error":"","messages":[]}'


def _error_body(text: str) -> bytes:
    try:
        return orjson.dumps({"error": text})
    except TypeError:  # a text quoting what a client sent that JSON cannot carry: never silence
        return orjson.dumps({"error": inputs.shown(text)})


class Reply(Protocol):
    """Where one command's answer goes: its body, or the error instead of it."""

    def send(self, body: bytes) -> None: ...

    def fail(self, error: Mq9Error) -> None: ...


class SubjectReply:
    """The answer published on a request's reply subject: an error becomes its wire text."""

    __slots__ = ("router", "subject")

    def __init__(self, router: Router, subject: str) -> None:
        self.router = router
        self.subject = subject

    def send(self, body: bytes) -> None:
        self.router.publish(self.subject, body)

    def fail(self, error: Mq9Error) -> None:
        self.router.publish(self.subject, _error_body(str(error)))


class CallReply:
    """The answer to an in-process call: the future gets the body, or the typed error itself."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[bytes]) -> None:
        self.future = future

    def send(self, body: bytes) -> None:
        if not self.future.done():  # the caller may have given up waiting
            self.future.set_result(body)

    def fail(self, error: Mq9Error) -> None:
        if not self.future.done():
            self.future.set_exception(error)


def _seconds(text: str) -> int | None:
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


class SendOptions:
    """The ``mq9-*`` headers of a SEND (names matched case-insensitively, values trimmed)."""

    __slots__ = ("priority", "key", "ttl", "delay", "tags")

    def __init__(self, block: bytes | None) -> None:
        self.priority = "normal"
        self.key: str | None = None
        self.ttl: int | None = None
        self.delay: int | None = None
        self.tags: tuple[str, ...] = ()
        if not block or b"mq9-" not in block.lower():
            return
        for name, value in decode_headers(block):
            name = name.lower()
            if name == "mq9-priority":
                value = value.strip()
                self.priority = value if value in ("critical", "urgent", "normal") else "normal"
            elif name == "mq9-key":
                self.key = value.strip()
            elif name == "mq9-ttl":
                self.ttl = _seconds(value)
            elif name == "mq9-delay":
                self.delay = _seconds(value)
            elif name == "mq9-tags":
                self.tags = tuple(t.strip() for t in value.split(",") if t.strip())


class AgentOwners(Protocol):
    """Who owns agents and their mailboxes: the agent API's one registry, which plugs itself in
    (``Mq9Service.owners``) because it is built after mq9 and links back to it."""

    def mailbox_owner(self, address: str) -> str | None: ...

    def owner_of(self, name: str) -> str | None: ...

    def bind_agent(self, name: str, owner: str, card: dict[str, Any] | None, mailbox: str | None) -> None: ...

    def unbind_agent(self, name: str) -> None: ...


class Mq9Service:
    """The broker component ``mq9``: mailboxes and the agent registry on the store."""

    name = "mq9"

    def __init__(
        self,
        router: Router,
        store: Store,
        settings: Mq9Settings,
        *,
        auth_enabled: bool = False,
        embedder: Embedder | None = None,
    ) -> None:
        self.router = router
        self.store = store
        self.default_ttl_s: int = settings.mailbox_default_ttl_s
        self.max_body_bytes: int = settings.max_body_bytes
        # authentication on: mailboxes of agents belong to their owners, senders are stamped
        self.auth_enabled = auth_enabled
        # the agent API, once it plugs in: without it no agent or mailbox has an owner
        self.owners: AgentOwners | None = None
        self.mailboxes = MailboxStore(self.store)
        self.delayed = DelayedSends(self.store, self._release)
        self.embedder = embedder or default_embedder()
        self.registry: AgentRegistry | None = None
        self.legacy = LegacyMailboxes(self)
        # authentication on: live deliveries of mailbox subjects are stamped and, for an agent's
        # mailbox, reach its owner only (the router asks once per subject, see guard.py)
        self.guards = MailboxGuards(self.mailbox_owner, lambda a: self.mailboxes.get(a) is not None)
        self._legacy_origins: weakref.WeakSet = weakref.WeakSet()
        self._unacked_sends: dict[str, Any] = {}
        self._reply_batch: list[tuple[Any, Reply, bytes | None]] = []
        self._subscription: Any = None
        self._tasks: set[asyncio.Future] = set()
        self._sweeper: asyncio.Task | None = None
        self._model_loader: asyncio.Future | None = None
        self._refresher: asyncio.Future | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.registry = AgentRegistry(RegistryJournal(self.store), self.embedder)
        self.registry.load()
        if self.registry.index.vectors.pending_count():
            self._refresh_vectors_soon()
        for box in self.mailboxes.open():
            self.store.set_ingest(box.address, self._ingest)
        self.delayed.open(lambda rec: SendOptions(rec.headers).delay or 0)
        self._subscription = self.router.subscribe(SERVICE_SUBJECT, self._on_request, owner=self)
        if self.auth_enabled:
            self.router.isolate().add_source(self.guards.guard_for)
        self.legacy.start()
        self._sweeper = asyncio.ensure_future(self._sweep_forever())

    async def stop(self) -> None:
        if self._subscription is not None:
            self.router.unsubscribe(self._subscription)
            self._subscription = None
        if self.router.guards is not None:
            self.router.guards.remove_source(self.guards.guard_for)
        self.legacy.stop()
        self.delayed.close()
        for task in (self._sweeper, self._refresher, *self._tasks):
            if task is not None:
                task.cancel()

    # -- dispatch --------------------------------------------------------------------------------

    def _on_request(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        command = parse(subject)
        if command is None:
            return
        answer = SubjectReply(self.router, reply) if reply else None
        self._accept(command, subject, answer, headers, payload, self.router.current_origin)

    def call(
        self, subject: str, payload: bytes = b"", headers: bytes | None = None, origin: Any = None
    ) -> asyncio.Future[bytes]:
        """Run the command ``subject`` (``$mq9.AI.MSG.SEND.<address>``, ...) in process for
        ``origin`` (None: trusted): the same handling as over NATS, but the future gets the reply
        body or raises the ``Mq9Error`` with its kind, so the caller never parses an error text."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        command = parse(subject)
        if command is None:
            future.set_exception(errors.UNRECOGNIZED_SUBJECT.error(subject=subject))
        else:
            self._accept(command, subject, CallReply(future), headers, payload, origin)
        return future

    def _accept(
        self,
        command: Command,
        subject: str,
        reply: Reply | None,
        headers: bytes | None,
        payload: bytes,
        origin: Any,
    ) -> None:
        if not subject.isascii() and not inputs.subject_is_text(subject):
            if reply is not None:
                reply.fail(errors.SUBJECT_NOT_UTF8.error(subject=inputs.shown(subject)))
            return
        kind = command.kind
        if kind is Kind.MSG_SEND:  # the hot path: no legacy shape, no read-after-write wait
            self._handle(command, subject, reply, headers, payload, False, origin)
            return
        legacy = kind in _LEGACY_ONLY or self._is_legacy(origin)
        if kind in _READS_AFTER_SENDS:
            unacked = self._unacked_sends.get(command.address)
            if unacked is not None and not unacked.done():
                # read-your-writes for sends that had no reply to wait for (plain publishes)
                unacked.add_done_callback(
                    lambda _a: self._handle(command, subject, reply, headers, payload, legacy, origin)
                )
                return
        self._handle(command, subject, reply, headers, payload, legacy, origin)

    def _handle(
        self,
        command: Command,
        subject: str,
        reply: Reply | None,
        headers: bytes | None,
        payload: bytes,
        legacy: bool,
        origin: Any,
    ) -> None:
        """Run one command for ``origin`` (the requesting client, None in process) and reply."""
        kind = command.kind
        try:
            if len(payload) > self.max_body_bytes:
                raise errors.BODY_TOO_LARGE.error(size=len(payload), max=self.max_body_bytes)
            if kind is Kind.MSG_SEND:
                if self.auth_enabled:
                    headers = stamp_sender(headers, getattr(origin, "user", None))
                body = self._send(command.address, reply, headers, payload)
            else:
                body = self._dispatch(command, subject, reply, headers, payload, legacy, origin)
        except Mq9Error as exc:
            error = exc
        except StoreError as exc:
            error = errors.of_store_error(exc)
        except Exception as exc:  # a bug must not take the connection down: answer and log
            log.exception("mq9 %s failed", kind.value)
            error = errors.INTERNAL.error(reason=type(exc).__name__)
        else:
            if body is not None and reply is not None:
                reply.send(body)
            return
        if reply is not None:
            reply.fail(error)

    def _dispatch(
        self,
        command: Command,
        subject: str,
        reply: Reply | None,
        headers: bytes | None,
        payload: bytes,
        legacy: bool,
        origin: Any,
    ) -> bytes | None:
        kind = command.kind
        if kind is Kind.MSG_FETCH:
            self._check_reader(command.address, origin)
            return self._fetch(command.address, reply, payload)
        if kind is Kind.MSG_ACK:
            return self._ack(reply, payload, origin)
        if kind is Kind.MSG_QUERY:
            self._check_reader(command.address, origin)
            return self._query(command.address, payload)
        if kind is Kind.MSG_DELETE:
            self._check_reader(command.address, origin)
        if kind is Kind.MSG_DELETE or kind is Kind.LEGACY_DELETE:
            return self._delete(reply, command.address, command.msg_id, legacy)
        if kind is Kind.MAILBOX_CREATE:
            return self._create(payload, legacy, origin)
        if kind is Kind.AGENT_REGISTER:
            return self._register(reply, payload, legacy, origin)
        if kind is Kind.AGENT_UNREGISTER or kind is Kind.AGENT_REPORT:
            request = schemas.decode(kind.value, payload)
            if not request["name"]:
                raise errors.AGENT_NAME_EMPTY.error()
            self._check_agent_owner(request["name"], origin)
            assert self.registry is not None
            if kind is Kind.AGENT_UNREGISTER:
                durable = self.registry.unregister(request["name"])
                self._unbind_agent(request["name"], origin)
            else:
                durable = self.registry.report(request["name"], request.get("report_info"))
            return self._after(durable, reply, self._ok(legacy))
        if kind is Kind.AGENT_DISCOVER:
            return self._discover(reply, payload, legacy)
        if kind is Kind.LEGACY_SEND:
            if self.auth_enabled:
                headers = stamp_sender(headers, getattr(origin, "user", None))
            self._legacy_send(command.address, command.priority, subject, headers, payload)
            return None
        if kind is Kind.LEGACY_LIST:
            return self.legacy.list(command.address)
        raise errors.UNRECOGNIZED_SUBJECT.error(subject=subject)

    def _check_reader(self, address: str, origin: Any) -> None:
        """With authentication on, only the owner of the agent whose mailbox this is may read it.

        In-process callers (no origin: the control plane, which authenticates its own callers,
        and the broker's services) are trusted. A mailbox no agent claims is open to every user.
        """
        if not self.auth_enabled or origin is None:
            return
        owner = self.mailbox_owner(address)
        if owner is not None and getattr(origin, "user", None) != owner:
            raise errors.MAILBOX_FORBIDDEN.error(addr=address)

    def mailbox_owner(self, address: str) -> str | None:
        """The user of the agent whose mailbox ``address`` is (None: unclaimed, or no agent API)."""
        owners = self.owners
        return owners.mailbox_owner(address) if owners is not None else None

    def _mailbox_changed(self, address: str) -> None:
        if self.auth_enabled:
            MailboxGuards.changed(self.router.trie, address)

    def _check_agent_owner(self, name: str, origin: Any) -> None:
        """With authentication on, an agent bound to a user (by its first registration, here or
        through the agent API) is registered, unregistered and reported on only by that user;
        in-process callers are trusted."""
        if not self.auth_enabled or origin is None:
            return
        owner = self.owners.owner_of(name) if self.owners is not None else None
        if owner is not None and getattr(origin, "user", None) != owner:
            raise errors.AGENT_FORBIDDEN.error(name=name)

    def _is_legacy(self, origin: Any) -> bool:
        if origin is None:
            return False
        if getattr(origin, "name", None) == LEGACY_CLIENT_NAME:
            return True
        try:
            return origin in self._legacy_origins
        except TypeError:
            return False

    def _mark_legacy(self, origin: Any) -> None:
        if origin is not None:
            try:
                self._legacy_origins.add(origin)
            except TypeError:
                pass

    @staticmethod
    def _ok(legacy: bool) -> bytes:
        return b"{}" if legacy else _OK

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _after(self, durable: Any, reply: Reply | None, body: bytes) -> bytes | None:
        """``body`` now when nothing is pending, else once ``durable`` (an ack or future) is done."""
        if durable is None:
            return body
        self._reply_when_durable(durable, reply, body)
        return None

    def _reply_when_durable(self, ack: Any, reply: Reply | None, body: bytes | None) -> None:
        """Reply once the store has committed ``ack`` (``body`` None: the SEND reply with its offset).

        Replies of one loop tick wait together on the tick's last write: the committer commits
        every pending write at once, so when the last is done the earlier ones are too.
        """
        if reply is None:
            return
        self._reply_batch.append((ack, reply, body))
        if len(self._reply_batch) == 1:
            assert self._loop is not None
            self._loop.call_soon(self._seal_reply_batch)

    def _seal_reply_batch(self) -> None:
        batch, self._reply_batch = self._reply_batch, []
        if batch:
            batch[-1][0].add_done_callback(lambda _last: self._send_replies(batch))

    def _send_replies(self, batch: list[tuple[Any, Reply, bytes | None]]) -> None:
        for ack, reply, body in batch:
            if not ack.done():  # not expected (see above); wait for this one on its own
                ack.add_done_callback(lambda a, r=reply, b=body: self._send_replies([(a, r, b)]))
                continue
            try:
                exc = ack.exception()
            except asyncio.CancelledError:  # the write was abandoned (shutdown)
                continue
            if exc is not None:
                reply.fail(errors.INTERNAL.error(reason=exc))
            elif body is None:
                reply.send(b'{"error":"","msg_id":%d}' % ack.offset)
            else:
                reply.send(body)

    # -- MAILBOX.CREATE --------------------------------------------------------------------------

    def _create(self, payload: bytes, legacy: bool, origin: Any) -> bytes:
        request = schemas.decode("MAILBOX.CREATE", payload)
        if "public" in request:
            legacy = True
            self._mark_legacy(origin)
        ttl = request.get("ttl")
        name = request.get("name")
        if legacy and not request.get("public"):
            name = None  # the legacy SDK names only public mailboxes
        box = self.mailboxes.create(
            name,
            self.default_ttl_s if ttl is None else ttl,
            request.get("desc") or "",
            bool(request.get("public")),
        )
        self.store.set_ingest(box.address, self._ingest)
        self._mailbox_changed(box.address)
        if legacy:
            return orjson.dumps({"mail_id": box.address, "is_new": True})
        return orjson.dumps({"error": "", "mail_address": box.address})

    def _ingest(self, subject: str, headers: bytes | None, payload: bytes) -> dict[str, Any] | None:
        """A publish on a mailbox's address from any protocol: its ``mq9-*`` headers apply."""
        if self.mailboxes.get(subject) is None:
            return None
        stamped = self.auth_enabled
        if stamped:
            headers = stamp_sender(headers, getattr(self.router.current_origin, "user", None))
        options = SendOptions(headers)
        if options.delay:
            self.delayed.hold(subject, payload, headers, options.delay)
            return None
        kwargs: dict[str, Any] = {"priority": options.priority, "tags": options.tags}
        if stamped:
            kwargs["headers"] = headers
        if options.key is not None:
            kwargs["key"] = options.key
        if options.ttl:
            kwargs["ttl_ms"] = options.ttl * 1000
        return kwargs

    # -- MSG.SEND --------------------------------------------------------------------------------

    def _send(self, address: str, reply: Reply | None, headers: bytes | None, payload: bytes) -> bytes | None:
        mailboxes = self.mailboxes
        if mailboxes.get(address) is None:
            raise errors.MAILBOX_MISSING.error(addr=address)
        if not headers:
            ack = self.store.append(address, payload)
        else:
            options = SendOptions(headers)
            if options.delay:
                ack = self.delayed.hold(address, payload, headers, options.delay)
                self._reply_when_durable(ack, reply, b'{"error":"","msg_id":-1}')
                return None
            ack = mailboxes.append(
                address,
                payload,
                headers=headers,
                priority=options.priority,
                key=options.key,
                tags=options.tags,
                ttl_s=options.ttl,
            )
        if self.legacy.watching:
            self.legacy.on_stored(address, ack)
        if reply is not None:
            self._reply_when_durable(ack, reply, None)
        else:
            self._track_unacked(address, ack)
        return None

    def _release(self, held: Record) -> None:
        """A delayed message is due: it enters its mailbox now and gets its msg_id."""
        address = held.subject
        if self.mailboxes.get(address) is None:
            return
        options = SendOptions(held.headers)
        ack = self.mailboxes.append(
            address,
            held.payload,
            headers=held.headers,
            priority=options.priority,
            key=options.key,
            tags=options.tags,
            ttl_s=options.ttl,
        )
        if self.legacy.watching:
            self.legacy.on_stored(address, ack)

    def _legacy_send(
        self, address: str, priority: str, subject: str, headers: bytes | None, payload: bytes
    ) -> None:
        """A legacy publish: stored when the mailbox exists, silently dropped otherwise."""
        if self.mailboxes.get(address) is None:
            return
        ack = self.mailboxes.append(
            address, payload, headers=headers, subject=subject, priority=LEGACY_TO_CURRENT[priority]
        )
        self._track_unacked(address, ack)
        if self.legacy.watching:
            self.legacy.on_stored(address, ack)

    def _track_unacked(self, address: str, ack: Any) -> None:
        """Remember the newest send of ``address`` nobody waits for, until it is committed."""
        unacked = self._unacked_sends
        unacked[address] = ack

        def done(a: Any) -> None:
            if unacked.get(address) is a:
                del unacked[address]

        ack.add_done_callback(done)

    # -- MSG.FETCH / ACK / QUERY / DELETE ----------------------------------------------------------

    def _fetch(self, address: str, reply: Reply | None, payload: bytes) -> bytes | None:
        request = schemas.decode("MSG.FETCH", payload)
        mailboxes = self.mailboxes
        if mailboxes.get(address) is None:
            raise errors.MAILBOX_MISSING.error(addr=address)
        config = request.get("config") or {}
        num = config.get("num_msgs")
        num = FETCH_DEFAULT_NUM_MSGS if num is None else num
        wait_ms = config.get("max_wait_ms")
        wait_ms = FETCH_DEFAULT_MAX_WAIT_MS if wait_ms is None else min(wait_ms, FETCH_MAX_WAIT_MS)
        position = mailboxes.fetch_position(
            address,
            request.get("group_name"),
            request.get("deliver") or "latest",
            request.get("from_time") or 0,
            request.get("from_id") or 0,
            bool(request.get("force_deliver")),
        )
        records = mailboxes.collect(address, position, num)
        if records or wait_ms <= 0 or num <= 0:
            return _messages_reply(records)
        if reply is not None:
            self._spawn(self._fetch_later(address, position, num, wait_ms / 1000.0, reply))
        return None

    async def _fetch_later(self, address: str, position: int, num: int, wait_s: float, reply: Reply) -> None:
        """``max_wait_ms``: answer as soon as a message arrives, or empty at the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        records: list[Record] = []
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                end = self.store.end_offset(address)
                await self.store.wait_for_data(address, end, remaining)
                if self.mailboxes.get(address) is None:
                    break
                records = self.mailboxes.collect(address, position, num)
                if records:
                    break
        except StoreError:
            records = []
        reply.send(_messages_reply(records))

    def _ack(self, reply: Reply | None, payload: bytes, origin: Any) -> bytes | None:
        request = schemas.decode("MSG.ACK", payload)
        address = request["mail_address"]
        self._check_reader(address, origin)
        if self.mailboxes.get(address) is None:
            raise errors.MAILBOX_NOT_FOUND.error(addr=address)
        durable = self.mailboxes.commit_group(address, request["group_name"], request["msg_id"] + 1)
        return self._after(durable, reply, _OK)

    def _query(self, address: str, payload: bytes) -> bytes:
        request = schemas.decode("MSG.QUERY", payload)
        self.mailboxes.require(address)
        limit = request.get("limit")
        limit = QUERY_DEFAULT_LIMIT if limit is None else min(limit, QUERY_MAX_LIMIT)
        key = request.get("key")
        tags = request.get("tags")
        since = request.get("since")
        if key is None and tags is not None and not tags:
            since = 0  # an empty tag list behaves like since: 0
        records = self.mailboxes.query(address, key, tags or None, since, limit)
        return _messages_reply(records)

    def _delete(self, reply: Reply | None, address: str, raw_id: str, legacy: bool) -> bytes | None:
        if not raw_id.isdigit():
            raise errors.INVALID_MSG_ID.error(value=raw_id)
        durable = None
        if self.mailboxes.get(address) is not None:
            durable = self.mailboxes.delete(address, int(raw_id))
        return self._after(durable, reply, b'{"deleted":true}' if legacy else b'{"error":"","deleted":true}')

    # -- AGENT.* ---------------------------------------------------------------------------------

    def _register(self, reply: Reply | None, payload: bytes, legacy: bool, origin: Any) -> bytes | None:
        assert self.registry is not None
        if not payload.strip():
            raise errors.PAYLOAD_EMPTY.error()
        value = schemas.parse_json("AGENT.REGISTER", payload)
        if schemas.is_agent_card(value):
            if not value["name"]:
                raise errors.AGENT_NAME_EMPTY.error()
            self._check_agent_owner(value["name"], origin)
            mailbox = self._check_card_mailbox(value, origin)
            durable = self.registry.register(value["name"], orjson.dumps(value).decode(), value)
            self._bind_agent(value["name"], value, mailbox, origin)
        else:
            problem = schemas.wrapped_registration_problem(value)
            if problem is not None:
                raise errors.invalid_payload("AGENT.REGISTER", problem)
            if not value["name"]:
                raise errors.AGENT_NAME_EMPTY.error()
            if not value["payload"]:
                raise errors.AGENT_INFO_EMPTY.error()
            if inputs.too_deep(value["payload"]):  # a card inside a string: the same limit
                raise errors.NESTED_TOO_DEEPLY.error(max=inputs.MAX_NESTING_DEPTH)
            self._check_agent_owner(value["name"], origin)
            card = parse_card(value["payload"])
            mailbox = self._check_card_mailbox(card, origin)
            durable = self.registry.register(value["name"], value["payload"], card)
            self._bind_agent(value["name"], card, mailbox, origin)
        self._refresh_vectors_soon()
        return self._after(durable, reply, self._ok(legacy))

    def _check_card_mailbox(self, card: dict[str, Any] | None, origin: Any) -> str | None:
        """The mailbox a card names (``mailbox``), refused when another user's agent claims it."""
        mailbox = (card or {}).get("mailbox")
        if not isinstance(mailbox, str) or not is_valid_publish_subject(mailbox):
            return None
        if self.auth_enabled and origin is not None:
            owner = self.mailbox_owner(mailbox)
            if owner is not None and getattr(origin, "user", None) != owner:
                raise errors.MAILBOX_FORBIDDEN.error(addr=mailbox)
        return mailbox

    def _bind_agent(self, name: str, card: dict[str, Any] | None, mailbox: str | None, origin: Any) -> None:
        """With authentication on, a client's registration binds the agent (and the mailbox its
        card names) to the client's user in the one registry the agent API keeps."""
        user = getattr(origin, "user", None) if self.auth_enabled else None
        if user is not None and self.owners is not None:
            self.owners.bind_agent(name, user, card, mailbox)

    def _unbind_agent(self, name: str, origin: Any) -> None:
        if self.auth_enabled and origin is not None and self.owners is not None:
            self.owners.unbind_agent(name)

    def _discover(self, reply: Reply | None, payload: bytes, legacy: bool) -> bytes | None:
        assert self.registry is not None
        request = schemas.decode("AGENT.DISCOVER", payload)
        semantic = request.get("semantic") or ""
        text = request.get("text") or ""
        limit = request.get("limit")
        limit = DISCOVER_DEFAULT_LIMIT if limit is None else limit
        page = max(request.get("page") or 1, 1)
        if not semantic and not text:
            agents = [{"name": e.name, "agent_info": e.agent_info} for e in self.registry.listing()]
            return _agents_reply(agents, legacy)
        if semantic:
            embedding = self._refresher is not None and not self._refresher.done()
            if (
                embedding
                or self.registry.index.vectors.pending_count() > INLINE_EMBED_MAX
                or not self._model_ready()
            ):
                if reply is not None:
                    self._spawn(self._discover_later(semantic, limit, page, reply, legacy))
                return None
            hits = self.registry.search_semantic(semantic, limit, page)
        else:
            hits = self.registry.search_text(text, limit, page)
        return _agents_reply([_search_item(e) for e, _ in hits], legacy)

    async def _discover_later(self, semantic: str, limit: int, page: int, reply: Reply, legacy: bool) -> None:
        assert self.registry is not None
        try:
            await self.refresh_vectors()
            hits = self.registry.search_semantic(semantic, limit, page)
        except Exception as exc:  # e.g. the embedding model could not be loaded
            log.exception("mq9 semantic DISCOVER failed")
            reply.fail(errors.INTERNAL.error(reason=type(exc).__name__))
            return
        reply.send(_agents_reply([_search_item(e) for e, _ in hits], legacy))

    def _model_ready(self) -> bool:
        """Is the embedding model loaded? The first question starts loading it on a worker thread.

        The model (and numpy) load only once a card is to be embedded or a semantic query
        arrives, so a broker nobody asks to find agents stays small; keyword search never needs it.
        """
        if self._model_loader is None:
            load = getattr(self.embedder, "load", None)
            if load is None:
                return True
            self._model_loader = asyncio.get_running_loop().run_in_executor(None, load)
        return self._model_loader.done()

    def _refresh_vectors_soon(self) -> None:
        """Embed new cards off the event loop, batched, shortly after they register."""
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.ensure_future(self._embed_pending())

    def embedding_pending(self) -> bool:
        """Would a semantic search miss cards now? (The model still loading, cards not embedded.)"""
        assert self.registry is not None
        if not self._model_ready():
            return True
        if self._refresher is not None and not self._refresher.done():
            return True  # a batch taken off the queue, still embedding
        return bool(self.registry.index.vectors.pending_count())

    async def refresh_vectors(self) -> None:
        """Return once the model is loaded and every card registered so far is embedded."""
        assert self.registry is not None
        if not self._model_ready():
            await asyncio.shield(self._model_loader)  # type: ignore[arg-type]
        while True:
            if self._refresher is not None and not self._refresher.done():
                await asyncio.shield(self._refresher)
            elif self.registry.index.vectors.pending_count():
                self._refresh_vectors_soon()
            else:
                return

    async def _embed_pending(self) -> None:
        assert self.registry is not None
        if not self._model_ready():
            await self._model_loader
        await asyncio.sleep(0)  # let a burst of registrations queue up first
        vectors = self.registry.index.vectors
        loop = asyncio.get_running_loop()
        while vectors.pending_count():
            batch = vectors.take_pending()
            embedded = await loop.run_in_executor(None, vectors.embed_batch, batch)
            vectors.install(batch, embedded)

    # -- housekeeping ----------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                self.sweep()
            except Exception:
                log.exception("mq9 sweep failed")

    def sweep(self) -> None:
        """Delete every mailbox past its TTL, with its messages and groups."""
        for box in self.mailboxes.expired():
            self.mailboxes.drop(box.address)
            self._mailbox_changed(box.address)


def _search_item(entry: Any) -> dict[str, Any]:
    return {
        "agent_id": entry.agent_id(),
        "name": entry.name,
        "description": entry.description,
        "agent_info": entry.agent_info,
    }


def _agents_reply(agents: list[dict[str, Any]], legacy: bool) -> bytes:
    return orjson.dumps({"agents": agents} if legacy else {"error": "", "agents": agents})


def _messages_reply(records: list[Record]) -> bytes:
    if not records:
        return _EMPTY_MESSAGES
    return orjson.dumps({"error": "", "messages": [record_json(r) for r in records]})
