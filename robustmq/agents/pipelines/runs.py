"""Pipeline runs: the state of one run and its steps, the checkpoint records, and their replay.

A run is journalled as records: ``run`` (started, with a copy of the spec), ``step`` (a step's
tasks were submitted), ``done`` (a step ended, with its output) and ``end``. Replaying them gives
back every run; a run without ``end`` continues from its ``done`` steps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELED = "canceled"
SKIPPED = "skipped"
PENDING = "pending"
STEP_SETTLED = frozenset({COMPLETED, SKIPPED})  # dependents may start
STEP_ENDED = frozenset({COMPLETED, SKIPPED, FAILED, CANCELED})


def new_run_id() -> str:
    return os.urandom(12).hex()


class StepRun:
    """One step of one run."""

    __slots__ = ("id", "state", "task_ids", "output", "error", "code", "latency_ms", "started_ns")

    def __init__(self, step_id: str) -> None:
        self.id = step_id
        self.state = PENDING
        self.task_ids: list[str] = []
        self.output: Any = None
        self.error: str | None = None
        self.code = 0
        self.latency_ms: float | None = None
        self.started_ns = 0

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "state": self.state,
            "task_id": self.task_ids[-1] if self.task_ids else None,
            "latency_ms": self.latency_ms,
            "output": self.output,
        }
        if len(self.task_ids) > 1:
            out["task_ids"] = list(self.task_ids)
        if self.error:
            out["error"] = self.error
        return out


class Run:
    """One run of a pipeline; ``spec`` is the definition as it was when the run started."""

    __slots__ = ("id", "pipeline", "spec", "input", "state", "output", "error", "code", "created_ms",
                 "deadline_ms", "finished_ms", "sender", "steps", "waiters", "started_ns", "driver",
                 "latency_ms", "resumed")  # fmt: skip

    def __init__(
        self,
        run_id: str,
        spec: dict[str, Any],
        input: Any,
        *,
        created_ms: int,
        deadline_ms: int,
        sender: str | None = None,
    ) -> None:
        self.id = run_id
        self.pipeline = spec["name"]
        self.spec = spec
        self.input = input
        self.state = RUNNING
        self.output: Any = None
        self.error: str | None = None
        self.code = 0
        self.created_ms = created_ms
        self.deadline_ms = deadline_ms
        self.finished_ms = 0
        self.sender = sender
        self.steps = {s["id"]: StepRun(s["id"]) for s in spec["steps"]}
        self.waiters: list[str] = []  # reply subjects of sync callers
        self.started_ns = time.perf_counter_ns()
        self.driver: Any = None  # the asyncio task running it
        self.latency_ms: float | None = None
        self.resumed = False  # continued after a restart: its steps wait for instances to return

    @property
    def finished(self) -> bool:
        return self.state != RUNNING

    def context(self) -> dict[str, Any]:
        """What templates read: the run's input and every settled step's output."""
        return {
            "input": self.input,
            "steps": {sid: {"output": s.output} for sid, s in self.steps.items() if s.state in STEP_SETTLED},
        }

    def view(self) -> dict[str, Any]:
        """The RUN / STATUS reply (the steps that have started so far)."""
        body: dict[str, Any] = {
            "error": self.error or "",
            "run_id": self.id,
            "pipeline": self.pipeline,
            "state": self.state,
            "output": self.output,
            "steps": {sid: s.view() for sid, s in self.steps.items() if s.state != PENDING},
            "created_ms": self.created_ms,
            "deadline_ms": self.deadline_ms,
        }
        if self.finished:
            body["latency_ms"] = self.latency_ms
            body["finished_ms"] = self.finished_ms
        if self.error:
            body["code"] = self.code
        return body

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.id,
            "pipeline": self.pipeline,
            "state": self.state,
            "created_ms": self.created_ms,
            "finished_ms": self.finished_ms,
        }

    # -- checkpoint records ---------------------------------------------------------------------

    def start_record(self) -> dict[str, Any]:
        return {
            "k": "run",
            "run_id": self.id,
            "spec": self.spec,
            "input": self.input,
            "created_ms": self.created_ms,
            "deadline_ms": self.deadline_ms,
            "sender": self.sender,
        }

    def step_record(self, step: StepRun) -> dict[str, Any]:
        return {"k": "step", "run_id": self.id, "step": step.id, "task_ids": step.task_ids}

    def done_record(self, step: StepRun) -> dict[str, Any]:
        return {
            "k": "done",
            "run_id": self.id,
            "step": step.id,
            "state": step.state,
            "output": step.output,
            "error": step.error,
            "code": step.code,
            "latency_ms": step.latency_ms,
            "task_ids": step.task_ids,
        }

    def end_record(self) -> dict[str, Any]:
        return {
            "k": "end",
            "run_id": self.id,
            "state": self.state,
            "output": self.output,
            "error": self.error,
            "code": self.code,
            "latency_ms": self.latency_ms,
            "finished_ms": self.finished_ms,
        }


def replay_runs(records: Iterable[dict[str, Any]]) -> dict[str, Run]:
    """Runs rebuilt from their checkpoint records, in the order they started.

    A step recorded as submitted but not done is left ``running`` with its task ids, for the
    runner to reattach to (or submit again).
    """
    runs: dict[str, Run] = {}
    for rec in records:
        kind = rec.get("k")
        run_id = rec.get("run_id")
        if kind == "run":
            try:
                run = Run(
                    run_id,  # type: ignore[arg-type]
                    rec["spec"],
                    rec.get("input"),
                    created_ms=rec.get("created_ms") or 0,
                    deadline_ms=rec.get("deadline_ms") or 0,
                    sender=rec.get("sender"),
                )
            except (KeyError, TypeError):
                continue
            run.started_ns = 0
            run.resumed = True
            runs[run.id] = run
            continue
        run = runs.get(run_id)  # type: ignore[arg-type]
        if run is None:
            continue
        step = run.steps.get(rec.get("step", ""))
        if kind == "step" and step is not None and step.state not in STEP_ENDED:
            step.state = RUNNING
            step.task_ids = list(rec.get("task_ids") or [])
        elif kind == "done" and step is not None:
            step.state = rec.get("state") or COMPLETED
            step.output = rec.get("output")
            step.error = rec.get("error")
            step.code = rec.get("code") or 0
            step.latency_ms = rec.get("latency_ms")
            step.task_ids = list(rec.get("task_ids") or [])
        elif kind == "end":
            run.state = rec.get("state") or FAILED
            run.output = rec.get("output")
            run.error = rec.get("error")
            run.code = rec.get("code") or 0
            run.latency_ms = rec.get("latency_ms")
            run.finished_ms = rec.get("finished_ms") or 0
    return runs
