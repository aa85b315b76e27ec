"""A tool instance on its own nats-py connection, for the tool, pipeline and REST tests.

It registers a JSON-schema'd tool and answers each call with ``fn(arguments)``.
"""

from __future__ import annotations

import json
from typing import Any

import nats

from helpers.agents import API, call


class Tool:
    """One tool instance on its own nats-py connection; ``fn(arguments)`` computes the result."""

    def __init__(self, url: str, name: str, fn: Any = None, *, hold: bool = False, **connect: Any) -> None:
        self.url = url
        self.connect = connect
        self.name = name
        self.fn = fn or (lambda args: args)
        self.hold = hold
        self.received: list[dict[str, Any]] = []
        self.cancels: list[str] = []
        self.pending: list[Any] = []
        self.nc: Any = None
        self.reg: dict[str, Any] = {}

    async def start(self, description: str = "", input_schema: dict | None = None, **register: Any) -> Tool:
        self.nc = await nats.connect(self.url, **self.connect)
        body = {
            "name": self.name,
            "description": description or f"the {self.name} tool",
            "input_schema": input_schema or {"type": "object"},
            **register,
        }
        self.reg = await call(self.nc, API + "TOOL.REGISTER", body)
        assert self.reg["error"] == "", self.reg
        await self.nc.subscribe(self.reg["serve_subject"], cb=self._on_msg)
        await self.nc.flush()
        return self

    async def _on_msg(self, msg) -> None:
        data = json.loads(msg.data)
        if data.get("cancel"):
            self.cancels.append(data["task_id"])
            return
        self.received.append(data)
        if self.hold:
            self.pending.append(msg)
            return
        await self._answer(msg)

    async def _answer(self, msg) -> None:
        data = json.loads(msg.data)
        try:
            body = {"result": self.fn(data["arguments"])}
        except Exception as exc:
            body = {"error": str(exc)}
        await msg.respond(json.dumps(body).encode())

    async def release(self) -> None:
        pending, self.pending = self.pending, []
        for msg in pending:
            await self._answer(msg)

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()
