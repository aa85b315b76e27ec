"""Tool calls: the agent API's invoker with the tool wire format and a check of every result.

An instance receives ``{"task_id", "arguments", "deadline_ms"}`` and answers ``{"result"}`` or
``{"error"}``; a result that breaks the tool's ``output_schema`` fails the task (502).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from robustmq.agents.api.invoke import Invoker, _latency_ms, outcome_code
from robustmq.agents.api.tasks import Task
from robustmq.agents.tools import errors
from robustmq.agents.tools.registry import ToolRecord, violations


class ToolInvoker(Invoker):
    """Routing, deadlines, queueing and retries as for agents; ``tools(name)`` finds a tool's record."""

    def __init__(self, *args: Any, tools: Callable[[str], ToolRecord | None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tools = tools

    def work_body(self, task: Task) -> bytes:
        return orjson.dumps({"task_id": task.id, "arguments": task.input, "deadline_ms": task.deadline_ms})

    def read_result(self, task: Task, answer: dict[str, Any]) -> tuple[Any, str | None]:
        result = answer.get("result")
        record = self._tools(task.agent)
        if record is not None and record.output_validator is not None:
            found = violations(record.output_validator, result)
            if found:
                first = found[0]
                return None, errors.BAD_RESULT.format(detail=f"{first['path']}: {first['message']}")
        return result, None

    def outcome_reply(self, task: Task, now_ms: int) -> dict[str, Any]:
        return tool_outcome_reply(task)

    def fail_waiting(self, name: str, code: int, text: str) -> int:
        """End every call of ``name`` still queued for an instance (its tool was deleted)."""
        q = self._waiting.pop(name, None)
        ended = 0
        while q:
            task = q.popleft()
            if not task.queued or task.finished or task.agent != name:
                continue
            task.queued = False
            task.reply_code = code
            self._finish(task, "rejected" if task.attempts == 0 else "failed", error=text)
            ended += 1
        return ended

    def _on_agent_reply(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        task = self._running.get(subject[len(self._inbox) :])
        if task is not None and task.finished:  # canceled through TASK.CANCEL meanwhile
            self._running.pop(task.id, None)
            self._release(task)
            self.drain(task.agent)
            return
        super()._on_agent_reply(subject, reply, headers, payload)


def tool_outcome_reply(task: Task) -> dict[str, Any]:
    """The reply of a sync ``TOOL.INVOKE`` once its task has ended."""
    if task.state == "completed":
        return {
            "error": "",
            "task_id": task.id,
            "state": "completed",
            "result": task.output,
            "instance_id": task.instance_id,
            "latency_ms": _latency_ms(task),
        }
    return {
        "error": task.error or task.state,
        "code": outcome_code(task),
        "task_id": task.id,
        "state": task.state,
        "instance_id": task.instance_id,
    }
