"""The broker: builds every part from the settings and runs them on one event loop.

Start order: the store (recovery) first, then the services that live on the subject space
(the agent layer), then the network listeners, so no client connects before its data is ready.
Stop order is the reverse.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Protocol

from robustmq.config import Settings
from robustmq.router import Router

if TYPE_CHECKING:
    from robustmq.agents.api import AgentApiService
    from robustmq.agents.mq9 import Mq9Service
    from robustmq.agents.pipelines import PipelineService
    from robustmq.agents.tools import ToolService
    from robustmq.store import Store

log = logging.getLogger("robustmq.broker")


class BrokerStartError(Exception):
    """The broker could not start (a port is taken, the data directory is unusable, ...)."""


class Component(Protocol):
    """A part of the broker with a life cycle. Listeners also report where they are bound."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Listener(Component, Protocol):
    def addresses(self) -> list[tuple[str, int]]: ...


def is_loopback_host(host: str) -> bool:
    """Does binding ``host`` keep every listener on this machine? ("0.0.0.0" and "" do not.)"""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to a public address


def warn_if_exposed(settings: Settings) -> bool:
    """Log a loud warning when a non-loopback address is bound with no credentials at all."""
    if is_loopback_host(settings.host) or settings.auth.enabled or settings.http.tokens:
        return False
    log.warning(
        "SECURITY WARNING: listening on %s with no credentials configured: anyone who can reach this "
        "host may publish, subscribe, read every mailbox and administer the broker over REST. "
        "Configure [auth] users or a token and [http] tokens, or bind 127.0.0.1 (--host).",
        settings.host or "every address",
    )
    return True


class Broker:
    """The composition root: every part is built here, once, with what it depends on passed in.

    The store and the agent layer always exist (typed attributes, no lookups by name); the network
    listeners and the control plane are built only when their port is configured. Nothing runs
    until ``start``.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.router = Router()
        self.components: list[Component] = []
        self._started: list[Component] = []
        self._build()

    def _build(self) -> None:
        # Imported here so a listener that is off costs nothing at start-up.
        from robustmq.agents.api import AgentApiService
        from robustmq.agents.mq9 import Mq9Service
        from robustmq.agents.pipelines import PipelineService
        from robustmq.agents.tools import ToolService
        from robustmq.store import Store
        from robustmq.store.sql_runner import SqlLimits

        s = self.settings
        auth_enabled = s.auth.enabled
        if auth_enabled:
            # replies are private per user; a shared token alone has no users to tell apart
            self.router.isolate(private_inboxes=bool(s.auth.users))
        h = s.http
        sql_limits = SqlLimits(
            memory_limit_mb=h.query_memory_limit_mb, threads=h.query_threads,
            max_result_bytes=h.query_max_result_bytes, concurrency=h.query_concurrency,
            queue=h.query_queue,
        )  # fmt: skip
        router = self.router
        self.store: Store = Store(s.store, router=router, streams=s.streams, sql_limits=sql_limits)
        self.mq9: Mq9Service = Mq9Service(router, self.store, s.mq9, auth_enabled=auth_enabled)
        # the agent API shares mq9's registry and answers mq9's ownership questions
        self.agent_api: AgentApiService = AgentApiService(
            router, self.store, auth_enabled=auth_enabled, mq9=self.mq9
        )
        self.tools: ToolService = ToolService(router, self.agent_api, self.store, embedder=self.mq9.embedder)
        self.pipelines: PipelineService = PipelineService(self.agent_api, self.tools, self.store)
        self.components.extend([self.store, self.mq9, self.agent_api, self.tools, self.pipelines])
        if s.mqtt.port is not None or s.mqtt.ws_port is not None:
            from robustmq.bridges.mqtt.listener import MqttServer

            mqtt = MqttServer(self)
            self.components.append(mqtt)
            if mqtt.websocket is not None:
                self.components.append(mqtt.websocket)
        if s.amqp.port is not None:
            from robustmq.bridges.amqp.listener import AmqpServer

            self.components.append(AmqpServer(self))
        if s.nats.port is not None:
            from robustmq.nats.server import NatsServer

            self.components.append(NatsServer(self))
        if s.kafka.port is not None:
            from robustmq.bridges.kafka.listener import KafkaServer

            self.components.append(KafkaServer(self))
        # keep the control plane last: /readyz answers only once everything before it has started
        if s.http.port is not None:
            from api.server import HttpServer

            self.components.append(HttpServer(self))

    async def start(self) -> None:
        warn_if_exposed(self.settings)
        for component in self.components:
            try:
                await component.start()
            except OSError as exc:
                raise BrokerStartError(f"cannot start {component.name}: {exc.strerror or exc}") from None
            self._started.append(component)

    async def stop(self) -> None:
        while self._started:
            component = self._started.pop()
            try:
                await component.stop()
            except Exception:
                log.exception("error while stopping %s", component.name)

    def is_started(self, component: Component) -> bool:
        """Has ``component`` finished starting (and not begun stopping)?"""
        return component in self._started

    def bound_addresses(self) -> list[tuple[str, str, int]]:
        out = []
        for component in self.components:
            addresses = getattr(component, "addresses", None)
            if addresses is not None:
                out.extend((component.name, host, port) for host, port in addresses())
        return out
