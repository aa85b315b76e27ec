"""An agent in a few lines: decorate functions, ``start()``, and it is registered, live and served.

Each running ``Agent`` is one instance of its name: it registers an AgentCard built from its
skills, heartbeats, serves invocations on its serve subject, and works through its mailbox.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mq9 import defaults, errors, subjects
from mq9.card import Skill, Tool, build_card, check_name, skill_schemas
from mq9.client import Client
from mq9.context import TaskContext
from mq9.logs import logger
from mq9.worker import Handler, MailboxWorker

log = logger.getChild("agent")

F = TypeVar("F", bound=Callable[..., Any])
_RECENT_MAX = 1024  # work messages remembered to drop the copies of a subscription overlap


def default_mailbox(name: str) -> str:
    """``agent.<name>.inbox`` in mq9's address alphabet (lower-case letters, digits, dots)."""
    token = re.sub(r"[^a-z0-9]+", ".", name.lower()).strip(".") or "agent"
    return f"agent.{token}.inbox"


class _Running:
    """One invocation being served."""

    __slots__ = ("ctx", "task")

    def __init__(self, ctx: TaskContext, task: asyncio.Task[None]) -> None:
        self.ctx = ctx
        self.task = task


class Agent:
    """``agent = Agent("translator", servers=...)``; ``@agent.skill``; ``await agent.start()``."""

    def __init__(
        self,
        name: str,
        servers: str | list[str] = defaults.DEFAULT_SERVERS,
        *,
        description: str = "",
        version: str = "0.1.0",
        mailbox: str | None = None,
        max_concurrency: int = defaults.MAX_CONCURRENCY,
        metadata: dict[str, Any] | None = None,
        heartbeat_interval: float = defaults.HEARTBEAT_INTERVAL_S,
        url: str | None = None,
        provider: dict[str, str] | None = None,
        documentation_url: str | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        drain_timeout: float = defaults.DRAIN_TIMEOUT_S,
        cancel_grace: float = defaults.CANCEL_GRACE_S,
    ) -> None:
        self.name = check_name(name, "agent")
        self.description = description
        self.version = version
        self.mailbox = mailbox
        self.max_concurrency = max_concurrency
        self.metadata = dict(metadata or {})
        self.heartbeat_interval = heartbeat_interval
        self.url = url
        self.provider = provider
        self.documentation_url = documentation_url
        self.drain_timeout = drain_timeout
        self.cancel_grace = cancel_grace
        self.client = Client(servers, name=f"mq9-agent-{name}", user=user, password=password, token=token)
        self.skills: dict[str, Skill] = {}
        self.tools: dict[str, Tool] = {}
        self.instance_id = ""
        self.serve_subject = ""
        self.in_flight = 0
        self.processed = 0
        self.failed = 0
        self._message_handler: tuple[Handler, dict[str, Any]] | None = None
        self.worker: MailboxWorker | None = None  # the mailbox worker, once started
        self._serve_sub: Any = None
        self._running: dict[str, _Running] = {}
        self._recent: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._heartbeat: asyncio.Task[None] | None = None
        self._register_lock: asyncio.Lock | None = None
        self._slots: asyncio.Semaphore | None = None
        self._started = False
        self._stopping = False
        self._stopped: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, skills={list(self.skills)}, tools={list(self.tools)})"

    # -- declaring ------------------------------------------------------------------------------

    def skill(
        self,
        fn: F | None = None,
        *,
        id: str | None = None,
        name: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        examples: list[str] | None = None,
    ) -> Any:
        """Declare a skill (``@agent.skill`` or ``@agent.skill(tags=[...])``); the first is the default."""

        def register(func: F) -> F:
            s = Skill.of(func, id=id, name=name, description=description, tags=tags, examples=examples)
            if s.id in self.skills:
                raise ValueError(f"agent {self.name} already has a skill {s.id!r}")
            self.skills[s.id] = s
            return func

        return register(fn) if fn is not None else register

    def tool(
        self,
        fn: F | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        max_concurrency: int | None = None,
    ) -> Any:
        """Declare a tool, registered in the broker's tool registry with its input schema."""

        def register(func: F) -> F:
            t = Tool.of(func, name=name, description=description, max_concurrency=max_concurrency)
            if t.name in self.tools:
                raise ValueError(f"agent {self.name} already has a tool {t.name!r}")
            self.tools[t.name] = t
            return func

        return register(fn) if fn is not None else register

    def on_message(
        self,
        fn: F | None = None,
        *,
        group: str | None = None,
        batch: int = defaults.FETCH_BATCH,
        deliver: str = "earliest",
        max_attempts: int = defaults.MAX_DELIVERY_ATTEMPTS,
    ) -> Any:
        """Handle the agent's mailbox: priority order, acked once the handler returns."""

        def register(func: F) -> F:
            if self._message_handler is not None:
                raise ValueError(f"agent {self.name} already has a mailbox handler")
            options = {"group": group, "batch": batch, "deliver": deliver, "max_attempts": max_attempts}
            self._message_handler = (func, options)
            if self.mailbox is None:
                self.mailbox = default_mailbox(self.name)
            return func

        return register(fn) if fn is not None else register

    def card(self) -> dict[str, Any]:
        """The A2A AgentCard this agent registers."""
        return build_card(
            self.name, self.description, self.version, list(self.skills.values()),
            url=self.url, provider=self.provider, documentation_url=self.documentation_url,
        )  # fmt: skip

    def registration(self) -> dict[str, Any]:
        """The body of ``$mq9.AI.API.AGENT.REGISTER``: the card plus mailbox, concurrency, metadata."""
        body = self.card()
        metadata = dict(self.metadata)
        if self.skills:
            metadata.setdefault("mq9.schemas", skill_schemas(list(self.skills.values())))
        body["max_concurrency"] = self.max_concurrency
        body["heartbeat_interval_ms"] = int(self.heartbeat_interval * 1000)
        body["metadata"] = metadata
        if self.mailbox:
            body["mailbox"] = self.mailbox
        return body

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> Agent:
        """Connect, register, and serve; returns once registered and subscribed."""
        if self._started:
            return self
        self._register_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(self.max_concurrency)
        self._stopped = asyncio.Event()
        self._stopping = False
        await self.client.connect()
        try:
            await self._register()
        except BaseException:
            await self.client.close()
            raise
        self.client.on_reconnect(self._register)
        self._heartbeat = asyncio.create_task(self._heartbeats(), name=f"mq9-heartbeat-{self.name}")
        if self._message_handler is not None and self.mailbox:
            handler, options = self._message_handler
            self.worker = MailboxWorker(
                self.client, self.mailbox, options["group"] or self.name, handler,
                batch=options["batch"], deliver=options["deliver"], max_attempts=options["max_attempts"],
                name=self.name,
            )  # fmt: skip
            self.worker.start()
        self._started = True
        log.info(
            "agent started",
            extra={"agent": self.name, "instance_id": self.instance_id, "skills": list(self.skills)},
        )
        return self

    async def stop(self) -> None:
        """Finish the work in flight, deregister this instance, and close the connection."""
        if not self._started or self._stopping:
            if self._stopped is not None:
                await self._stopped.wait()
            return
        self._stopping = True
        try:
            if self.worker is not None:
                await self.worker.stop()
            await self._drain_invocations()
            if self._heartbeat is not None:
                self._heartbeat.cancel()
            try:
                if self.instance_id:
                    await self.client.deregister(self.name, self.instance_id)
            except Exception as exc:  # the broker is gone: the instance is down with the connection
                log.debug("deregister failed: %s", exc, extra={"agent": self.name})
            for sub in [self._serve_sub, *(t.subscription for t in self.tools.values())]:
                if sub is not None:
                    try:
                        await sub.unsubscribe()
                    except Exception:
                        pass
            await self._drain_invocations()
            await self.client.close()
        finally:
            self._started = False
            log.info("agent stopped", extra={"agent": self.name, "processed": self.processed})
            if self._stopped is not None:
                self._stopped.set()

    async def _drain_invocations(self) -> None:
        deadline = time.monotonic() + self.drain_timeout
        while self._running and time.monotonic() < deadline:
            tasks = [r.task for r in self._running.values()]
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))

    async def __aenter__(self) -> Agent:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Start, then wait until ``stop()`` is called (from a signal handler, another task, ...)."""
        await self.start()
        assert self._stopped is not None
        await self._stopped.wait()

    def run(self) -> None:
        """Run the agent until SIGINT or SIGTERM, then stop it cleanly. Blocks."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, stop.set)
                except (NotImplementedError, RuntimeError):  # not the main thread, or no signals
                    pass
            signalled = asyncio.ensure_future(stop.wait())
            starting = asyncio.ensure_future(self.start())
            await asyncio.wait([signalled, starting], return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():  # a signal while connecting or registering: give up quietly
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                await self.client.close()
                return
            starting.result()  # raises when the agent could not start
            assert self._stopped is not None
            stopped = asyncio.ensure_future(self._stopped.wait())
            await asyncio.wait([signalled, stopped], return_when=asyncio.FIRST_COMPLETED)
            signalled.cancel()
            stopped.cancel()
            await self.stop()

        asyncio.run(main())

    # -- registration and liveness ----------------------------------------------------------------

    async def _register(self) -> None:
        """Register (again, after a reconnection) and serve the new serve subjects."""
        assert self._register_lock is not None
        if self._stopping:
            return
        async with self._register_lock:
            self._recent.clear()

            async def register_agent() -> str:
                reply = await self.client.request(subjects.AGENT_REGISTER, self.registration())
                self.instance_id = str(reply["instance_id"])
                self.serve_subject = str(
                    reply.get("serve_subject") or f"$mq9.AI.INVOKE.{self.name}.{self.instance_id}"
                )
                interval_ms = reply.get("heartbeat_interval_ms")
                if isinstance(interval_ms, int | float) and interval_ms > 0:
                    self.heartbeat_interval = interval_ms / 1000.0
                return self.serve_subject

            old = self._serve_sub
            self._serve_sub = await self._serve_assigned(
                f"{subjects.PREFIX}.INVOKE.{self.name}.*", register_agent, self._on_invoke
            )
            if old is not None:
                await _quietly_unsubscribe(old)
            for tool in self.tools.values():
                try:
                    await self._register_tool(tool)
                except errors.Mq9Error as exc:  # the skills still serve; the tool is not offered
                    tool.instance_id = ""
                    log.warning(
                        "tool %s not registered: %s",
                        tool.name,
                        exc,
                        extra={"agent": self.name, "tool": tool.name},
                    )

    async def _register_tool(self, tool: Tool) -> None:
        async def register_tool() -> str:
            body = {**tool.registration(), "heartbeat_interval_ms": int(self.heartbeat_interval * 1000)}
            reply = await self.client.request(subjects.TOOL_REGISTER, body)
            tool.instance_id = str(reply["instance_id"])
            tool.serve_subject = str(
                reply.get("serve_subject") or f"$mq9.AI.TOOL.{tool.name}.{tool.instance_id}"
            )
            return tool.serve_subject

        old = tool.subscription
        tool.subscription = await self._serve_assigned(
            f"{subjects.PREFIX}.TOOL.{tool.name}.*", register_tool, self._tool_callback(tool)
        )
        if old is not None:
            await _quietly_unsubscribe(old)

    async def _serve_assigned(
        self, wildcard: str, register: Callable[[], Awaitable[str]], handle: Callable[[Any], Awaitable[None]]
    ) -> Any:
        """Register, then serve the subject the broker assigned, missing nothing in between.

        The broker may send work the moment the instance exists, before the reply carrying its
        subject has arrived, so a wildcard subscription is in place first; it is drained once the
        exact subscription is active. Copies received on both during the overlap are dropped.
        """
        nc = self.client.nc
        early: list[Any] = []
        assigned: list[str] = []

        async def once(msg: Any) -> None:
            key = (msg.reply, msg.data)
            if key in self._recent:
                return
            self._recent[key] = None
            while len(self._recent) > _RECENT_MAX:
                self._recent.popitem(last=False)
            await handle(msg)

        async def on_early(msg: Any) -> None:
            if not assigned:
                early.append(msg)
            elif msg.subject == assigned[0]:
                await once(msg)

        prelude = await nc.subscribe(wildcard, cb=on_early)
        try:
            subject = await register()
            assigned.append(subject)
            sub = await nc.subscribe(subject, cb=once)
            await nc.flush()
            for msg in early:
                if msg.subject == subject:
                    await once(msg)
        finally:
            try:
                await prelude.drain()
            except Exception:
                await _quietly_unsubscribe(prelude)
        return sub

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            beat = {"instance_id": self.instance_id, "in_flight": self.in_flight, "processed": self.processed}
            if await self._beat(subjects.agent_op("HEARTBEAT", self.name), beat):
                await self._register_again(self._register)
            for tool in self.tools.values():
                if tool.instance_id and await self._beat(
                    subjects.tool_op("HEARTBEAT", tool.name), {"instance_id": tool.instance_id}
                ):
                    await self._register_again(lambda tool=tool: self._register_tool(tool))

    async def _beat(self, subject: str, body: dict[str, Any]) -> bool:
        """Send one heartbeat; True when the broker has forgotten the instance."""
        try:
            await self.client.request(subject, body)
        except errors.NotFound:
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # disconnected or the broker is busy: the next beat tries again
            log.debug("heartbeat failed: %s", exc, extra={"agent": self.name})
        return False

    async def _register_again(self, register: Callable[[], Awaitable[None]]) -> None:
        log.info("instance unknown to the broker; registering again", extra={"agent": self.name})
        try:
            await register()
        except Exception as exc:
            log.warning("registering again failed: %s", exc, extra={"agent": self.name})

    # -- serving --------------------------------------------------------------------------------

    def _pick_skill(self, skill_id: str | None) -> Skill:
        if skill_id:
            skill = self.skills.get(skill_id)
            if skill is None:
                raise errors.BadRequest(errors.UNKNOWN_SKILL.format(skill=skill_id, agent=self.name))
            return skill
        if not self.skills:
            raise errors.BadRequest(errors.NO_SKILLS.format(agent=self.name))
        return next(iter(self.skills.values()))

    async def _on_invoke(self, msg: Any) -> None:
        try:
            request = json.loads(msg.data)
            if not isinstance(request, dict):
                raise ValueError(errors.NOT_AN_OBJECT)
        except ValueError as exc:
            if msg.reply:
                await self.client.nc.publish(
                    msg.reply, json.dumps({"error": f"invalid request: {exc}"}).encode()
                )
            return
        task_id = str(request.get("task_id") or "")
        if request.get("cancel"):
            self._cancel(task_id)
            return
        ctx = TaskContext(
            task_id, str(request.get("skill") or ""), request.get("deadline_ms"), self.client.nc.publish,
            asyncio.get_running_loop(), agent=self.name, instance_id=self.instance_id,
        )  # fmt: skip
        key = task_id or f"anon-{id(ctx)}"
        task = asyncio.create_task(self._serve(request, msg.reply, ctx, key))
        self._running[key] = _Running(ctx, task)

    def _cancel(self, task_id: str) -> None:
        running = self._running.get(task_id)
        if running is None:
            return
        running.ctx._cancel()
        log.info("task cancelled", extra={"agent": self.name, "task_id": task_id})
        asyncio.get_running_loop().call_later(
            self.cancel_grace, lambda: running.task.done() or running.task.cancel()
        )

    async def _serve(self, request: dict[str, Any], reply: str, ctx: TaskContext, key: str) -> None:
        assert self._slots is not None
        try:
            async with self._slots:
                self.in_flight += 1
                try:
                    body = await self._run_skill(request, ctx)
                finally:
                    self.in_flight -= 1
                    self.processed += 1
            if "error" in body:
                self.failed += 1
            await ctx._flush()
            if reply:
                await self.client.nc.publish(reply, _encode_reply(body))
        except Exception as exc:  # the connection went away: the broker retries or fails the task
            log.debug("could not reply: %s", exc, extra={"agent": self.name, "task_id": ctx.task_id})
        finally:
            self._running.pop(key, None)

    async def _run_skill(self, request: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        if ctx.cancelled:  # cancelled while it waited for a free slot: never started
            return {"error": errors.TASK_CANCELED}
        try:
            skill = self._pick_skill(request.get("skill"))
            ctx.skill = skill.id
            kwargs = skill.schema.bind(request.get("input"), f"skill {skill.id}")
            if skill.schema.context_param:
                kwargs[skill.schema.context_param] = ctx
            output = await _call(skill.schema.fn, skill.schema.is_async, kwargs)
            return {"output": skill.schema.dump_output(output)}
        except asyncio.CancelledError:
            if ctx.cancelled:
                return {"error": errors.TASK_CANCELED}
            raise
        except errors.Mq9Error as exc:
            return _error_body(exc.text, exc.details)
        except Exception as exc:
            log.warning("skill raised", exc_info=True, extra={"agent": self.name, "task_id": ctx.task_id})
            return {"error": f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__}

    def _tool_callback(self, tool: Tool) -> Callable[[Any], Any]:
        async def on_call(msg: Any) -> None:
            key = f"tool-{id(msg)}"
            task = asyncio.create_task(self._serve_tool(tool, msg, key))
            self._running[key] = _Running(
                TaskContext("", tool.name, None, self.client.nc.publish, asyncio.get_running_loop()), task
            )

        return on_call

    async def _serve_tool(self, tool: Tool, msg: Any, key: str) -> None:
        try:
            try:
                request = json.loads(msg.data)
                kwargs = tool.schema.bind(request.get("arguments"), f"tool {tool.name}")
                result = await _call(tool.schema.fn, tool.schema.is_async, kwargs)
                body: dict[str, Any] = {"result": tool.schema.dump_output(result)}
            except errors.Mq9Error as exc:
                body = _error_body(exc.text, exc.details)
            except Exception as exc:
                log.warning("tool raised", exc_info=True, extra={"agent": self.name, "tool": tool.name})
                body = {"error": f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__}
            self.processed += 1
            if msg.reply:
                await self.client.nc.publish(msg.reply, _encode_reply(body))
        except Exception as exc:
            log.debug("could not reply: %s", exc, extra={"agent": self.name, "tool": tool.name})
        finally:
            self._running.pop(key, None)


async def _call(fn: Callable[..., Any], is_async: bool, kwargs: dict[str, Any]) -> Any:
    if is_async:
        return await fn(**kwargs)
    return await asyncio.to_thread(fn, **kwargs)


def _error_body(text: str, details: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {"error": text}
    if details:
        body["details"] = details
    return body


def _encode_reply(body: dict[str, Any]) -> bytes:
    try:
        return json.dumps(body).encode()
    except (TypeError, ValueError) as exc:
        return json.dumps({"error": f"the output is not JSON: {exc}"}).encode()


async def _quietly_unsubscribe(sub: Any) -> None:
    try:
        await sub.unsubscribe()
    except Exception:
        pass
