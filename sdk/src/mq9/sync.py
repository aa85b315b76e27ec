"""A blocking facade over ``mq9.Client`` for scripts and notebooks.

The asyncio client runs on a private event loop in a daemon thread, so it works the same whether
or not the calling thread already runs a loop (as Jupyter does).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, TypeVar

from mq9 import defaults
from mq9.client import AgentMatch
from mq9.client import Client as AsyncClient
from mq9.messages import Message, Payload
from mq9.task import Task as AsyncTask
from mq9.task import TaskEvent

T = TypeVar("T")


class _Loop:
    """One event loop in one daemon thread; ``call(coro)`` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mq9-sync", daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
        self.loop.close()


class Task:
    """The blocking view of ``mq9.Task``."""

    def __init__(self, task: AsyncTask, loop: _Loop) -> None:
        self._task = task
        self._loop = loop
        self.id = task.id
        self.agent = task.agent

    def __repr__(self) -> str:
        return f"Task({self.id!r}, agent={self.agent!r})"

    def get(self) -> dict[str, Any]:
        return self._loop.call(self._task.get())

    def state(self) -> str:
        return self._loop.call(self._task.state())

    def result(self, timeout: float | None = None) -> Any:
        return self._loop.call(self._task.result(timeout))

    def cancel(self) -> str:
        return self._loop.call(self._task.cancel())

    def events(self, after_seq: int = 0, *, follow: bool = True) -> Iterator[TaskEvent]:
        stream = self._task.events(after_seq, follow=follow)
        try:
            while True:
                try:
                    yield self._loop.call(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._loop.call(stream.aclose())


class Client:
    """``with mq9.sync.Client("nats://127.0.0.1:4222") as c: c.invoke("translator", {...})``.

    Connects on creation; every method blocks and returns what the async one returns.
    """

    def __init__(self, servers: str | list[str] = defaults.DEFAULT_SERVERS, **options: Any) -> None:
        self._loop = _Loop()
        self.aio = AsyncClient(servers, **options)
        try:
            self._loop.call(self.aio.connect())
        except BaseException:
            self._loop.close()
            raise

    def close(self) -> None:
        try:
            self._loop.call(self.aio.close())
        finally:
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wrap(self, value: Any) -> Any:
        return Task(value, self._loop) if isinstance(value, AsyncTask) else value

    def __getattr__(self, name: str) -> Any:
        """Every other coroutine method of the async client, blocking."""
        if name.startswith("_") or name == "aio":
            raise AttributeError(name)
        attr = getattr(self.aio, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._wrap(self._loop.call(attr(*args, **kwargs)))

        blocking.__doc__ = attr.__doc__
        return blocking

    # mailboxes
    def create_mailbox(self, name: str | None = None, ttl: int | None = None, desc: str | None = None) -> str:
        return self._loop.call(self.aio.create_mailbox(name, ttl, desc))

    def send(
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
        return self._loop.call(
            self.aio.send(
                mailbox, payload, priority=priority, ttl=ttl, delay=delay, key=key, tags=tags, headers=headers
            )
        )

    def fetch(self, mailbox: str, **options: Any) -> list[Message]:
        return self._loop.call(self.aio.fetch(mailbox, **options))

    def ack(self, mailbox: str, *, group: str, msg_id: int) -> None:
        self._loop.call(self.aio.ack(mailbox, group=group, msg_id=msg_id))

    def query(self, mailbox: str, **options: Any) -> list[Message]:
        return self._loop.call(self.aio.query(mailbox, **options))

    def delete(self, mailbox: str, msg_id: int) -> bool:
        return self._loop.call(self.aio.delete(mailbox, msg_id))

    # agents and tasks
    def invoke(self, agent: str, input: Any = None, **options: Any) -> Any:
        return self._wrap(self._loop.call(self.aio.invoke(agent, input, **options)))

    def invoke_intent(self, intent: str, input: Any = None, **options: Any) -> Any:
        return self._wrap(self._loop.call(self.aio.invoke_intent(intent, input, **options)))

    def discover(self, text: str | None = None, **options: Any) -> list[AgentMatch]:
        return self._loop.call(self.aio.discover(text, **options))

    def agent_info(self, name: str) -> dict[str, Any]:
        return self._loop.call(self.aio.agent_info(name))

    def agent_status(self, name: str) -> dict[str, Any]:
        return self._loop.call(self.aio.agent_status(name))

    def list_agents(self, **options: Any) -> list[dict[str, Any]]:
        return self._loop.call(self.aio.list_agents(**options))

    def task(self, task_id: str) -> Task:
        return Task(self.aio.task(task_id), self._loop)

    # tools and pipelines
    def invoke_tool(self, name: str, arguments: dict[str, Any] | None = None, **options: Any) -> Any:
        return self._loop.call(self.aio.invoke_tool(name, arguments, **options))

    def list_tools(self) -> list[dict[str, Any]]:
        return self._loop.call(self.aio.list_tools())

    def create_pipeline(self, spec: dict[str, Any], *, replace: bool = False) -> dict[str, Any]:
        return self._loop.call(self.aio.create_pipeline(spec, replace=replace))

    def run_pipeline(self, name: str, input: Any = None, **options: Any) -> Any:
        return self._loop.call(self.aio.run_pipeline(name, input, **options))

    def pipeline_status(self, run_id: str) -> dict[str, Any]:
        return self._loop.call(self.aio.pipeline_status(run_id))

    def request(
        self, subject: str, body: dict[str, Any] | bytes | None = None, **options: Any
    ) -> dict[str, Any]:
        return self._loop.call(self.aio.request(subject, body, **options))
