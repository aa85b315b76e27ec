"""Agent API test clients on nats-py: the API prefix, a card, a JSON call and an echo agent instance.

The end-to-end, isolation, durability, tool and pipeline tests all drive agents through these.
"""

from __future__ import annotations

import json
from typing import Any

import nats

from helpers.waits import wait_for

API = "$mq9.AI.API."


def card(name: str, description: str = "", skills: list[dict] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "description": description or f"the {name} agent",
        "version": "1.0.0",
        "skills": skills
        or [{"id": "echo", "name": "echo", "description": "repeat the input", "tags": ["test"]}],
        "capabilities": {},
        "defaultInputModes": ["application/json"],
    }


async def call(nc, subject: str, body: Any = None, timeout: float = 5.0) -> dict[str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    msg = await nc.request(subject, data, timeout=timeout)
    return json.loads(msg.data)


class Agent:
    """One agent instance on its own nats-py connection: echoes ``input`` unless told otherwise."""

    def __init__(self, url: str, name: str, *, hold: bool = False, fail: str | None = None, **connect: Any):
        self.url = url
        self.name = name
        self.hold = hold
        self.fail = fail
        self.connect = connect
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str] | None] = []
        self.cancels: list[str] = []
        self.pending: list[Any] = []
        self.nc: Any = None
        self.reg: dict[str, Any] = {}

    async def start(self, card_body: dict | None = None, **register: Any) -> Agent:
        self.nc = await nats.connect(self.url, **self.connect)
        self.reg = await call(self.nc, API + "AGENT.REGISTER", {**(card_body or card(self.name)), **register})
        assert self.reg["error"] == "", self.reg
        await self.nc.subscribe(self.reg["serve_subject"], cb=self._on_msg)
        await self.nc.flush()
        return self

    @property
    def instance_id(self) -> str:
        return self.reg["instance_id"]

    async def _on_msg(self, msg) -> None:
        data = json.loads(msg.data)
        if data.get("cancel"):
            self.cancels.append(data["task_id"])
            return
        self.received.append(data)
        self.headers.append(msg.headers)
        if self.hold:
            self.pending.append(msg)
            return
        await self._answer(msg)

    async def _answer(self, msg) -> None:
        data = json.loads(msg.data)
        body = {"error": self.fail} if self.fail else {"output": data["input"]}
        await msg.respond(json.dumps(body).encode())

    async def release(self) -> None:
        pending, self.pending = self.pending, []
        for msg in pending:
            await self._answer(msg)

    async def event(self, task_id: str, type_: str, data: Any) -> None:
        await self.nc.publish(
            f"$mq9.AI.TASK.EVENT.{task_id}", json.dumps({"type": type_, "data": data}).encode()
        )

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()


async def wait_down(nc, name: str) -> None:
    """Until the broker has seen the agent's connection close."""
    await wait_for(lambda: call(nc, API + f"AGENT.STATUS.{name}"), lambda s: s["status"] == "down")
