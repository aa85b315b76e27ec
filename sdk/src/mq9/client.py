"""The asyncio client: mailboxes, invocations, tasks, discovery, tools and pipelines over one connection.

Every operation is a NATS request with a JSON body; an ``"error"`` in the reply becomes an
``Mq9Error`` subclass (``mq9.errors``). Reconnection is nats-py's, retried for ever.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NatsConnection

from mq9 import defaults, errors, subjects
from mq9.logs import logger
from mq9.messages import Message, Payload, encode_payload, send_headers
from mq9.task import Task

log = logger.getChild("client")

Callback = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class AgentMatch:
    """One agent found by ``discover``: its name, relevance score, liveness and AgentCard."""

    name: str
    score: float = 0.0
    status: str = ""
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return str(self.card.get("description", ""))

    @property
    def skills(self) -> list[str]:
        return [str(s.get("id") or s.get("name")) for s in self.card.get("skills") or []]


@dataclass(frozen=True)
class Invocation:
    """The whole reply of a finished invocation, for callers that want more than the output."""

    output: Any
    task_id: str = ""
    agent: str = ""
    instance_id: str = ""
    latency_ms: float = 0.0
    reply: dict[str, Any] = field(default_factory=dict)


def _body(data: dict[str, Any] | None) -> bytes:
    if data is None:
        return b"{}"
    return json.dumps({k: v for k, v in data.items() if v is not None}, default=str).encode()


def _timeout_ms(timeout_s: float | None) -> int | None:
    return None if timeout_s is None else max(1, int(timeout_s * 1000))


class Client:
    """``async with Client("nats://127.0.0.1:4222") as c: ...``"""

    def __init__(
        self,
        servers: str | list[str] = defaults.DEFAULT_SERVERS,
        *,
        name: str | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        request_timeout: float = defaults.REQUEST_TIMEOUT_S,
        connect_timeout: float = defaults.CONNECT_TIMEOUT_S,
        max_reconnect_attempts: int = -1,
    ) -> None:
        self.servers = servers
        self.name = name or "mq9-python"
        self.request_timeout = request_timeout
        self._auth = {k: v for k, v in (("user", user), ("password", password), ("token", token)) if v}
        self._connect_timeout = connect_timeout
        self._max_reconnect_attempts = max_reconnect_attempts
        self._nc: NatsConnection | None = None
        self._on_reconnect: list[Callback] = []

    # -- connection ---------------------------------------------------------------------------

    @property
    def nc(self) -> NatsConnection:
        """The nats-py connection, for anything the SDK does not wrap."""
        if self._nc is None or self._nc.is_closed:
            raise errors.Mq9Error(errors.NOT_CONNECTED)
        return self._nc

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def on_reconnect(self, callback: Callback) -> None:
        """Run ``await callback()`` after every reconnection (agents re-register there)."""
        if callback not in self._on_reconnect:
            self._on_reconnect.append(callback)

    async def connect(self) -> Client:
        if self._nc is not None and not self._nc.is_closed:
            return self

        async def reconnected() -> None:
            log.info("reconnected", extra={"server": str(self._nc.connected_url.netloc if self._nc else "")})
            for callback in list(self._on_reconnect):
                try:
                    await callback()
                except Exception:
                    log.exception("reconnect callback failed")

        async def disconnected() -> None:
            log.info("disconnected", extra={"client": self.name})

        async def error(exc: Exception) -> None:
            log.warning("connection error: %s", exc, extra={"client": self.name})

        try:
            nc = await nats.connect(
                self.servers,
                name=self.name,
                connect_timeout=self._connect_timeout,
                reconnect_time_wait=defaults.RECONNECT_WAIT_S,
                # a first connection that cannot be made fails fast; once up, reconnect as configured
                max_reconnect_attempts=defaults.CONNECT_ATTEMPTS,
                reconnected_cb=reconnected,
                disconnected_cb=disconnected,
                error_cb=error,
                **self._auth,
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise errors.Mq9Error(
                errors.CANNOT_CONNECT.format(servers=self.servers, detail=exc or type(exc).__name__),
                code=errors.UNAVAILABLE,
            ) from None
        nc.options["max_reconnect_attempts"] = self._max_reconnect_attempts
        self._nc = nc
        return self

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.drain()
            except Exception:
                await nc.close()

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- requests -----------------------------------------------------------------------------

    async def request(
        self,
        subject: str,
        body: dict[str, Any] | bytes | None = None,
        *,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One request; the JSON reply, or the ``Mq9Error`` its ``error`` names."""
        data = body if isinstance(body, bytes) else _body(body)
        wait_s = self.request_timeout if timeout is None else timeout
        try:
            msg = await self.nc.request(subject, data, timeout=wait_s, headers=headers)
        except nats.errors.NoRespondersError:
            raise errors.Mq9Error(
                errors.NO_RESPONDERS.format(subject=subject), code=errors.UNAVAILABLE
            ) from None
        except nats.errors.TimeoutError:
            raise errors.DeadlineExceeded(
                errors.REQUEST_TIMEOUT.format(subject=subject, timeout_s=wait_s)
            ) from None
        try:
            reply = json.loads(msg.data) if msg.data else {}
        except ValueError:
            raise errors.Mq9Error(errors.NOT_JSON.format(subject=subject)) from None
        if not isinstance(reply, dict):
            raise errors.Mq9Error(errors.NOT_JSON.format(subject=subject))
        if reply.get("error"):
            raise errors.error_from_reply(reply)
        return reply

    # -- mailboxes (mq9) ------------------------------------------------------------------------

    async def create_mailbox(
        self, name: str | None = None, ttl: int | None = None, desc: str | None = None
    ) -> str:
        """Create a mailbox; its address (``name``, or a generated one). ``ttl`` seconds, 0 = never."""
        reply = await self.request(subjects.MAILBOX_CREATE, {"name": name, "ttl": ttl, "desc": desc})
        return str(reply.get("mail_address") or name or "")

    async def send(
        self,
        mailbox: str,
        payload: Payload,
        *,
        priority: str | None = None,
        ttl: int | None = None,
        delay: int | None = None,
        key: str | None = None,
        tags: Iterable[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Store a message; its ``msg_id`` (``-1`` for a delayed message, numbered on release)."""
        hdrs = send_headers(priority, ttl, delay, key, tags, headers)
        reply = await self.request(subjects.msg_send(mailbox), encode_payload(payload), headers=hdrs or None)
        return int(reply.get("msg_id", 0))

    async def fetch(
        self,
        mailbox: str,
        *,
        group: str | None = None,
        num: int | None = None,
        deliver: str | None = None,
        from_time: int | None = None,
        from_id: int | None = None,
        force_deliver: bool | None = None,
        max_wait_ms: int | None = None,
    ) -> list[Message]:
        """Pull messages, critical first, then urgent, then normal. Nothing moves until ``ack``."""
        config = {k: v for k, v in (("num_msgs", num), ("max_wait_ms", max_wait_ms)) if v is not None}
        body = {
            "group_name": group,
            "deliver": deliver,
            "from_time": from_time,
            "from_id": from_id,
            "force_deliver": force_deliver,
            "config": config or None,
        }
        wait_s = self.request_timeout + (max_wait_ms or 0) / 1000.0
        reply = await self.request(subjects.msg_fetch(mailbox), body, timeout=wait_s)
        return [Message.from_record(r, mailbox) for r in reply.get("messages") or []]

    async def ack(self, mailbox: str, *, group: str, msg_id: int) -> None:
        """Commit ``group``'s position past ``msg_id``: cumulative, across every priority."""
        await self.request(
            subjects.msg_ack(mailbox), {"group_name": group, "mail_address": mailbox, "msg_id": int(msg_id)}
        )

    async def query(
        self,
        mailbox: str,
        *,
        key: str | None = None,
        tags: list[str] | None = None,
        since: int | None = None,
        limit: int | None = None,
    ) -> list[Message]:
        """Read without consuming: by key, else by any of ``tags``, else since a time (seconds), else all."""
        reply = await self.request(
            subjects.msg_query(mailbox), {"key": key, "tags": tags, "since": since, "limit": limit}
        )
        return [Message.from_record(r, mailbox) for r in reply.get("messages") or []]

    async def delete(self, mailbox: str, msg_id: int) -> bool:
        reply = await self.request(subjects.msg_delete(mailbox, int(msg_id)), b"")
        return bool(reply.get("deleted", True))

    # -- agents ---------------------------------------------------------------------------------

    def _invoke_body(
        self,
        input: Any,
        skill: str | None,
        timeout: float | None,
        wait: bool,
        on_offline: str | None,
        retries: int | None,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        return {
            "input": {} if input is None else input,
            "skill": skill,
            "timeout_ms": _timeout_ms(timeout),
            "mode": "sync" if wait else "async",
            "on_offline": on_offline,
            "retries": retries,
            "idempotency_key": idempotency_key,
        }

    async def _invoke(
        self, subject: str, body: dict[str, Any], timeout: float | None, wait: bool, agent: str, details: bool
    ) -> Any:
        deadline_s = defaults.INVOKE_TIMEOUT_S if timeout is None else timeout
        wait_s = deadline_s + defaults.DEADLINE_GRACE_S if wait else self.request_timeout
        reply = await self.request(subject, body, timeout=wait_s)
        if not wait:
            return Task(self, str(reply["task_id"]), agent=str(reply.get("agent") or agent), reply=reply)
        if not details:
            return reply.get("output")
        return Invocation(
            output=reply.get("output"),
            task_id=str(reply.get("task_id", "")),
            agent=str(reply.get("agent") or agent),
            instance_id=str(reply.get("instance_id", "")),
            latency_ms=float(reply.get("latency_ms") or 0.0),
            reply=reply,
        )

    async def invoke(
        self,
        agent: str,
        input: Any = None,
        *,
        skill: str | None = None,
        timeout: float | None = None,
        wait: bool = True,
        on_offline: str | None = None,
        retries: int | None = None,
        idempotency_key: str | None = None,
        details: bool = False,
    ) -> Any:
        """Call a live instance of ``agent``; its output, or a ``Task`` with ``wait=False``.

        ``timeout`` (seconds, default 30) is the task's deadline. ``on_offline="queue"`` keeps the
        task until an instance is live instead of failing with ``NoLiveAgent``.
        """
        body = self._invoke_body(input, skill, timeout, wait, on_offline, retries, idempotency_key)
        return await self._invoke(subjects.agent_op("INVOKE", agent), body, timeout, wait, agent, details)

    async def invoke_intent(
        self,
        intent: str,
        input: Any = None,
        *,
        skill: str | None = None,
        timeout: float | None = None,
        wait: bool = True,
        on_offline: str | None = None,
        retries: int | None = None,
        idempotency_key: str | None = None,
        details: bool = False,
    ) -> Any:
        """Say what you need in words; the broker picks the best live agent (with failover)."""
        body = self._invoke_body(input, skill, timeout, wait, on_offline, retries, idempotency_key)
        body["intent"] = intent
        return await self._invoke(subjects.INVOKE_BY_INTENT, body, timeout, wait, "", details)

    async def discover(
        self,
        text: str | None = None,
        *,
        semantic: str | None = None,
        capability: str | None = None,
        tags: list[str] | None = None,
        live_only: bool | None = None,
        limit: int | None = None,
        page: int | None = None,
    ) -> list[AgentMatch]:
        """Agents by capability (skill id or tag), by keywords (``text``) or by meaning (``semantic``)."""
        reply = await self.request(
            subjects.AGENT_DISCOVER,
            {
                "capability": capability,
                "text": text,
                "semantic": semantic,
                "tags": tags,
                "live_only": live_only,
                "limit": limit,
                "page": page,
            },
        )
        return [
            AgentMatch(
                name=str(a.get("name", "")),
                score=float(a.get("score") or 0.0),
                status=str(a.get("status") or ""),
                card=dict(a.get("card") or {}),
            )
            for a in reply.get("agents") or []
        ]

    async def agent_info(self, name: str) -> dict[str, Any]:
        return dict((await self.request(subjects.agent_op("INFO", name)))["agent"])

    async def agent_status(self, name: str) -> dict[str, Any]:
        reply = await self.request(subjects.agent_op("STATUS", name))
        reply.pop("error", None)
        return reply

    async def list_agents(
        self, *, status: str | None = None, limit: int | None = None, page: int | None = None
    ) -> list[dict[str, Any]]:
        reply = await self.request(subjects.AGENT_LIST, {"status": status, "limit": limit, "page": page})
        return list(reply.get("agents") or [])

    async def deregister(self, name: str, instance_id: str | None = None) -> None:
        """Remove an agent (or one instance of it) from the registry."""
        await self.request(subjects.agent_op("DEREGISTER", name), {"instance_id": instance_id})

    # -- tasks --------------------------------------------------------------------------------

    def task(self, task_id: str) -> Task:
        """A handle on an existing task, to follow or cancel it."""
        return Task(self, task_id)

    # -- tools --------------------------------------------------------------------------------

    async def invoke_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        on_offline: str | None = None,
        retries: int | None = None,
    ) -> Any:
        """Call a tool; its ``result``. Arguments are checked against its schema first (400)."""
        wait_s = (defaults.INVOKE_TIMEOUT_S if timeout is None else timeout) + defaults.DEADLINE_GRACE_S
        body = {
            "arguments": arguments or {},
            "timeout_ms": _timeout_ms(timeout),
            "on_offline": on_offline,
            "retries": retries,
        }
        reply = await self.request(subjects.tool_op("INVOKE", name), body, timeout=wait_s)
        return reply.get("result")

    async def list_tools(self) -> list[dict[str, Any]]:
        return list((await self.request(subjects.TOOL_LIST)).get("tools") or [])

    async def discover_tools(
        self, text: str | None = None, *, semantic: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        reply = await self.request(
            subjects.TOOL_DISCOVER, {"text": text, "semantic": semantic, "limit": limit}
        )
        return list(reply.get("tools") or [])

    # -- pipelines ----------------------------------------------------------------------------

    async def create_pipeline(self, spec: dict[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """Define (or with ``replace=True`` redefine) a pipeline; a bad spec is a 400 with ``details``."""
        body = dict(spec)
        if replace:
            body["replace"] = True
        return await self.request(subjects.PIPELINE_CREATE, body)

    async def run_pipeline(
        self,
        name: str,
        input: Any = None,
        *,
        timeout: float | None = None,
        wait: bool = True,
        details: bool = False,
    ) -> Any:
        """Run a pipeline; its output (or the whole reply with ``details``, the run id with ``wait=False``)."""
        deadline_s = defaults.INVOKE_TIMEOUT_S if timeout is None else timeout
        reply = await self.request(
            subjects.pipeline_op("RUN", name),
            {"input": {} if input is None else input, "mode": "sync" if wait else "async",
             "timeout_ms": _timeout_ms(timeout)},
            timeout=deadline_s + defaults.DEADLINE_GRACE_S if wait else self.request_timeout,
        )  # fmt: skip
        if not wait:
            return str(reply["run_id"])
        return reply if details else reply.get("output")

    async def pipeline_status(self, run_id: str) -> dict[str, Any]:
        return await self.request(subjects.pipeline_op("STATUS", run_id))

    async def cancel_pipeline(self, run_id: str) -> dict[str, Any]:
        return await self.request(subjects.pipeline_op("CANCEL", run_id))

    async def list_pipelines(self) -> list[dict[str, Any]]:
        return list((await self.request(subjects.PIPELINE_LIST)).get("pipelines") or [])

    async def delete_pipeline(self, name: str) -> None:
        await self.request(subjects.pipeline_op("DELETE", name))
