"""The agent API service: ``$mq9.AI.API.*`` request/reply on the router, a broker component.

It answers every API subject, records the events agents publish on ``$mq9.AI.TASK.EVENT.<id>``,
republishes them on ``$mq9.AI.TASK.UPDATES.<id>``, and answers ``$SRV.*`` for registered agents.
Requests are handled synchronously in ``deliver``; a sync INVOKE is answered when its task ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from robustmq.agents import inputs
from robustmq.agents.api import errors, limits, micro
from robustmq.agents.api.errors import ApiError
from robustmq.agents.api.guards import TASK_UPDATES_PREFIX, AgentSubjectGuards
from robustmq.agents.api.instances import SERVE_PREFIX, Instance, InstanceTable, new_instance_id
from robustmq.agents.api.invoke import Invoker, outcome_reply
from robustmq.agents.api.journal import task_journal
from robustmq.agents.api.mq9_link import Mq9Link
from robustmq.agents.api.registry import AgentDirectory, AgentRecord
from robustmq.agents.api.schemas import (
    AgentTaskEvent,
    DeregisterRequest,
    DiscoverRequest,
    HeartbeatRequest,
    IntentInvokeRequest,
    InvokeRequest,
    ListRequest,
    RegisterRequest,
    TaskEventsRequest,
    parse_request,
)
from robustmq.agents.api.tasks import Task, TaskTable, new_task_id
from robustmq.agents.journal import StoreJournal
from robustmq.agents.mq9.guard import MailboxGuards
from robustmq.agents.mq9.legacy import parse_watch
from robustmq.agents.mq9.subjects import mailbox_of_subject

if TYPE_CHECKING:
    from robustmq.agents.mq9.service import Mq9Service
    from robustmq.router import Router
    from robustmq.store import Store

log = logging.getLogger("robustmq.agents.api")

API_PREFIX = "$mq9.AI.API."
API_SUBJECT = "$mq9.AI.API.>"
TASK_EVENT_PREFIX = "$mq9.AI.TASK.EVENT."
TASK_EVENT_SUBJECT = "$mq9.AI.TASK.EVENT.*"
SERVE_FAMILY_PREFIX = "$mq9.AI."
MAX_INTENT_CANDIDATES = 5

# handler(service, name_or_id, reply, payload, origin) -> reply body, or None when answered later
Handler = Callable[[Any, str, str | None, bytes, Any], dict[str, Any] | None]


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def check_subject(subject: str) -> None:
    """``ApiError(400)`` for a subject that was not UTF-8 on the wire: every error text quoting
    it (or a name taken from it) would otherwise fail to encode, and the request go unanswered."""
    if not subject.isascii() and not inputs.subject_is_text(subject):
        raise ApiError(errors.BAD_REQUEST, errors.SUBJECT_NOT_UTF8.format(subject=inputs.shown(subject)))


def encode_reply(body: dict[str, Any], subject: str) -> bytes:
    """``body`` as JSON, or a 500 saying why it cannot be: a reply is never dropped silently."""
    try:
        return orjson.dumps(body)
    except TypeError as exc:
        log.warning("agent API reply on %s cannot be encoded: %s", inputs.shown(subject), exc)
        return orjson.dumps(
            {"error": errors.UNENCODABLE_REPLY.format(reason=exc), "code": errors.INTERNAL_ERROR}
        )


class AgentApiService:
    """Owns the agent directory, the live instances, the tasks and the invoker."""

    name = "agent-api"

    def __init__(
        self,
        router: Router,
        store: Store | None = None,
        *,
        auth_enabled: bool = False,
        mq9: Mq9Service | None = None,
        journal: StoreJournal | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ):
        """``store``: where the journal lives (None: in memory); ``mq9``: the one registry and
        discovery engine shared with mq9 (None: a keyword ranker, no mq9 subjects)."""
        self.router = router
        self.store = store
        self.auth_enabled = auth_enabled
        self._journal = journal
        self._clock_ms = clock_ms
        self.link = Mq9Link(router, mq9)
        self._deferred: set[asyncio.Future] = set()
        self._rerun = False
        # the mq9 service: its ``$mq9.AI.>`` subscription is not a watcher of task updates
        self._mq9: Any = object()
        self._subs: list = []
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweeps = 0
        self._names: tuple[int, list[str]] | None = None  # (registry_version, sorted agent names)
        # task skill -> the service owning such tasks (tool calls are not agents' work): it has
        # ``resume_task(task)`` (after a restart) and ``cancel_task(task)``
        self.task_owners: dict[str, Any] = {}
        # the tool service's owner lookup for ``$mq9.AI.TOOL.<name>.*`` (set when it starts)
        self.tool_owner: Callable[[str], str | None] | None = None
        self._guards: AgentSubjectGuards | None = None
        # (family, verb) -> (handler, whether the subject carries a name after the verb)
        self.handlers: dict[tuple[str, str], tuple[Handler, bool]] = {
            ("AGENT", "REGISTER"): (AgentApiService._register, False),
            ("AGENT", "DEREGISTER"): (AgentApiService._deregister, True),
            ("AGENT", "HEARTBEAT"): (AgentApiService._heartbeat, True),
            ("AGENT", "INFO"): (AgentApiService._info, True),
            ("AGENT", "LIST"): (AgentApiService._list, False),
            ("AGENT", "STATUS"): (AgentApiService._status, True),
            ("AGENT", "DISCOVER"): (AgentApiService._discover, False),
            ("AGENT", "INVOKE"): (AgentApiService._invoke, True),
            ("INVOKE", ""): (AgentApiService._invoke_intent, False),
            ("TASK", "GET"): (AgentApiService._task_get, True),
            ("TASK", "EVENTS"): (AgentApiService._task_events, True),
            ("TASK", "CANCEL"): (AgentApiService._task_cancel, True),
        }

    # -- life cycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        journal = self._journal or task_journal(self.store)
        self._journal = journal
        records = journal.replay()
        self.directory = AgentDirectory(
            journal.write, on_mailbox_change=self._mailbox_changed if self.auth_enabled else None
        )
        self.tasks = TaskTable(journal, self._clock_ms, on_event=self._publish_update)
        self.instances = InstanceTable(self._instance_down, self._clock_ms)
        self.invoker = Invoker(
            self.router,
            self.instances,
            self.tasks,
            self._clock_ms,
            failover=self._next_agent,
            private_delivery=self.auth_enabled,
        )
        for rec in records:
            self.directory.recover(rec)
        unfinished = self.tasks.recover(records)
        self._mq9 = self.link.service or object()
        if self.link.service is not None:
            self.link.service.owners = self  # mq9 asks the one registry who owns what
        self._subs = [
            self.router.subscribe(API_SUBJECT, self._on_api),
            self.router.subscribe(TASK_EVENT_SUBJECT, self._on_task_event),
            self.router.subscribe(micro.SRV_SUBJECT, self._on_srv),
        ]
        if self.auth_enabled:
            self._guards = AgentSubjectGuards(self._serve_owner, self._task_parties)
            self.router.isolate().add_source(self._guards.guard_for)
        for task in unfinished:
            owner = self.task_owners.get(task.skill or "")
            (owner.resume_task if owner is not None else self.invoker.resume)(task)
        self._schedule_sweep()

    async def stop(self) -> None:
        for sub in self._subs:
            self.router.unsubscribe(sub)
        self._subs = []
        if self._guards is not None and self.router.guards is not None:
            self.router.guards.remove_source(self._guards.guard_for)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.invoker.close()
        for fut in self._deferred:
            fut.cancel()
        if self.link.service is not None and self.link.service.owners is self:
            self.link.service.owners = None
        if self._journal is not None:
            await self._journal.close()

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(limits.LIVENESS_SWEEP_MS / 1000, self._sweep)

    def _sweep(self) -> None:
        try:
            self.instances.sweep(self._clock_ms())
            self._sweeps += 1
            if self._sweeps % limits.HOUSEKEEPING_EVERY_SWEEPS == 0:
                self.tasks.prune_idempotency()
        finally:
            self._schedule_sweep()

    # -- dispatch -------------------------------------------------------------------------------------

    def _on_api(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        origin = getattr(self.router, "current_origin", None)
        try:
            body = self._handle(subject, reply, payload, origin)
        except ApiError as exc:
            body = exc.reply()
        except Exception:
            log.exception("agent API request on %s failed", inputs.shown(subject))
            body = {"error": errors.INTERNAL, "code": errors.INTERNAL_ERROR}
        if body is not None and reply:
            self.router.publish(reply, encode_reply(body, subject))

    def _handle(self, subject: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any] | None:
        check_subject(subject)
        tokens = subject[len(API_PREFIX) :].split(".")
        family = tokens[0]
        verb = tokens[1] if len(tokens) > 1 else ""
        entry = self.handlers.get((family, verb))
        if entry is None:
            raise ApiError(errors.NOT_FOUND, errors.UNKNOWN_SUBJECT.format(subject=subject))
        handler, named = entry
        if named:
            if len(tokens) != 3 or not tokens[2]:
                raise ApiError(errors.BAD_REQUEST, errors.MISSING_NAME)
            arg = tokens[2]
        else:
            expected = 2 if verb else 1
            if len(tokens) != expected:
                raise ApiError(errors.NOT_FOUND, errors.UNKNOWN_SUBJECT.format(subject=subject))
            arg = ""
        return handler(self, arg, reply, payload, origin)

    def _user(self, origin: Any) -> str | None:
        return getattr(origin, "user", None) if self.auth_enabled else None

    def _check_owner(self, record: AgentRecord | None, origin: Any, name: str) -> None:
        """Only the agent's owner may change it; in-process callers (no origin: the broker's
        services, the control plane's admin) are trusted, as in mq9."""
        if not self.auth_enabled or origin is None or record is None or record.owner is None:
            return
        if self._user(origin) != record.owner:
            raise ApiError(errors.FORBIDDEN, errors.NOT_AUTHORIZED.format(name=name))

    def may_subscribe(self, user: str | None, subject: str) -> bool:
        """May ``user`` subscribe to ``subject``? Serve subjects and mailbox subjects of an agent
        belong to its owner.

        For the front-ends' subscription checks, on every subject; a wildcard subscription is
        allowed because work is delivered only to the instance's own connection, and an owned
        mailbox's messages only to its owner's subscriptions, when authentication is on.
        """
        if not self.auth_enabled:
            return True
        if not subject.startswith(SERVE_FAMILY_PREFIX):
            return self.mailbox_owner(subject) in (None, user)  # the address itself
        watch = parse_watch(subject)  # a legacy mailbox subscription pushes what the mailbox holds
        if watch is not None:
            return self.mailbox_owner(watch[0]) in (None, user)
        address = mailbox_of_subject(subject)  # a SEND subject carries the mailbox's messages
        if address is not None:
            return self.mailbox_owner(address) in (None, user)
        tokens = subject.split(".")
        if len(tokens) < 4 or tokens[2] not in ("INVOKE", "TOOL") or tokens[3] in ("*", ">"):
            return True
        record = self.directory.get(tokens[3])
        return record is None or record.owner is None or record.owner == user

    def _serve_owner(self, family: str, name: str) -> str | None:
        """The user bound to the agent (``INVOKE``) or tool (``TOOL``) ``name``, for delivery guards."""
        if family == "TOOL":
            return self.tool_owner(name) if self.tool_owner is not None else None
        return self.owner_of(name)

    def _task_parties(self, task_id: str) -> tuple[str | None, ...] | None:
        """Who may watch a task's updates: its caller and its agent's owner (None: no such task)."""
        task = self.tasks.get(task_id)
        if task is None:
            return None
        owner = self.owner_of(task.agent)
        return (task.sender,) if owner is None else (task.sender, owner)

    def owner_of(self, name: str) -> str | None:
        """The user an agent name is bound to (None when unbound or authentication is off)."""
        record = self.directory.get(name)
        return record.owner if record is not None and self.auth_enabled else None

    def mailbox_owner(self, address: str) -> str | None:
        """The user owning the agent whose mailbox is ``address`` (for mq9 FETCH/ACK checks)."""
        if not self.auth_enabled:
            return None
        for record in self.directory.with_mailbox(address):
            if record.owner is not None:
                return record.owner
        return None

    # -- registration and liveness --------------------------------------------------------------------

    def _register(self, _: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        req = parse_request(RegisterRequest, payload, empty_ok=False)
        name = req.name
        user = self.check_registration(name, req.mailbox, origin)
        now = self._clock_ms()
        self.register_card(req, owner=user)
        inst = Instance(
            name,
            new_instance_id(),
            req.max_concurrency,
            req.heartbeat_interval_ms,
            now,
            origin=origin,
            user=user,
        )
        self.instances.add(inst)
        # queued tasks go out once the reply is on its way (the instance subscribes after it)
        asyncio.get_running_loop().call_soon(self.invoker.drain, name)
        return {
            "error": "",
            "name": name,
            "instance_id": inst.instance_id,
            "serve_subject": inst.serve_subject,
            "heartbeat_interval_ms": inst.heartbeat_interval_ms,
        }

    def register_card(self, req: RegisterRequest, owner: str | None = None) -> AgentRecord:
        """Register (or update) an agent's card without an instance; the control plane calls this.

        The card is journalled, shared with mq9 (and its mailbox created); the agent has no live
        instance until one registers over NATS. A new agent is bound to ``owner`` (None: unbound).
        """
        card = req.card()
        problem = inputs.unencodable((card, req.metadata, req.mailbox))  # refused before memory changes
        if problem is not None:
            raise ApiError(errors.BAD_REQUEST, errors.NOT_STORABLE.format(reason=problem))
        record = self.directory.get(req.name)
        if record is None:
            record = AgentRecord(req.name, card, created_ms=self._clock_ms(), owner=owner)
        record.card = card
        if req.mailbox:
            record.mailbox = req.mailbox
        record.metadata = req.metadata
        record.max_concurrency = req.max_concurrency
        record.heartbeat_interval_ms = req.heartbeat_interval_ms
        if record.owner is None and owner is not None:
            record.owner = owner
            # serve subjects matched while the agent was unbound are guarded afresh
            prefix = f"{SERVE_PREFIX}{req.name}."
            self.router.trie.forget([s for s in self.router.trie.match_cache if s.startswith(prefix)])
        self.directory.put(record)
        self._share_registration(record)
        return record

    def _mailbox_changed(self, address: str) -> None:
        MailboxGuards.changed(self.router.trie, address)

    def bind_agent(self, name: str, owner: str, card: dict[str, Any] | None, mailbox: str | None) -> None:
        """An agent registered through mq9 by ``owner`` (authentication on): bound to that user here,
        in the one registry, as an API registration binds it; the mailbox its card names is owned.

        mq9 has checked that the name and the mailbox are not another user's.
        """
        if not self.auth_enabled:
            return
        record = self.directory.get(name)
        if record is None:
            record = AgentRecord(name, card or {"name": name}, created_ms=self._clock_ms(), owner=owner)
        elif card is not None:
            record.card = card
        if record.owner is None:
            record.owner = owner
        if mailbox:
            record.mailbox = mailbox
        self.directory.put(record)

    def unbind_agent(self, name: str) -> None:
        """mq9 UNREGISTER by the owner: the binding goes with the card unless instances still run."""
        if self.auth_enabled and self.directory.get(name) is not None and not self.instances.of(name):
            self.directory.remove(name)

    @property
    def registry_version(self) -> int:
        """Moves whenever an agent is added, replaced or removed here or in mq9's registry."""
        shared = getattr(self.link.registry, "version", 0)
        return self.directory.version + (shared if isinstance(shared, int) else 0)

    def agent_names(self) -> list[str]:
        """Every agent name in order (with cards registered through mq9 only); kept per version."""
        version = self.registry_version
        cached = self._names
        if cached is not None and cached[0] == version:
            return cached[1]
        names = {record.name for record in self.directory.all()}
        names.update(self.link.cards())
        ordered = sorted(names)
        self._names = (version, ordered)
        return ordered

    def _share_registration(self, record: AgentRecord) -> None:
        """Register the card with mq9 too, and create the mailbox, when mq9 is present."""
        try:
            self.link.register(record.name, record.card)
            if record.mailbox:
                self.link.create_mailbox(record.mailbox)
        except Exception as exc:  # the registration itself stands; the mirror is best effort
            log.warning("could not share agent %s with mq9: %s", record.name, exc)

    def _heartbeat(self, name: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        req = parse_request(HeartbeatRequest, payload, empty_ok=False)
        inst = self.instances.get(name, req.instance_id)
        if inst is None:
            if self.directory.get(name) is None:
                raise ApiError(errors.NOT_FOUND, errors.UNKNOWN_AGENT.format(name=name))
            raise ApiError(
                errors.NOT_FOUND, errors.UNKNOWN_INSTANCE.format(instance_id=req.instance_id, name=name)
            )
        self._check_owner(self.directory.get(name), origin, name)
        if not inst.alive:
            raise ApiError(
                errors.NOT_FOUND, errors.INSTANCE_DOWN.format(instance_id=req.instance_id, name=name)
            )
        now = self._clock_ms()
        inst.last_heartbeat_ms = now
        if req.in_flight is not None:
            inst.reported_in_flight = req.in_flight
        if req.processed is not None:
            inst.reported_processed = req.processed
        return {"error": "", "status": inst.status(now)}

    def _deregister(self, name: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        req = parse_request(DeregisterRequest, payload)
        record = self.record(name)
        if record is None and not self.instances.of(name):
            raise ApiError(errors.NOT_FOUND, errors.UNKNOWN_AGENT.format(name=name))
        self._check_owner(record, origin, name)
        if req.instance_id is not None:
            removed = self.instances.remove(name, req.instance_id)
            if not removed:
                raise ApiError(
                    errors.NOT_FOUND, errors.UNKNOWN_INSTANCE.format(instance_id=req.instance_id, name=name)
                )
        else:
            removed = self.instances.remove(name)
            self.directory.remove(name)
            self.link.unregister(name)
        for inst in removed:
            self.invoker.instance_down(inst, "deregistered")
        self.invoker.drain(name)
        return {"error": "", "name": name, "removed_instances": len(removed)}

    # -- views -----------------------------------------------------------------------------------------

    def agent_status(self, name: str, now_ms: int) -> str:
        instances = self.instances.of(name)
        if not any(i.alive for i in instances):
            return "down"
        if all(i.status(now_ms) == "healthy" for i in instances):
            return "healthy"
        return "degraded"

    def instance_info(self, inst: Instance, now_ms: int) -> dict[str, Any]:
        return {
            "instance_id": inst.instance_id,
            "status": inst.status(now_ms),
            "in_flight": inst.in_flight,
            "last_heartbeat_ms": inst.last_heartbeat_ms,
            "processed": inst.processed,
            "failed": inst.failed,
            "client_id": inst.client_id,
        }

    def agent_info(self, record: AgentRecord, now_ms: int) -> dict[str, Any]:
        return {
            "name": record.name,
            "card": record.card,
            "mailbox": record.mailbox,
            "status": self.agent_status(record.name, now_ms),
            "instances": [self.instance_info(i, now_ms) for i in self.instances.of(record.name)],
            "created_ms": record.created_ms,
            "metadata": record.metadata,
            "max_concurrency": record.max_concurrency,
        }

    def record(self, name: str) -> AgentRecord | None:
        """An agent registered here, or one registered through mq9 only (it has no instances)."""
        record = self.directory.get(name)
        if record is None:
            shared = self.link.cards().get(name)
            if shared is not None:
                record = AgentRecord(name, shared[0], created_ms=shared[1])
        return record

    def records(self) -> list[AgentRecord]:
        out = {r.name: r for r in self.directory.all()}
        for name, (card, created_ms) in self.link.cards().items():
            if name not in out:
                out[name] = AgentRecord(name, card, created_ms=created_ms)
        return list(out.values())

    def _record_or_404(self, name: str) -> AgentRecord:
        record = self.record(name)
        if record is None:
            raise ApiError(errors.NOT_FOUND, errors.UNKNOWN_AGENT.format(name=name))
        return record

    def _info(self, name: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        record = self._record_or_404(name)
        return {"error": "", "agent": self.agent_info(record, self._clock_ms())}

    def _list(self, _: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        req = parse_request(ListRequest, payload)
        now = self._clock_ms()
        infos = [self.agent_info(r, now) for r in sorted(self.records(), key=lambda r: r.name)]
        if req.status is not None:
            infos = [i for i in infos if i["status"] == req.status]
        start = (req.page - 1) * req.limit
        return {"error": "", "agents": infos[start : start + req.limit], "total": len(infos)}

    def _status(self, name: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        self._record_or_404(name)
        now = self._clock_ms()
        instances = self.instances.of(name)
        live = [i for i in instances if i.alive]
        counters = self.invoker.counters_of(name)
        return {
            "error": "",
            "status": self.agent_status(name, now),
            "instances": [self.instance_info(i, now) for i in instances],
            "active_tasks": self.invoker.active_count(name),
            "total_processed": counters.processed,
            "total_failed": counters.failed,
            "avg_latency_ms": counters.avg_latency_ms(),
            "p99_latency_ms": counters.p99_latency_ms(),
            "uptime_seconds": round((now - min(i.registered_ms for i in live)) / 1000, 3) if live else 0.0,
        }

    def _discover(self, arg: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any] | None:
        req = parse_request(DiscoverRequest, payload)
        if req.semantic and self._defer_until_embedded(
            AgentApiService._discover, arg, reply, payload, origin
        ):
            return None
        now = self._clock_ms()
        found = self.discover(req.capability, req.text, req.semantic, req.tags, req.live_only)
        start = (req.page - 1) * req.limit
        agents = []
        for record, score in found[start : start + req.limit]:
            status = self.agent_status(record.name, now)
            agents.append({"name": record.name, "score": score, "status": status, "card": record.card})
        return {"error": "", "agents": agents}

    def discover(
        self,
        capability: str | None = None,
        text: str | None = None,
        semantic: str | None = None,
        tags: list[str] | None = None,
        live_only: bool = True,
    ) -> list[tuple[AgentRecord, float]]:
        """Agents matching the filters, best first, as ``(record, score)``."""
        records = self.records()
        if capability:
            records = [r for r in records if r.skill_matches(capability)]
        if tags:
            wanted = set(tags)
            records = [r for r in records if wanted <= r.tags()]
        if live_only:
            records = [r for r in records if self.instances.has_live(r.name)]
        query = semantic or text
        if not query:
            return [(r, 1.0) for r in sorted(records, key=lambda r: r.name)]
        by_name = {r.name: r for r in records}
        ranked = self.link.rank(query, records, semantic=bool(semantic))
        return [(by_name[name], score) for name, score in ranked if name in by_name]

    # -- invocation -----------------------------------------------------------------------------------

    def _invoke(self, name: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any] | None:
        req = parse_request(InvokeRequest, payload)
        if self.record(name) is None:
            raise ApiError(errors.NOT_FOUND, errors.UNKNOWN_AGENT.format(name=name))
        return self._start_task(name, req, reply, origin)

    def _invoke_intent(
        self, arg: str, reply: str | None, payload: bytes, origin: Any
    ) -> dict[str, Any] | None:
        req = parse_request(IntentInvokeRequest, payload, empty_ok=False)
        if self._defer_until_embedded(AgentApiService._invoke_intent, arg, reply, payload, origin):
            return None
        ranked = self.intent_candidates(req.intent, live_only=req.on_offline == "fail")
        if not ranked:
            raise ApiError(errors.NO_LIVE_INSTANCE, errors.NO_AGENT_FOR_INTENT, state="rejected")
        return self._start_task(
            ranked[0], req, reply, origin, intent=req.intent, candidates=ranked[1:MAX_INTENT_CANDIDATES]
        )

    def intent_candidates(self, intent: str, live_only: bool = True) -> list[str]:
        """Agent names matching ``intent`` well enough, best first (what INVOKE by intent tries)."""
        found = self.discover(text=intent, semantic=intent, live_only=live_only)
        min_score = limits.MIN_INTENT_SEMANTIC_SCORE if self.link.registry is not None else 0.0
        return [r.name for r, score in found if score >= min_score]

    def _defer_until_embedded(
        self, handler: Handler, arg: str, reply: str | None, payload: bytes, origin: Any
    ) -> bool:
        """While mq9 still embeds new cards, answer a semantic request once it is done (True)."""
        if self._rerun or not self.link.semantic_pending():
            return False

        async def rerun() -> None:
            await self.link.wait_semantic()
            self._rerun = True
            try:
                body = handler(self, arg, reply, payload, origin)
            except ApiError as exc:
                body = exc.reply()
            finally:
                self._rerun = False
            if body is not None and reply:
                self.router.publish(reply, orjson.dumps(body))

        fut = asyncio.ensure_future(rerun())
        self._deferred.add(fut)
        fut.add_done_callback(self._deferred.discard)
        return True

    def _start_task(
        self,
        agent: str,
        req: InvokeRequest,
        reply: str | None,
        origin: Any,
        intent: str | None = None,
        candidates: list[str] | None = None,
    ) -> dict[str, Any] | None:
        sync = req.mode == "sync" and bool(reply)
        if req.idempotency_key:
            earlier = self.tasks.by_idempotency_key("" if intent else agent, req.idempotency_key)
            if earlier is not None:
                return self._answer_again(earlier, reply, sync)
        now = self._clock_ms()
        task = Task(
            new_task_id(),
            agent,
            req.input,
            skill=req.skill,
            created_ms=now,
            deadline_ms=now + req.timeout_ms,
            mode=req.mode,
            on_offline=req.on_offline,
            retries=req.retries,
            idempotency_key=req.idempotency_key,
            sender=self._user(origin),
            intent=intent,
            candidates=candidates,
        )
        if sync:
            task.waiters.append(reply)  # type: ignore[arg-type]
        self.invoker.submit(task)
        if sync:
            return None  # answered by the invoker when the task ends (maybe already)
        if task.finished:
            return outcome_reply(task, now)
        body = {"error": "", "task_id": task.id, "state": "submitted"}
        if intent:
            body["agent"] = task.agent
        return self.reply_when_durable(body, reply)

    def reply_when_durable(self, body: dict[str, Any], reply: str | None) -> dict[str, Any] | None:
        """``body`` now if what it acknowledges is already stored, else sent once the journal's
        commit holding it returns (an accepted task id must survive a crash), or a 503 if it fails."""
        pending = self.tasks.journal.durable() if reply else None
        if pending is None:
            return body

        def answer(done: asyncio.Future) -> None:
            if done.cancelled() or done.exception() is not None:
                failed = {"error": errors.STORE_UNAVAILABLE, "code": errors.UNAVAILABLE}
                self.router.publish(reply, orjson.dumps(failed))
            else:
                self.router.publish(reply, orjson.dumps(body))

        pending.add_done_callback(answer)
        return None

    def _answer_again(self, task: Task, reply: str | None, sync: bool) -> dict[str, Any] | None:
        """The same idempotency key again: the first task's outcome, or wait for it."""
        if task.finished:
            return outcome_reply(task, self._clock_ms())
        if sync:
            task.waiters.append(reply)  # type: ignore[arg-type]
            self.tasks.write_snapshot(task)
            return None
        return self.reply_when_durable({"error": "", "task_id": task.id, "state": task.state}, reply)

    def _next_agent(self, task: Task) -> str | None:
        while task.candidates:
            name = task.candidates.pop(0)
            if name != task.agent and (self.instances.has_live(name) or task.on_offline == "queue"):
                return name
        return None

    def _instance_down(self, inst: Instance, reason: str) -> None:
        self.invoker.instance_down(inst, reason)

    # -- tasks ---------------------------------------------------------------------------------------

    def _task_or_404(self, task_id: str, origin: Any) -> Task:
        task = self.tasks.get(task_id)
        if task is None:
            raise ApiError(errors.NOT_FOUND, errors.UNKNOWN_TASK.format(task_id=task_id))
        if self.auth_enabled and origin is not None:  # in process: trusted
            user = self._user(origin)
            record = self.directory.get(task.agent)
            if user != task.sender and (record is None or user != record.owner):
                raise ApiError(errors.FORBIDDEN, errors.NOT_AUTHORIZED_TASK.format(task_id=task_id))
        return task

    def task_for(self, task_id: str, origin: Any) -> Task:
        """The task as ``origin`` may see it (its sender or its agent's owner), for the control
        plane: raises the ``ApiError`` TASK.GET answers (404, 403)."""
        return self._task_or_404(task_id, origin)

    def check_registration(self, name: str, mailbox: str | None, origin: Any) -> str | None:
        """May ``origin`` register (or update) agent ``name`` with ``mailbox``? Its user, or
        ``ApiError`` 403 when the name or the mailbox is another user's (REGISTER's rule)."""
        user = self._user(origin)
        if origin is None:  # in process: trusted
            return user
        record = self.directory.get(name)
        if self.auth_enabled and record is not None and record.owner is not None and record.owner != user:
            raise ApiError(errors.FORBIDDEN, errors.AGENT_NAME_TAKEN.format(name=name))
        if mailbox and self.mailbox_owner(mailbox) not in (None, user):
            raise ApiError(errors.FORBIDDEN, errors.MAILBOX_TAKEN.format(address=mailbox))
        return user

    def _task_get(self, task_id: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        return {"error": "", "task": self._task_or_404(task_id, origin).record()}

    def _task_events(self, task_id: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        req = parse_request(TaskEventsRequest, payload)
        task = self._task_or_404(task_id, origin)
        return {"error": "", "events": self.tasks.events_after(task, req.after_seq), "state": task.state}

    def _task_cancel(self, task_id: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        task = self._task_or_404(task_id, origin)
        if task.finished:
            raise ApiError(
                errors.CONFLICT,
                errors.TASK_FINISHED.format(task_id=task_id, state=task.state),
                state=task.state,
            )
        owner = self.task_owners.get(task.skill or "")
        (owner.cancel_task if owner is not None else self.invoker.cancel)(task)
        return {"error": "", "state": "canceled"}

    def _on_task_event(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        origin = getattr(self.router, "current_origin", None)
        try:
            check_subject(subject)
            body = self._record_agent_event(subject[len(TASK_EVENT_PREFIX) :], payload, origin)
        except ApiError as exc:
            body = exc.reply()
        if reply:
            self.router.publish(reply, encode_reply(body, subject))

    def _record_agent_event(self, task_id: str, payload: bytes, origin: Any) -> dict[str, Any]:
        event = parse_request(AgentTaskEvent, payload, empty_ok=False)
        task = self.tasks.get(task_id)
        if task is None:
            raise ApiError(errors.NOT_FOUND, errors.UNKNOWN_TASK.format(task_id=task_id))
        if self.auth_enabled:
            record = self.directory.get(task.agent)
            if record is not None and record.owner is not None and self._user(origin) != record.owner:
                raise ApiError(errors.FORBIDDEN, errors.NOT_AUTHORIZED.format(name=task.agent))
        if task.finished:
            raise ApiError(errors.CONFLICT, errors.TASK_FINISHED.format(task_id=task_id, state=task.state))
        if event.type == "input-required":
            task.state = "input-required"
        elif task.state in ("input-required", "submitted"):
            task.state = "working"
        recorded = self.tasks.add_event(task, event.type, event.data)
        return {"error": "", "seq": recorded["seq"]}

    def _publish_update(self, task: Task, event: dict[str, Any]) -> None:
        """Republish a recorded event on ``$mq9.AI.TASK.UPDATES.<id>`` to whoever watches it.

        Delivered straight to the watching subscriptions: mq9's ``$mq9.AI.>`` is not a watcher,
        so an unwatched task costs one trie match (cached after the first event).
        """
        subject = TASK_UPDATES_PREFIX + task.id
        result = self.router.trie.match(subject)
        if not result:
            return
        mq9 = self._mq9
        # with users configured the match holds only the task's caller and its agent's owner (guards.py)
        watchers = [sub for sub in result.plain if sub.owner is not mq9]
        for members in result.queues:
            for sub in members:
                if sub.owner is not mq9:
                    watchers.append(sub)
                    break
        if watchers:
            body = orjson.dumps({"task_id": task.id, "state": task.state, **event})
            for sub in watchers:
                sub.deliver(subject, None, None, body)

    # -- NATS micro ----------------------------------------------------------------------------------

    def _on_srv(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        if not reply:
            return
        request = micro.parse_srv_subject(subject)
        if request is None:
            return
        build = micro.BUILDERS[request.verb]
        names = [request.name] if request.name else list(self.instances.agents())
        for name in names:
            record = self.directory.get(name)
            if record is None:
                continue
            for inst in self.instances.live(name):
                if request.instance_id and inst.instance_id != request.instance_id:
                    continue
                self.router.publish(reply, orjson.dumps(build(inst, record.card, record.metadata)))
