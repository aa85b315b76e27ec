"""In-process stand-ins for the agent API unit tests: a broker, client connections, echo agents.

They run on a real Router without sockets, so the services can be tested in one event loop.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson

from robustmq.agents.api import AgentApiService
from robustmq.agents.api.journal import task_journal
from robustmq.agents.journal import StoreJournal
from robustmq.config import Settings
from robustmq.router import Router

_ids = itertools.count(1)


class FakeConnection:
    """What the router exposes as ``current_origin`` while it delivers a client's publish."""

    protocol = "nats"

    def __init__(self, user: str | None = None, name: str = "") -> None:
        self.client_id = next(_ids)
        self.user = user
        self.name = name
        self.remote = "127.0.0.1:1"
        self._on_close: list = []
        self.closed = False

    def add_close_callback(self, fn) -> None:
        self._on_close.append(fn)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for fn in self._on_close:
                fn()


class FakeBroker:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.router = Router()


def publish_as(router: Router, origin: Any, subject: str, body: bytes, reply: str | None = None) -> int:
    return router.publish(subject, body, reply, origin=origin)


async def request_as(
    router: Router, origin: Any, subject: str, body: Any = None, timeout: float = 5.0
) -> dict[str, Any]:
    """A request from ``origin``; the reply body as a dict."""
    loop = asyncio.get_running_loop()
    inbox = router.new_inbox()
    fut = loop.create_future()

    def got(subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        if not fut.done():
            fut.set_result(orjson.loads(payload))

    sub = router.subscribe(inbox, got)
    try:
        data = body if isinstance(body, bytes) else orjson.dumps(body) if body is not None else b""
        publish_as(router, origin, subject, data, inbox)
        return await asyncio.wait_for(fut, timeout)
    finally:
        router.unsubscribe(sub)


class EchoInstance:
    """An agent instance written directly on the router: replies ``{"output": input}``.

    ``hold=True`` keeps requests unanswered until ``release()``; ``fail`` replies with an error.
    """

    def __init__(
        self,
        router: Router,
        serve_subject: str,
        hold: bool = False,
        fail: str | None = None,
        owner: Any = None,
    ) -> None:
        self.router = router
        self.hold = hold
        self.fail = fail
        self.received: list[dict[str, Any]] = []
        self.headers: list[bytes | None] = []
        self.cancels: list[str] = []
        self.pending: list[tuple[str, Any]] = []
        self.sub = router.subscribe(serve_subject, self._deliver, owner=owner)

    def _deliver(self, subject: str, reply: str | None, headers: bytes | None, payload: bytes) -> None:
        msg = orjson.loads(payload)
        if msg.get("cancel"):
            self.cancels.append(msg["task_id"])
            return
        self.received.append(msg)
        self.headers.append(headers)
        if self.hold:
            self.pending.append((reply, msg))
            return
        self._answer(reply, msg)

    def _answer(self, reply: str | None, msg: dict[str, Any]) -> None:
        body = {"error": self.fail} if self.fail else {"output": msg["input"]}
        self.router.publish(reply, orjson.dumps(body))

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for reply, msg in pending:
            self._answer(reply, msg)

    def stop(self) -> None:
        self.router.unsubscribe(self.sub)


def card(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"the {name} agent",
        "version": "1.0.0",
        "skills": [{"id": "echo", "name": "echo", "description": "repeat the input", "tags": ["test"]}],
        **extra,
    }


async def start_service(broker: FakeBroker | None = None, journal: StoreJournal | None = None):
    broker = broker or FakeBroker()
    service = AgentApiService(
        broker.router, auth_enabled=broker.settings.auth.enabled, journal=journal or task_journal(None)
    )
    await service.start()
    return broker, service
