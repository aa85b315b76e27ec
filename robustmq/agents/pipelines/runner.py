"""The DAG runner: runs a pipeline's steps as tasks of the agent API, in parallel where they may.

One asyncio task drives each run: it starts every step whose needs have settled, waits for the
first to end, checkpoints it, and goes on. A step submits one task per attempt (per item with
``for_each``) and waits for the outcome the invoker publishes to the runner's inbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from robustmq.agents.api import errors as api_errors
from robustmq.agents.api.errors import ApiError
from robustmq.agents.api.invoke import outcome_code
from robustmq.agents.api.tasks import Task, new_task_id
from robustmq.agents.pipelines import errors, limits, templates
from robustmq.agents.pipelines.journal import PipelineJournal
from robustmq.agents.pipelines.runs import (
    CANCELED,
    COMPLETED,
    FAILED,
    RUNNING,
    SKIPPED,
    STEP_SETTLED,
    Run,
    StepRun,
)
from robustmq.agents.tools.service import TOOL_TASK_SKILL

log = logging.getLogger("robustmq.agents.pipelines")

# what an attempt ends with: (ok, output, error text, reply code)
Outcome = tuple[bool, Any, str | None, int]


class PipelineRunner:
    """Drives runs; ``api`` is the agent API service, ``tools`` the tool service (or None)."""

    def __init__(
        self,
        api: Any,
        tools: Any,
        journal: PipelineJournal,
        clock_ms: Callable[[], int],
        on_finished: Callable[[Run], None],
    ) -> None:
        self.api = api
        self.tools = tools
        self.router = api.router
        self.journal = journal
        self._clock_ms = clock_ms
        self._on_finished = on_finished
        self._inbox = self.router.new_inbox() + "."
        self._inbox_sub = self.router.subscribe(self._inbox + "*", self._on_outcome)
        self._waiting: dict[str, asyncio.Future] = {}
        self._live: dict[str, Run] = {}

    def close(self) -> None:
        self.router.unsubscribe(self._inbox_sub)
        for run in list(self._live.values()):
            if run.driver is not None:
                run.driver.cancel()

    # -- runs -------------------------------------------------------------------------------------

    def start(self, run: Run) -> None:
        """Checkpoint a new run (written before its run_id is answered) and drive it."""
        self.journal.checkpoint(run.start_record(), commit=True)
        self._drive_soon(run)

    def resume(self, run: Run) -> None:
        """Go on with a run replayed after a restart (fail it when its deadline has passed)."""
        if self._clock_ms() >= run.deadline_ms:
            self._stop_steps(run)
            self._finish(run, FAILED, error=errors.BROKER_RESTARTED, code=api_errors.DEADLINE_EXCEEDED)
            return
        self._drive_soon(run)

    def _drive_soon(self, run: Run) -> None:
        self._live[run.id] = run
        run.driver = asyncio.ensure_future(self._drive(run))

    def cancel(self, run: Run) -> None:
        """Cancel a running run: its running step tasks are cancelled and their instances told."""
        if run.finished:
            return
        if run.driver is not None:
            run.driver.cancel()
        self._stop_steps(run)
        self._finish(run, CANCELED, error=errors.RUN_CANCELED, code=api_errors.CONFLICT)

    async def _drive(self, run: Run) -> None:
        spec_steps = {s["id"]: s for s in run.spec["steps"]}
        running: dict[asyncio.Future, str] = {}
        # steps replayed as running after a restart: reattach to their tasks
        for sid, step in run.steps.items():
            if step.state == RUNNING:
                running[asyncio.ensure_future(self._run_step(run, spec_steps[sid], step, resume=True))] = sid
        try:
            while True:
                for sid, spec_step in spec_steps.items():
                    step = run.steps[sid]
                    if step.state != "pending":
                        continue
                    if all(run.steps[n].state in STEP_SETTLED for n in spec_step["needs"]):
                        step.state = RUNNING
                        step.started_ns = time.perf_counter_ns()
                        running[asyncio.ensure_future(self._run_step(run, spec_step, step))] = sid
                if not running:
                    break
                remaining_s = max(0.0, (run.deadline_ms - self._clock_ms()) / 1000)
                done, _ = await asyncio.wait(
                    running, timeout=remaining_s, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    self._stop_steps(run)
                    self._finish(run, FAILED, error=errors.RUN_DEADLINE, code=api_errors.DEADLINE_EXCEEDED)
                    return
                for fut in done:
                    sid = running.pop(fut)
                    step = run.steps[sid]
                    if fut.exception() is not None:  # a bug, not the agent's failure: keep it visible
                        log.error("pipeline %s step %s", run.pipeline, sid, exc_info=fut.exception())
                        step.state, step.error, step.code = FAILED, "internal error", 500
                    self.journal.checkpoint(run.done_record(step), commit=True)
                    if step.state == FAILED:
                        for other in running:
                            other.cancel()
                        self._stop_steps(run)
                        text = errors.STEP_FAILED.format(step=sid, text=step.error or "failed")
                        self._finish(run, FAILED, error=text, code=step.code or api_errors.AGENT_FAILED)
                        return
            output = templates.resolve(run.spec["output"], run.context())
            self._finish(run, COMPLETED, output=output)
        except asyncio.CancelledError:
            for fut in running:
                fut.cancel()
            raise

    def _finish(
        self, run: Run, state: str, output: Any = None, error: str | None = None, code: int = 0
    ) -> None:
        if run.finished:
            return
        run.state = state
        run.output = output
        run.error = error
        run.code = code
        run.finished_ms = self._clock_ms()
        if run.started_ns:
            run.latency_ms = round((time.perf_counter_ns() - run.started_ns) / 1e6, 3)
        else:
            run.latency_ms = float(max(0, run.finished_ms - run.created_ms))
        self._live.pop(run.id, None)
        self.journal.checkpoint(run.end_record())
        if run.waiters:
            body = orjson.dumps(run.view())
            for reply in run.waiters:
                self.router.publish(reply, body)
            run.waiters = []
        self._on_finished(run)

    def _stop_steps(self, run: Run) -> None:
        """Cancel every unfinished task of the run's running steps, and mark those steps canceled."""
        for step in run.steps.values():
            if step.state != RUNNING:
                continue
            for task_id in step.task_ids:
                self._cancel_task(task_id)
            step.state = CANCELED

    def _cancel_task(self, task_id: str) -> None:
        self._waiting.pop(task_id, None)
        task = self.api.tasks.get(task_id)
        if task is None or task.finished:
            return
        if task.skill == TOOL_TASK_SKILL and self.tools is not None:
            self.tools.cancel_task(task)
        else:
            self.api.invoker.cancel(task)

    # -- steps ------------------------------------------------------------------------------------

    async def _run_step(self, run: Run, spec: dict[str, Any], step: StepRun, resume: bool = False) -> None:
        """Run one step to its end state (completed, skipped or failed); never raises but cancel."""
        if not step.started_ns:
            step.started_ns = time.perf_counter_ns()
        previous = list(step.task_ids) if resume else []
        context = run.context()
        for_each = spec.get("for_each")
        if for_each is not None:
            for task_id in previous:  # items are not checkpointed one by one: start them again
                self._cancel_task(task_id)
            step.task_ids = []
            items = templates.resolve(for_each, context)
            if not isinstance(items, list) or len(items) > limits.MAX_FOR_EACH_ITEMS:
                outcomes: list[Outcome] = [
                    (False, None, errors.NOT_A_LIST.format(reference=for_each), api_errors.BAD_REQUEST)
                ]
            else:
                outcomes = list(
                    await asyncio.gather(
                        *(
                            self._attempts(run, spec, step, {**context, "item": item, "index": i})
                            for i, item in enumerate(items)
                        )
                    )
                )
            failed = next((o for o in outcomes if not o[0]), None)
            result: Outcome = failed or (True, [o[1] for o in outcomes], None, 0)
        else:
            attach = previous[-1] if previous else None
            result = await self._attempts(run, spec, step, context, attach=attach)
        ok, output, error, code = result
        step.latency_ms = round((time.perf_counter_ns() - step.started_ns) / 1e6, 3)
        if ok:
            step.state, step.output = COMPLETED, output
        elif spec["on_error"] == "skip":
            step.state, step.output, step.error = SKIPPED, None, error
        else:
            step.state, step.error, step.code = FAILED, error, code

    async def _attempts(
        self,
        run: Run,
        spec: dict[str, Any],
        step: StepRun,
        context: dict[str, Any],
        attach: str | None = None,
    ) -> Outcome:
        """One item of a step: its attempts (``retries``), then its fallback, if any."""
        payload = templates.resolve(spec["input"], context)
        target = {k: spec[k] for k in ("agent", "tool", "intent", "skill") if k in spec}
        result: Outcome = (False, None, None, 0)
        for _ in range(spec["retries"] + 1):
            result = await self._call(run, spec, step, target, payload, attach)
            attach = None
            if result[0] or result[3] == api_errors.BAD_REQUEST or self._clock_ms() >= run.deadline_ms:
                return result
        on_error = spec["on_error"]
        if isinstance(on_error, dict) and self._clock_ms() < run.deadline_ms:
            fallback = on_error["fallback"]
            second = await self._call(run, spec, step, dict(fallback), payload, None)
            if second[0]:
                return second
            return (False, None, f"{result[2]}; fallback: {second[2]}", second[3])
        return result

    async def _call(
        self,
        run: Run,
        spec: dict[str, Any],
        step: StepRun,
        target: dict[str, Any],
        payload: Any,
        attach: str | None,
    ) -> Outcome:
        """One task for ``target`` (agent, tool or intent) and its outcome."""
        # a run continued after a restart waits for instances registering again
        on_offline = "queue" if run.resumed else spec["on_offline"]
        if attach is not None:
            task = self.api.tasks.get(attach)
            if task is not None and task.finished:
                return task_outcome(task)
            if task is not None:
                fut = self._expect(task.id)
                task.waiters.append(self._inbox + task.id)
                return self._read_outcome(await fut)
        now = self._clock_ms()
        deadline_ms = run.deadline_ms
        if spec.get("timeout_ms"):
            deadline_ms = min(deadline_ms, now + spec["timeout_ms"])
        task_id = new_task_id()
        waiter = self._inbox + task_id
        fut = self._expect(task_id)
        try:
            if "tool" in target:
                if self.tools is None:
                    raise ApiError(api_errors.NOT_FOUND, f"tool {target['tool']} not found")
                self.tools.start_call(
                    target["tool"],
                    payload,
                    deadline_ms=deadline_ms,
                    on_offline=on_offline,
                    sender=run.sender,
                    waiter=waiter,
                    task_id=task_id,
                )
            else:
                task = await self._agent_task(
                    run, spec, target, payload, deadline_ms, task_id, waiter, on_offline
                )
                self.api.invoker.submit(task)
        except ApiError as exc:
            self._waiting.pop(task_id, None)
            return (False, None, exc.text, exc.code)
        step.task_ids.append(task_id)
        self.journal.checkpoint(run.step_record(step))
        return self._read_outcome(await fut)

    async def _agent_task(
        self,
        run: Run,
        spec: dict[str, Any],
        target: dict[str, Any],
        payload: Any,
        deadline_ms: int,
        task_id: str,
        waiter: str,
        on_offline: str,
    ) -> Task:
        api = self.api
        intent = target.get("intent")
        candidates: list[str] = []
        if intent:
            if api.link.semantic_pending():
                await api.link.wait_semantic()
            ranked = api.intent_candidates(intent, live_only=on_offline == "fail")
            if not ranked:
                raise ApiError(api_errors.NO_LIVE_INSTANCE, errors.NO_AGENT_FOR_INTENT)
            agent, candidates = ranked[0], ranked[1 : limits.MAX_INTENT_CANDIDATES]
        else:
            agent = target["agent"]
            if api.record(agent) is None:
                raise ApiError(api_errors.NOT_FOUND, errors.UNKNOWN_AGENT.format(name=agent))
        now = self._clock_ms()
        task = Task(
            task_id,
            agent,
            payload,
            skill=target.get("skill"),
            created_ms=now,
            deadline_ms=max(deadline_ms, now + 1),
            on_offline=on_offline,
            sender=run.sender,
            intent=intent,
            candidates=candidates,
        )
        task.waiters.append(waiter)
        return task

    # -- outcomes ---------------------------------------------------------------------------------

    def _expect(self, task_id: str) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._waiting[task_id] = fut
        return fut

    def _on_outcome(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        fut = self._waiting.pop(subject[len(self._inbox) :], None)
        if fut is not None and not fut.done():
            fut.set_result(payload)

    @staticmethod
    def _read_outcome(payload: bytes) -> Outcome:
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return (False, None, "invalid task outcome", api_errors.AGENT_FAILED)
        if body.get("error"):
            return (False, None, str(body["error"]), int(body.get("code") or api_errors.AGENT_FAILED))
        if "result" in body and "output" not in body:
            return (True, body.get("result"), None, 0)
        return (True, body.get("output"), None, 0)


def task_outcome(task: Task) -> Outcome:
    """The outcome of a task that had already ended (found after a restart)."""
    if task.state == COMPLETED:
        return (True, task.output, None, 0)
    return (False, None, task.error or task.state, outcome_code(task))
