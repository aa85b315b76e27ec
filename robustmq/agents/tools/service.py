"""The tool service: ``$mq9.AI.API.TOOL.*`` handled inside the agent API's dispatch, a broker component.

Tool instances live in their own instance table (bound to connections, with heartbeats) and calls
are tasks of the agent API's task table, so ``TASK.GET`` / ``EVENTS`` / ``CANCEL`` follow them too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from robustmq.agents import inputs
from robustmq.agents.api import errors as api_errors
from robustmq.agents.api import limits as api_limits
from robustmq.agents.api.errors import ApiError
from robustmq.agents.api.instances import Instance, InstanceTable, new_instance_id
from robustmq.agents.api.schemas import parse_request
from robustmq.agents.api.tasks import Task, new_task_id
from robustmq.agents.discovery import Embedder
from robustmq.agents.tools import errors
from robustmq.agents.tools.invoke import ToolInvoker, tool_outcome_reply
from robustmq.agents.tools.registry import ToolDirectory, ToolRecord, schema_problem, violations
from robustmq.agents.tools.schemas import (
    ToolDefineRequest,
    ToolDeregisterRequest,
    ToolDiscoverRequest,
    ToolHeartbeatRequest,
    ToolInvokeRequest,
    ToolListRequest,
    ToolRegisterRequest,
)

if TYPE_CHECKING:
    from robustmq.agents.api.service import AgentApiService
    from robustmq.router import Router
    from robustmq.store import Store

TOOL_SERVE_PREFIX = "$mq9.AI.TOOL."
TOOL_TASK_SKILL = "$tool"  # the skill of a tool call's task: how restarts and cancels tell them apart


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class ToolService:
    """Owns the tool directory, the tool instances and the tool invoker; needs the agent API."""

    name = "tools"

    def __init__(
        self,
        router: Router,
        agent_api: AgentApiService,
        store: Store | None = None,
        *,
        embedder: Embedder | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        """``agent_api``: the dispatch the TOOL subjects plug into and whose task table holds the
        calls; ``store``: where tools are kept (None: in memory); ``embedder``: mq9's, shared."""
        self.router = router
        self.api = agent_api
        self.store = store
        self._embedder = embedder
        self._clock_ms = clock_ms
        self._sweeper: asyncio.TimerHandle | None = None
        self._deferred: set[asyncio.Future] = set()
        # tool calls recovered by the agent API at its start, resumed once the invoker exists
        self._recovered: list[Task] = []
        self.invoker: ToolInvoker | None = None
        agent_api.task_owners[TOOL_TASK_SKILL] = self

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        api = self.api
        api.tool_owner = self._owner_of
        self.directory = ToolDirectory(self.store, self._embedder)
        self.directory.open()
        self.instances = InstanceTable(self._instance_down, self._clock_ms)
        self.invoker = ToolInvoker(
            self.router,
            self.instances,
            api.tasks,
            self._clock_ms,
            private_delivery=api.auth_enabled,
            tools=self.directory.get,
        )
        for verb, handler, named in (
            ("REGISTER", self.register, False),
            ("DEREGISTER", self.deregister_request, True),
            ("LIST", self.list_tools, False),
            ("DISCOVER", self.discover_request, False),
            ("HEARTBEAT", self.heartbeat, True),
            ("INVOKE", self.invoke_request, True),
        ):
            api.handlers[("TOOL", verb)] = (_as_handler(handler), named)
        recovered, self._recovered = self._recovered, []
        for task in recovered:
            self.invoker.resume(task)
        self._schedule_sweep()

    async def stop(self) -> None:
        for key in [k for k in self.api.handlers if k[0] == "TOOL"]:
            del self.api.handlers[key]
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for fut in self._deferred:
            fut.cancel()
        self.invoker.close()

    def _owner_of(self, name: str) -> str | None:
        """The user a tool is bound to (None when unbound or authentication is off)."""
        record = self.directory.get(name)
        return record.owner if record is not None and self.api.auth_enabled else None

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(api_limits.LIVENESS_SWEEP_MS / 1000, self._sweep)

    def _sweep(self) -> None:
        try:
            self.instances.sweep(self._clock_ms())
        finally:
            self._schedule_sweep()

    def _instance_down(self, inst: Instance, reason: str) -> None:
        self.invoker.instance_down(inst, reason)

    def _user(self, origin: Any) -> str | None:
        return getattr(origin, "user", None) if self.api.auth_enabled else None

    # -- registry ---------------------------------------------------------------------------------

    def register(self, _: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        req = parse_request(ToolRegisterRequest, payload, empty_ok=False)
        user = self._user(origin)
        self.define(req, user, heartbeat_interval_ms=req.heartbeat_interval_ms)
        now = self._clock_ms()
        inst = Instance(
            req.name, new_instance_id(), req.max_concurrency, req.heartbeat_interval_ms, now, origin, user
        )
        inst.serve_subject = f"{TOOL_SERVE_PREFIX}{req.name}.{inst.instance_id}"
        self.instances.add(inst)
        asyncio.get_running_loop().call_soon(self.invoker.drain, req.name)
        return {
            "error": "",
            "name": req.name,
            "instance_id": inst.instance_id,
            "serve_subject": inst.serve_subject,
            "heartbeat_interval_ms": inst.heartbeat_interval_ms,
        }

    def define(
        self,
        req: ToolDefineRequest,
        user: str | None,
        *,
        heartbeat_interval_ms: int | None = None,
        taken_code: int = api_errors.FORBIDDEN,
    ) -> ToolRecord:
        """Store a tool's definition (an instance may follow); the control plane calls this alone.

        Raises ``ApiError``: 400 with ``details`` for an invalid JSON Schema, ``taken_code`` when
        authentication is on and the name belongs to another user. A new tool is bound to ``user``.
        """
        for field, schema in (("input_schema", req.input_schema), ("output_schema", req.output_schema)):
            problem = schema is not None and schema_problem(schema)
            if problem:
                raise ApiError(
                    api_errors.BAD_REQUEST,
                    errors.BAD_SCHEMA.format(field=field),
                    details=[{"path": f"$.{field}", "message": problem}],
                )
        old = self.directory.get(req.name)
        if self.api.auth_enabled and old is not None and old.owner is not None and old.owner != user:
            raise ApiError(taken_code, errors.TOOL_NAME_TAKEN.format(name=req.name))
        if heartbeat_interval_ms is None:
            default_ms = api_limits.DEFAULT_HEARTBEAT_INTERVAL_MS
            heartbeat_interval_ms = old.heartbeat_interval_ms if old is not None else default_ms
        record = ToolRecord(
            req.name,
            req.description,
            req.input_schema,
            req.output_schema,
            max_concurrency=req.max_concurrency,
            heartbeat_interval_ms=heartbeat_interval_ms,
            owner=old.owner if old is not None and old.owner is not None else user,
            created_ms=old.created_ms if old is not None else self._clock_ms(),
        )
        problem = inputs.unencodable(record.to_dict())  # refused before memory changes
        if problem is not None:
            raise ApiError(api_errors.BAD_REQUEST, errors.NOT_STORABLE.format(name=req.name, reason=problem))
        self.directory.put(record)
        return record

    def deregister_request(self, name: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        req = parse_request(ToolDeregisterRequest, payload)
        record = self.directory.get(name)
        if record is None and not self.instances.of(name):
            raise ApiError(api_errors.NOT_FOUND, errors.UNKNOWN_TOOL.format(name=name))
        if self.api.auth_enabled and origin is not None and record is not None and record.owner is not None:
            if self._user(origin) != record.owner:  # in process (no origin): trusted
                raise ApiError(api_errors.FORBIDDEN, errors.NOT_AUTHORIZED.format(name=name))
        removed = self.deregister(name, req.instance_id)
        return {"error": "", "name": name, "removed_instances": removed}

    def deregister(self, name: str, instance_id: str | None = None) -> int:
        """Remove one instance, or the tool's definition and every instance; how many instances went.

        Their running calls fail over or fail, and with the definition gone the calls queued for an
        instance end (404); a removed instance's next heartbeat is answered 404 (register again).
        Raises ``ApiError`` 404 for an unknown tool or instance.
        """
        if instance_id is not None:
            removed = self.instances.remove(name, instance_id)
            if not removed:
                raise ApiError(
                    api_errors.NOT_FOUND, errors.UNKNOWN_INSTANCE.format(instance_id=instance_id, name=name)
                )
        else:
            removed = self.instances.remove(name)
            if self.directory.remove(name) is None and not removed:
                raise ApiError(api_errors.NOT_FOUND, errors.UNKNOWN_TOOL.format(name=name))
        for inst in removed:
            self.invoker.instance_down(inst, "deregistered")
        if instance_id is None:  # calls queued for an instance of a deleted tool end now
            self.invoker.fail_waiting(name, api_errors.NOT_FOUND, errors.UNKNOWN_TOOL.format(name=name))
        self.invoker.drain(name)
        return len(removed)

    def heartbeat(self, name: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        req = parse_request(ToolHeartbeatRequest, payload, empty_ok=False)
        record = self.directory.get(name)
        if record is None:
            raise ApiError(api_errors.NOT_FOUND, errors.UNKNOWN_TOOL.format(name=name))
        inst = self.instances.get(name, req.instance_id)
        if inst is None:
            raise ApiError(
                api_errors.NOT_FOUND, errors.UNKNOWN_INSTANCE.format(instance_id=req.instance_id, name=name)
            )
        if self.api.auth_enabled and record.owner is not None and self._user(origin) != record.owner:
            raise ApiError(api_errors.FORBIDDEN, errors.NOT_AUTHORIZED.format(name=name))
        if not inst.alive:
            raise ApiError(
                api_errors.NOT_FOUND, errors.INSTANCE_DOWN.format(instance_id=req.instance_id, name=name)
            )
        now = self._clock_ms()
        inst.last_heartbeat_ms = now
        return {"error": "", "status": inst.status(now)}

    def status_of(self, name: str, now_ms: int) -> str:
        instances = self.instances.of(name)
        if not any(i.alive for i in instances):
            return "down"
        if all(i.status(now_ms) == "healthy" for i in instances):
            return "healthy"
        return "degraded"

    def tool_info(self, record: ToolRecord, now_ms: int, score: float | None = None) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": record.name,
            "description": record.description,
            "input_schema": record.input_schema,
            "output_schema": record.output_schema,
            "status": self.status_of(record.name, now_ms),
            "live_instances": len(self.instances.live(record.name)),
            "max_concurrency": record.max_concurrency,
        }
        if score is not None:
            info["score"] = score
        return info

    def list_tools(self, _: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        req = parse_request(ToolListRequest, payload)
        return {"error": "", "tools": self.tools(req.status)}

    def tools(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every registered tool (``status`` filters), by name: for ``TOOL.LIST`` and the control plane."""
        now = self._clock_ms()
        infos = [self.tool_info(r, now) for r in self.directory.all()]
        return [i for i in infos if status is None or i["status"] == status]

    def discover_request(
        self, _: str, reply: str | None, payload: bytes, origin: Any
    ) -> dict[str, Any] | None:
        req = parse_request(ToolDiscoverRequest, payload)
        if not req.semantic:
            return {"error": "", "tools": self.discover_now(req.text, None, req.live_only, req.limit)}

        async def answer_later() -> None:
            try:
                body = {
                    "error": "",
                    "tools": await self.discover(req.text, req.semantic, req.live_only, req.limit),
                }
            except Exception as exc:  # e.g. the embedding model could not be loaded
                body = {"error": f"semantic search failed: {type(exc).__name__}", "code": 500}
            if reply:
                self.router.publish(reply, orjson.dumps(body))

        fut = asyncio.ensure_future(answer_later())
        self._deferred.add(fut)
        fut.add_done_callback(self._deferred.discard)
        return None

    async def discover(
        self, text: str | None = None, semantic: str | None = None, live_only: bool = True, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Tools by meaning (``semantic``) or keywords (``text``), best first, each with its ``score``."""
        if semantic:
            loop = asyncio.get_running_loop()
            await self.directory.embed_pending(lambda fn, *a: loop.run_in_executor(None, fn, *a))
        return self.discover_now(text, semantic, live_only, limit)

    def discover_now(
        self, text: str | None, semantic: str | None, live_only: bool, limit: int
    ) -> list[dict[str, Any]]:
        now = self._clock_ms()
        records = self.directory.all()
        if live_only:
            records = [r for r in records if self.instances.has_live(r.name)]
        if not text and not semantic:
            return [self.tool_info(r, now, 1.0) for r in records[:limit]]
        ranked = self.directory.rank(text, semantic, {r.name for r in records}, limit)
        return [self.tool_info(r, now, score) for r, score in ranked]

    # -- calls ------------------------------------------------------------------------------------

    def invoke_request(
        self, name: str, reply: str | None, payload: bytes, origin: Any
    ) -> dict[str, Any] | None:
        req = parse_request(ToolInvokeRequest, payload)
        sync = req.mode == "sync" and bool(reply)
        task = self.start_call(
            name,
            req.arguments,
            timeout_ms=req.timeout_ms,
            mode=req.mode,
            on_offline=req.on_offline,
            retries=req.retries,
            sender=self._user(origin),
            waiter=reply if sync else None,
        )
        if sync:
            return None  # answered by the invoker when the task ends (maybe already)
        if task.finished:
            return tool_outcome_reply(task)
        return self.api.reply_when_durable({"error": "", "task_id": task.id, "state": "submitted"}, reply)

    def check_arguments(self, name: str, arguments: Any) -> ToolRecord:
        """The tool's record once ``arguments`` match its input_schema; else 404, or 400 with details."""
        record = self.directory.get(name)
        if record is None:
            raise ApiError(api_errors.NOT_FOUND, errors.UNKNOWN_TOOL.format(name=name))
        found = violations(record.input_validator, arguments)
        if found:
            raise ApiError(api_errors.BAD_REQUEST, errors.BAD_ARGUMENTS.format(name=name), details=found)
        return record

    def start_call(
        self,
        name: str,
        arguments: Any,
        *,
        timeout_ms: int = api_limits.DEFAULT_TIMEOUT_MS,
        deadline_ms: int | None = None,
        mode: str = "sync",
        on_offline: str = "fail",
        retries: int = 0,
        sender: str | None = None,
        waiter: str | None = None,
        task_id: str | None = None,
    ) -> Task:
        """Check the arguments and submit the call as a task; ``waiter`` receives the outcome reply.

        Raises ``ApiError`` (404 unknown tool, 400 with ``details``) before anything is sent.
        """
        self.check_arguments(name, arguments)
        now = self._clock_ms()
        task = Task(
            task_id or new_task_id(),
            name,
            arguments,
            skill=TOOL_TASK_SKILL,
            created_ms=now,
            deadline_ms=deadline_ms if deadline_ms is not None else now + timeout_ms,
            mode=mode,
            on_offline=on_offline,
            retries=retries,
            sender=sender,
        )
        if waiter:
            task.waiters.append(waiter)
        self.invoker.submit(task)
        return task

    def cancel_task(self, task: Task) -> None:
        """Cancel a running tool call (the instance is told)."""
        if not task.finished and self.invoker is not None:
            self.invoker.cancel(task)

    def resume_task(self, task: Task) -> None:
        """A tool call recovered after a restart: dispatched again once an instance registers."""
        if self.invoker is None:
            self._recovered.append(task)  # the agent API starts first
        else:
            self.invoker.resume(task)


def _as_handler(method: Callable[..., Any]) -> Callable[..., Any]:
    """Adapt a bound method to the agent API's handler signature (its service comes first)."""

    def handler(_service: Any, arg: str, reply: str | None, payload: bytes, origin: Any) -> Any:
        return method(arg, reply, payload, origin)

    return handler
