"""The pipeline service: ``$mq9.AI.API.PIPELINE.*`` handled inside the agent API's dispatch.

Definitions are validated at CREATE and kept in the store; runs are driven by ``PipelineRunner``,
checkpointed after each step, and continued after a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from robustmq.agents import inputs
from robustmq.agents.api import errors as api_errors
from robustmq.agents.api.errors import ApiError
from robustmq.agents.api.schemas import check_nesting, parse_request
from robustmq.agents.pipelines import errors, limits
from robustmq.agents.pipelines.journal import PipelineJournal
from robustmq.agents.pipelines.runner import PipelineRunner
from robustmq.agents.pipelines.runs import Run, new_run_id, replay_runs
from robustmq.agents.pipelines.schemas import RunRequest
from robustmq.agents.pipelines.spec import InvalidPipeline, compile_pipeline

if TYPE_CHECKING:
    from robustmq.agents.api.service import AgentApiService
    from robustmq.agents.tools.service import ToolService
    from robustmq.store import Store


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class PipelineService:
    """Owns the pipeline definitions and the runs; needs the agent API (and uses the tool service)."""

    name = "pipelines"

    def __init__(
        self,
        agent_api: AgentApiService,
        tools: ToolService | None = None,
        store: Store | None = None,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        """``agent_api``: the dispatch the PIPELINE subjects plug into and what runs agent steps;
        ``tools``: what runs tool steps (None: none can); ``store``: definitions and runs."""
        self.api = agent_api
        self.tools = tools
        self.store = store
        self._clock_ms = clock_ms
        self.definitions: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, Run] = {}
        self._finished_order: deque[str] = deque()
        self._finish_waiters: dict[str, list[asyncio.Future]] = {}

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        api = self.api
        self.journal = PipelineJournal(self.store)
        self.journal.open()
        self.definitions = self.journal.definitions()
        self.runner = PipelineRunner(api, self.tools, self.journal, self._clock_ms, self._run_finished)
        self.runs = replay_runs(self.journal.run_records())
        for run in list(self.runs.values()):
            if run.finished:
                self._run_finished(run)
        for verb, handler, named in (
            ("CREATE", self.create_request, False),
            ("LIST", self.list_request, False),
            ("GET", self.get_request, True),
            ("DELETE", self.delete_request, True),
            ("RUN", self.run_request, True),
            ("STATUS", self.status_request, True),
            ("CANCEL", self.cancel_request, True),
        ):
            api.handlers[("PIPELINE", verb)] = (_as_handler(handler), named)
        for run in list(self.runs.values()):
            if not run.finished:
                self.runner.resume(run)

    async def stop(self) -> None:
        for key in [k for k in self.api.handlers if k[0] == "PIPELINE"]:
            del self.api.handlers[key]
        self.runner.close()

    def _user(self, origin: Any) -> str | None:
        return getattr(origin, "user", None) if self.api.auth_enabled else None

    def _run_finished(self, run: Run) -> None:
        for fut in self._finish_waiters.pop(run.id, ()):
            if not fut.done():
                fut.set_result(run.view())
        self._finished_order.append(run.id)
        while len(self._finished_order) > limits.MAX_RUNS_IN_MEMORY:
            self.runs.pop(self._finished_order.popleft(), None)

    # -- definitions (Python API for the control plane too) -------------------------------------

    def create(self, body: Any) -> dict[str, Any]:
        """Validate and store a pipeline; raises ``ApiError`` (400 with ``details``, 409)."""
        try:
            spec = compile_pipeline(body, self._agent_known, self._tool_known)
        except InvalidPipeline as exc:
            raise ApiError(
                api_errors.BAD_REQUEST,
                errors.INVALID_PIPELINE.format(count=len(exc.details)),
                details=exc.details,
            ) from None
        name = spec["name"]
        old = self.definitions.get(name)
        if old is not None and body.get("replace") is not True:
            raise ApiError(api_errors.CONFLICT, errors.PIPELINE_EXISTS.format(name=name))
        now = self._clock_ms()
        record = {
            "name": name,
            "spec": spec,
            "created_ms": old["created_ms"] if old else now,
            "updated_ms": now,
        }
        # encoded and written before memory changes: nothing is kept that the store refused
        problem = inputs.unencodable(record)
        if problem is not None:
            raise ApiError(api_errors.BAD_REQUEST, errors.NOT_STORABLE.format(reason=problem))
        self.journal.put_definition(name, record)
        self.definitions[name] = record
        return {"error": "", "name": name, "pipeline": spec, "replaced": old is not None}

    def _agent_known(self, name: str) -> bool:
        return self.api.record(name) is not None

    def _tool_known(self, name: str) -> bool:
        return self.tools is not None and self.tools.directory.get(name) is not None

    def pipelines(self) -> list[dict[str, Any]]:
        """Every pipeline, by name: ``{name, description, steps, created_ms, updated_ms}``."""
        return [
            {
                "name": name,
                "description": rec["spec"].get("description", ""),
                "steps": len(rec["spec"]["steps"]),
                "created_ms": rec.get("created_ms") or 0,
                "updated_ms": rec.get("updated_ms") or 0,
            }
            for name, rec in sorted(self.definitions.items())
        ]

    def get(self, name: str) -> dict[str, Any]:
        rec = self.definitions.get(name)
        if rec is None:
            raise ApiError(api_errors.NOT_FOUND, errors.UNKNOWN_PIPELINE.format(name=name))
        return rec["spec"]

    def delete(self, name: str) -> None:
        if self.definitions.pop(name, None) is None:
            raise ApiError(api_errors.NOT_FOUND, errors.UNKNOWN_PIPELINE.format(name=name))
        self.journal.delete_definition(name)

    # -- runs (Python API for the control plane too) ---------------------------------------------

    def run(
        self,
        name: str,
        input: Any = None,
        timeout_ms: int = limits.DEFAULT_RUN_TIMEOUT_MS,
        sender: str | None = None,
        waiter: str | None = None,
    ) -> Run:
        """Start a run of ``name``; ``waiter`` (a reply subject) gets the final view. 404 if unknown."""
        spec = self.get(name)
        now = self._clock_ms()
        run = Run(new_run_id(), spec, input, created_ms=now, deadline_ms=now + timeout_ms, sender=sender)
        if waiter:
            run.waiters.append(waiter)
        self.runs[run.id] = run
        self.runner.start(run)
        return run

    async def wait(self, run_id: str) -> dict[str, Any]:
        """The run's final view once it has ended (at once if it has); 404 if unknown."""
        run = self.run_or_404(run_id)
        if run.finished:
            return run.view()
        fut = asyncio.get_running_loop().create_future()
        self._finish_waiters.setdefault(run_id, []).append(fut)
        return await fut

    def run_or_404(self, run_id: str, origin: Any = None) -> Run:
        run = self.runs.get(run_id)
        if run is None:
            raise ApiError(api_errors.NOT_FOUND, errors.UNKNOWN_RUN.format(run_id=run_id))
        # in process (no origin: the broker, the control plane's admin) is trusted
        guarded = self.api.auth_enabled and origin is not None and run.sender is not None
        if guarded and self._user(origin) != run.sender:
            raise ApiError(api_errors.FORBIDDEN, errors.NOT_AUTHORIZED.format(run_id=run_id))
        return run

    def may_see_run(self, run_id: str, origin: Any) -> bool:
        """Would STATUS of this run answer ``origin`` (not 403/404)? For the control plane's list."""
        try:
            self.run_or_404(run_id, origin)
        except ApiError:
            return False
        return True

    def status(self, run_id: str) -> dict[str, Any]:
        """The run's view so far (``PIPELINE.STATUS``); 404 if unknown."""
        return self.run_or_404(run_id).view()

    def cancel(self, run_id: str, origin: Any = None) -> dict[str, Any]:
        """Cancel a running run (409 when it has ended); its running step tasks are cancelled."""
        run = self.run_or_404(run_id, origin)
        if run.finished:
            raise ApiError(
                api_errors.CONFLICT,
                errors.RUN_FINISHED.format(run_id=run_id, state=run.state),
                state=run.state,
            )
        self.runner.cancel(run)
        return {"error": "", "run_id": run.id, "state": run.state}

    def list_runs(self, name: str | None = None) -> list[dict[str, Any]]:
        return [r.summary() for r in self.runs.values() if name is None or r.pipeline == name]

    # -- subjects -----------------------------------------------------------------------------------

    def create_request(self, _: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        check_nesting(payload)
        try:
            body = orjson.loads(payload) if payload.strip() else None
        except orjson.JSONDecodeError as exc:
            raise ApiError(api_errors.BAD_REQUEST, api_errors.INVALID_JSON.format(detail=str(exc))) from None
        return self.create(body)

    def list_request(self, _: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        items = self.pipelines()
        return {"error": "", "pipelines": items, "total": len(items)}

    def get_request(self, name: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        return {"error": "", "pipeline": self.get(name)}

    def delete_request(self, name: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        self.delete(name)
        return {"error": "", "name": name, "deleted": True}

    def run_request(self, name: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any] | None:
        req = parse_request(RunRequest, payload)
        sync = req.mode == "sync" and bool(reply)
        run = self.run(name, req.input, req.timeout_ms, self._user(origin), reply if sync else None)
        if sync:
            return None  # answered when the run ends
        return {"error": "", "run_id": run.id, "state": run.state}

    def status_request(self, run_id: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        return self.run_or_404(run_id, origin).view()

    def cancel_request(self, run_id: str, reply: str | None, payload: bytes, origin: Any) -> dict[str, Any]:
        return self.cancel(run_id, origin)


def _as_handler(method: Callable[..., Any]) -> Callable[..., Any]:
    def handler(_service: Any, arg: str, reply: str | None, payload: bytes, origin: Any) -> Any:
        return method(arg, reply, payload, origin)

    return handler
