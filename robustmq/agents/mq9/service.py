"""The mq9 service: answers ``$mq9.AI.*`` requests on the router, in process.

One subscription on ``$mq9.AI.>`` receives every command; each gets exactly one JSON reply
(when it has a reply subject). ``$mq9.AI.API.*`` and the routed agent subjects are left alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import orjson

from robustmq.agents.discovery import Embedder, default_embedder
from robustmq.agents.mq9 import errors, schemas
from robustmq.agents.mq9.errors import Mq9Error
from robustmq.agents.mq9.legacy import LegacyMailboxes
from robustmq.agents.mq9.mailboxes import (
    FETCH_DEFAULT_MAX_WAIT_MS,
    FETCH_DEFAULT_NUM_MSGS,
    FETCH_MAX_WAIT_MS,
    LEGACY_TO_CURRENT,
    QUERY_DEFAULT_LIMIT,
    QUERY_MAX_LIMIT,
    Mailbox,
    MailboxBook,
    StoredMessage,
)
from robustmq.agents.mq9.persistence import DelayedMessage, MailboxPersistence, MemoryPersistence
from robustmq.agents.mq9.registry import DISCOVER_DEFAULT_LIMIT, AgentRegistry, FileJournal, NullJournal
from robustmq.agents.mq9.subjects import SERVICE_SUBJECT, Command, Kind, parse
from robustmq.headers import decode_headers
from robustmq.subjects import is_valid_publish_subject

log = logging.getLogger("robustmq.mq9")

# Expired mailboxes and messages are removed this often (a mailbox past its TTL is already
# invisible to every command in between).
SWEEP_INTERVAL_S = 5.0
LEGACY_CLIENT_NAME = "robustmq-mq9-python"

_OK = b'{"error":""}'


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def _error_body(text: str) -> bytes:
    return orjson.dumps({"error": text})


class SendOptions:
    """The ``mq9-*`` headers of a SEND (names matched case-insensitively)."""

    __slots__ = ("priority", "key", "ttl", "delay", "tags")

    def __init__(self, block: bytes | None) -> None:
        self.priority = "normal"
        self.key: str | None = None
        self.ttl: int | None = None
        self.delay: int | None = None
        self.tags: tuple[str, ...] = ()
        if not block:
            return
        for name, value in decode_headers(block):
            name = name.lower()
            if not name.startswith("mq9-"):
                continue
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


def _seconds(text: str) -> int | None:
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


class Mq9Service:
    """The broker component ``mq9``."""

    name = "mq9"

    def __init__(
        self,
        broker: Any,
        persistence: MailboxPersistence | None = None,
        embedder: Embedder | None = None,
        registry_path: Path | None = None,
    ) -> None:
        self.broker = broker
        self.router = broker.router
        settings = broker.settings.mq9
        self.default_ttl_s: int = settings.mailbox_default_ttl_s
        self.max_body_bytes: int = settings.max_body_bytes
        self.book = MailboxBook()
        self.persistence: MailboxPersistence = persistence or MemoryPersistence()
        self.embedder = embedder or default_embedder()
        journal = FileJournal(registry_path) if registry_path is not None else NullJournal()
        self.registry = AgentRegistry(journal, self.embedder)
        self.legacy = LegacyMailboxes(self)
        self._legacy_origins: weakref.WeakSet = weakref.WeakSet()
        self._subscription: Any = None
        self._address_subs: dict[str, Any] = {}
        self._tasks: set[asyncio.Task] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._sweeper: asyncio.Task | None = None
        self._model_loader: asyncio.Future | None = None
        self._refresher: asyncio.Future | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        load = getattr(self.embedder, "load", None)
        if load is not None:
            self._model_loader = self._loop.run_in_executor(None, load)
        self.registry.load()
        restored = await self.persistence.open()
        for box in restored.mailboxes:
            self.book.restore(box)
            self._watch_address(box.address)
        for delayed in restored.delayed:
            self._schedule_release(delayed)
        self._subscription = self.router.subscribe(SERVICE_SUBJECT, self._on_request, owner=self)
        self.legacy.start()
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._subscription is not None:
            self.router.unsubscribe(self._subscription)
            self._subscription = None
        for sub in self._address_subs.values():
            self.router.unsubscribe(sub)
        self._address_subs.clear()
        self.legacy.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for timer in self._timers:
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._refresher is not None:
            self._refresher.cancel()
        await self.persistence.close()
        close = getattr(self.registry.journal, "close", None)
        if close is not None:
            close()

    # -- dispatch --------------------------------------------------------------------------------

    def _on_request(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        command = parse(subject)
        if command is None:
            return
        legacy = command.kind in (Kind.LEGACY_SEND, Kind.LEGACY_LIST, Kind.LEGACY_DELETE) or self._is_legacy()
        try:
            if len(payload) > self.max_body_bytes:
                raise Mq9Error(errors.BODY_TOO_LARGE.format(size=len(payload), max=self.max_body_bytes))
            body = self._dispatch(command, subject, reply, headers, payload, legacy)
        except Mq9Error as exc:
            body = _error_body(str(exc))
        except Exception as exc:  # a bug must not take the connection down: answer and log
            log.exception("mq9 %s failed", command.kind.value)
            body = _error_body(errors.INTERNAL.format(reason=type(exc).__name__))
        if body is not None and reply:
            self.router.publish(reply, body)

    def _dispatch(
        self, command: Command, subject: str, reply: str | None, headers: bytes | None, payload: bytes, legacy: bool
    ) -> bytes | None:
        kind = command.kind
        if kind is Kind.MSG_SEND:
            return self._send(command.address, reply, headers, payload)
        if kind is Kind.MSG_FETCH:
            return self._fetch(command.address, reply, payload)
        if kind is Kind.MSG_ACK:
            return self._ack(payload)
        if kind is Kind.MSG_QUERY:
            return self._query(command.address, payload)
        if kind is Kind.MSG_DELETE:
            return self._delete(command.address, command.msg_id, legacy)
        if kind is Kind.MAILBOX_CREATE:
            return self._create(payload, legacy)
        if kind is Kind.AGENT_REGISTER:
            return self._register(payload, legacy)
        if kind is Kind.AGENT_UNREGISTER:
            request = schemas.decode("AGENT.UNREGISTER", payload)
            if not request["name"]:
                raise Mq9Error(errors.AGENT_NAME_EMPTY)
            self.registry.unregister(request["name"])
            return self._ok(legacy)
        if kind is Kind.AGENT_REPORT:
            request = schemas.decode("AGENT.REPORT", payload)
            if not request["name"]:
                raise Mq9Error(errors.AGENT_NAME_EMPTY)
            self.registry.report(request["name"], request.get("report_info"))
            return self._ok(legacy)
        if kind is Kind.AGENT_DISCOVER:
            return self._discover(reply, payload, legacy)
        if kind is Kind.LEGACY_SEND:
            self.legacy.send(command.address, command.priority, headers, payload)
            return None
        if kind is Kind.LEGACY_LIST:
            return self.legacy.list(command.address)
        if kind is Kind.LEGACY_DELETE:
            return self._delete(command.address, command.msg_id, True)
        raise Mq9Error(errors.UNRECOGNIZED_SUBJECT.format(subject=subject))

    def _is_legacy(self) -> bool:
        origin = self.router.current_origin
        if origin is None:
            return False
        if getattr(origin, "name", None) == LEGACY_CLIENT_NAME:
            return True
        try:
            return origin in self._legacy_origins
        except TypeError:
            return False

    def _mark_legacy(self) -> None:
        origin = self.router.current_origin
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

    # -- MAILBOX.CREATE --------------------------------------------------------------------------

    def _create(self, payload: bytes, legacy: bool) -> bytes:
        request = schemas.decode("MAILBOX.CREATE", payload)
        if "public" in request:
            legacy = True
            self._mark_legacy()
        ttl = request.get("ttl")
        name = request.get("name")
        if legacy and not request.get("public"):
            name = None  # the legacy SDK names only public mailboxes
        box = self.book.create(
            name if name is not None else None,
            self.default_ttl_s if ttl is None else ttl,
            request.get("desc") or "",
            bool(request.get("public")),
        )
        self.persistence.create(box)
        self._watch_address(box.address)
        if legacy:
            return _json({"mail_id": box.address, "is_new": True})
        return _json({"error": "", "mail_address": box.address})

    def _watch_address(self, address: str) -> None:
        """Publishes on the mailbox address, from any protocol, land in the mailbox."""
        if address in self._address_subs or not is_valid_publish_subject(address):
            return
        self._address_subs[address] = self.router.subscribe(address, self._on_address_publish, owner=self)

    def _on_address_publish(
        self, subject: str, reply: str | None, headers: bytes | None, payload: bytes
    ) -> Awaitable[Any] | None:
        box = self.book.get(subject)
        if box is None:
            return None
        options = SendOptions(headers)
        if options.delay:
            self._hold(box, payload, headers, options, None)
            return None
        _, durable = self._store(box, payload, headers, options, reply)
        return durable

    # -- MSG.SEND --------------------------------------------------------------------------------

    def _send(self, address: str, reply: str | None, headers: bytes | None, payload: bytes) -> bytes | None:
        box = self.book.require(address)
        options = SendOptions(headers)
        if options.delay:
            durable = self._hold(box, payload, headers, options, reply)
            return self._after(durable, reply, b'{"error":"","msg_id":-1}')
        msg, durable = self._store(box, payload, headers, options, reply)
        return self._after(durable, reply, b'{"error":"","msg_id":%d}' % msg.msg_id)

    def _after(self, durable: Awaitable[Any] | None, reply: str | None, body: bytes) -> bytes | None:
        """Reply now when the write is durable already, else once it is (no task per message)."""
        if durable is None:
            return body
        if not reply:
            return None
        future = asyncio.ensure_future(durable)
        router = self.router

        def done(f: asyncio.Future) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            router.publish(reply, body if exc is None else _error_body(errors.INTERNAL.format(reason=exc)))

        future.add_done_callback(done)
        return None

    def _store(
        self,
        box: Mailbox,
        payload: bytes,
        headers: bytes | None,
        options: SendOptions,
        reply: str | None,
        legacy_priority: str = "",
    ) -> tuple[StoredMessage, Awaitable[Any] | None]:
        now = time.time()
        msg = StoredMessage(
            box.next_offset,
            payload,
            options.priority,
            headers,
            int(now),
            options.key,
            options.tags,
            now + options.ttl if options.ttl else None,
            legacy_priority,
            reply,
        )
        box.append(msg)
        durable = self.persistence.append(box, msg)
        if self.legacy.watching:
            self.legacy.on_stored(box, msg)
        return msg, durable

    def _hold(
        self, box: Mailbox, payload: bytes, headers: bytes | None, options: SendOptions, reply: str | None
    ) -> Awaitable[Any] | None:
        delayed = DelayedMessage(
            box.address,
            time.time() + (options.delay or 0),
            payload,
            options.priority,
            headers,
            options.key,
            options.tags,
            options.ttl,
            reply,
        )
        durable = self.persistence.hold(delayed)
        self._schedule_release(delayed)
        return durable

    def _schedule_release(self, delayed: DelayedMessage) -> None:
        assert self._loop is not None
        delay = max(0.0, delayed.release_at - time.time())
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            self._release(delayed)

        timer = self._loop.call_later(delay, fire)
        self._timers.add(timer)

    def _release(self, delayed: DelayedMessage) -> None:
        box = self.book.get(delayed.address)
        if box is not None:
            options = SendOptions(None)
            options.priority, options.key, options.tags, options.ttl = (
                delayed.priority, delayed.key, delayed.tags, delayed.ttl_s,
            )  # fmt: skip
            self._store(box, delayed.payload, delayed.header, options, delayed.reply)
        self.persistence.release(delayed)

    # -- MSG.FETCH / ACK / QUERY / DELETE ----------------------------------------------------------

    def _fetch(self, address: str, reply: str | None, payload: bytes) -> bytes | None:
        request = schemas.decode("MSG.FETCH", payload)
        box = self.book.require(address)
        config = request.get("config") or {}
        num = config.get("num_msgs")
        num = FETCH_DEFAULT_NUM_MSGS if num is None else num
        wait_ms = config.get("max_wait_ms")
        wait_ms = FETCH_DEFAULT_MAX_WAIT_MS if wait_ms is None else min(wait_ms, FETCH_MAX_WAIT_MS)
        group = request.get("group_name")
        position, commit = self.book.fetch_position(
            box,
            group,
            request.get("deliver") or "latest",
            request.get("from_time") or 0,
            request.get("from_id") or 0,
            bool(request.get("force_deliver")),
        )
        if commit:
            box.groups[group] = position  # type: ignore[index]
            self.persistence.commit_group(box, group, position)  # type: ignore[arg-type]
        messages = box.collect(position, num, time.time())
        if messages or wait_ms <= 0 or num <= 0:
            return _fetch_reply(messages)
        if reply:
            self._spawn(self._fetch_later(box, position, num, wait_ms / 1000.0, reply))
        return None

    async def _fetch_later(self, box: Mailbox, position: int, num: int, wait_s: float, reply: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        messages: list[StoredMessage] = []
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            waiter = loop.create_future()
            box.waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass
            finally:
                if waiter in box.waiters:
                    box.waiters.remove(waiter)
            if self.book.get(box.address) is not box:
                break
            messages = box.collect(position, num, time.time())
            if messages:
                break
        self.router.publish(reply, _fetch_reply(messages))

    def _ack(self, payload: bytes) -> bytes:
        request = schemas.decode("MSG.ACK", payload)
        address = request["mail_address"]
        box = self.book.get(address)
        if box is None:
            raise Mq9Error(errors.MAILBOX_NOT_FOUND.format(addr=address))
        position = request["msg_id"] + 1
        box.groups[request["group_name"]] = position
        self.persistence.commit_group(box, request["group_name"], position)
        return _OK

    def _query(self, address: str, payload: bytes) -> bytes:
        request = schemas.decode("MSG.QUERY", payload)
        box = self.book.require(address)
        limit = request.get("limit")
        limit = QUERY_DEFAULT_LIMIT if limit is None else min(limit, QUERY_MAX_LIMIT)
        key = request.get("key")
        tags = request.get("tags")
        since = request.get("since")
        if tags is not None and not tags and key is None:
            since = 0
        messages = self.book.query(box, key, tags if tags else None, since, limit)
        return _fetch_reply(messages)

    def _delete(self, address: str, raw_id: str, legacy: bool) -> bytes:
        try:
            msg_id = int(raw_id)
        except ValueError:
            raise Mq9Error(errors.INVALID_MSG_ID.format(value=raw_id)) from None
        if msg_id < 0:
            raise Mq9Error(errors.INVALID_MSG_ID.format(value=raw_id))
        box = self.book.get(address)
        if box is not None and box.delete(msg_id):
            self.persistence.delete(box, msg_id)
        return b'{"deleted":true}' if legacy else b'{"error":"","deleted":true}'

    # -- AGENT.* ---------------------------------------------------------------------------------

    def _register(self, payload: bytes, legacy: bool) -> bytes:
        if not payload.strip():
            raise Mq9Error(errors.PAYLOAD_EMPTY)
        value = schemas.parse_json("AGENT.REGISTER", payload)
        if schemas.is_agent_card(value):
            name = value["name"]
            if not name:
                raise Mq9Error(errors.AGENT_NAME_EMPTY)
            self.registry.register(name, orjson.dumps(value).decode(), value)
            self._refresh_vectors_soon()
            return self._ok(legacy)
        problem = schemas.wrapped_registration_problem(value)
        if problem is not None:
            raise errors.invalid_payload("AGENT.REGISTER", problem)
        if not value["payload"]:
            raise Mq9Error(errors.AGENT_INFO_EMPTY)
        if not value["name"]:
            raise Mq9Error(errors.AGENT_NAME_EMPTY)
        self.registry.register(value["name"], value["payload"])
        self._refresh_vectors_soon()
        return self._ok(legacy)

    def _discover(self, reply: str | None, payload: bytes, legacy: bool) -> bytes | None:
        request = schemas.decode("AGENT.DISCOVER", payload)
        semantic = request.get("semantic") or ""
        text = request.get("text") or ""
        limit = request.get("limit")
        limit = DISCOVER_DEFAULT_LIMIT if limit is None else limit
        page = max(request.get("page") or 1, 1)
        if not semantic and not text:
            agents = [{"name": e.name, "agent_info": e.agent_info} for e in self.registry.listing()]
            return self._agents_reply(agents, legacy)
        if semantic:
            vectors = self.registry.index.vectors
            if vectors.pending_count() > INLINE_EMBED_MAX or not self._model_ready():
                if reply:
                    self._spawn(self._discover_later(semantic, limit, page, reply, legacy))
                return None
            hits = self.registry.search_semantic(semantic, limit, page)
        else:
            hits = self.registry.search_text(text, limit, page)
        return self._agents_reply([_search_item(e) for e, _ in hits], legacy)

    async def _discover_later(self, semantic: str, limit: int, page: int, reply: str, legacy: bool) -> None:
        await self._refresh_vectors()
        hits = self.registry.search_semantic(semantic, limit, page)
        self.router.publish(reply, self._agents_reply([_search_item(e) for e, _ in hits], legacy))

    @staticmethod
    def _agents_reply(agents: list[dict[str, Any]], legacy: bool) -> bytes:
        return _json({"agents": agents} if legacy else {"error": "", "agents": agents})

    def _model_ready(self) -> bool:
        return self._model_loader is None or self._model_loader.done()

    def _refresh_vectors_soon(self) -> None:
        """Embed new cards off the event loop, batched, shortly after they register."""
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.ensure_future(self._embed_pending())

    async def _refresh_vectors(self) -> None:
        """Return once every card registered so far is embedded."""
        while True:
            if self._refresher is not None and not self._refresher.done():
                await asyncio.shield(self._refresher)
            elif self.registry.index.vectors.pending_count():
                self._refresh_vectors_soon()
            else:
                return

    async def _embed_pending(self) -> None:
        if self._model_loader is not None:
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
        """Delete expired mailboxes (with their messages) and expired messages."""
        for box in self.book.expired():
            self.drop_mailbox(box.address)
        now = time.time()
        for box in list(self.book.mailboxes.values()):
            for msg_id in box.sweep_expired(now):
                self.persistence.delete(box, msg_id)

    def drop_mailbox(self, address: str) -> None:
        box = self.book.drop(address)
        if box is None:
            return
        sub = self._address_subs.pop(address, None)
        if sub is not None:
            self.router.unsubscribe(sub)
        self.persistence.drop(box)

    # -- used by the legacy layout -----------------------------------------------------------------

    def store_legacy(self, box: Mailbox, priority: str, headers: bytes | None, payload: bytes) -> StoredMessage:
        options = SendOptions(None)
        options.priority = LEGACY_TO_CURRENT.get(priority, "normal")
        msg, durable = self._store(box, payload, headers, options, None, priority)
        if durable is not None:
            asyncio.ensure_future(durable)
        return msg


INLINE_EMBED_MAX = 64


def _search_item(entry: Any) -> dict[str, Any]:
    return {
        "agent_id": entry.agent_id(),
        "name": entry.name,
        "description": entry.description,
        "agent_info": entry.agent_info,
    }


def _fetch_reply(messages: list[StoredMessage]) -> bytes:
    if not messages:
        return b'{"error":"","messages":[]}'
    return orjson.dumps({"error": "", "messages": [m.as_record() for m in messages]})

