"""Pipeline test helpers: an agent answering with a function, create/run calls, a wait on a run's state.

Shared by the pipeline end-to-end and durability tests.
"""

from __future__ import annotations

import json
from typing import Any

from helpers.agents import API, Agent, call
from helpers.waits import wait_for


class FnAgent(Agent):
    """An agent instance answering ``fn(input)``; an exception is its error."""

    def __init__(self, url: str, name: str, fn: Any, **kw: Any) -> None:
        super().__init__(url, name, **kw)
        self.fn = fn

    async def _answer(self, msg) -> None:
        data = json.loads(msg.data)
        try:
            body = {"output": self.fn(data["input"])}
        except Exception as exc:
            body = {"error": str(exc)}
        await msg.respond(json.dumps(body).encode())


async def create(nc, spec: dict[str, Any]) -> dict[str, Any]:
    reply = await call(nc, API + "PIPELINE.CREATE", spec)
    assert reply["error"] == "", reply
    return reply


async def run(nc, name: str, input: Any, timeout: float = 10.0, **extra: Any) -> dict[str, Any]:
    return await call(nc, API + f"PIPELINE.RUN.{name}", {"input": input, **extra}, timeout=timeout)


async def wait_state(nc, run_id: str, states: set[str], timeout: float = 10.0) -> dict[str, Any]:
    """Poll the run's status until its state is one of ``states``; returns that status."""
    return await wait_for(
        lambda: call(nc, API + f"PIPELINE.STATUS.{run_id}"), lambda s: s["state"] in states, timeout
    )
