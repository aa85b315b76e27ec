"""Prometheus metrics of the broker, in a registry of our own (never the process-global one).

Counters that already live on the broker's parts (connections, subscriptions, message totals, store
and agent figures) are read at scrape time by ``BrokerCollector``, so nothing is counted twice and the
hot paths pay nothing; the control plane's own requests are counted by ``HttpMetricsMiddleware``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from robustmq.broker import Broker

NAMESPACE = "robustmq"
HTTP_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def _number(stats: Any, name: str) -> float | None:
    value = stats.get(name) if isinstance(stats, dict) else getattr(stats, name, None)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class BrokerCollector(Collector):
    """Reads the figures each part of the broker keeps, once per scrape."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        yield from self._connections()
        subs = GaugeMetricFamily(f"{NAMESPACE}_subscriptions", "subscriptions in the subject router")
        subs.add_metric([], self.broker.router.trie.count)
        yield subs
        yield from self._component_stats()

    def _connections(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(f"{NAMESPACE}_connections", "open client connections", labels=["protocol"])
        for component in self.broker.components:
            listing = getattr(component, "connections", None)
            if callable(listing):
                gauge.add_metric([component.name], len(listing()))
        yield gauge

    def _component_stats(self) -> Iterator[Metric]:
        """Every part that offers ``stats()`` (a dict of numbers) is exported as counters and gauges.

        Keys ending in ``_total`` are counters, the rest gauges; names are prefixed with the part's name.
        """
        for component in self.broker.components:
            stats_fn = getattr(component, "stats", None)
            if not callable(stats_fn):
                continue
            try:
                stats = stats_fn()
            except Exception:  # a part mid-shutdown must not break the scrape
                continue
            if not isinstance(stats, dict):
                continue
            prefix = f"{NAMESPACE}_{_metric_name(component.name)}"
            for key in sorted(stats):
                number = _number(stats, key)
                if number is None:
                    continue
                name = f"{prefix}_{_metric_name(key)}"
                help_text = f"{component.name} {key}"
                if key.endswith("_total"):
                    family: Metric = CounterMetricFamily(name[: -len("_total")], help_text)
                    family.add_metric([], number)  # type: ignore[attr-defined]
                else:
                    family = GaugeMetricFamily(name, help_text)
                    family.add_metric([], number)  # type: ignore[attr-defined]
                yield family


def _metric_name(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


class ApiMetrics:
    """The registry ``/metrics`` renders, and the control plane's own request counters."""

    def __init__(self, broker: Broker) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(namespace=NAMESPACE, registry=self.registry)
        self.registry.register(BrokerCollector(broker))
        self.http_requests = Counter(
            f"{NAMESPACE}_http_requests",
            "control-plane requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            f"{NAMESPACE}_http_request_seconds",
            "control-plane request latency until the response started",
            ["method", "route"],
            buckets=HTTP_LATENCY_BUCKETS_S,
            registry=self.registry,
        )


class HttpMetricsMiddleware:
    """Pure ASGI: counts each request by its route template (not the raw path, to bound labels)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        latency: float | None = None

        async def send_and_watch(message: Message) -> None:
            nonlocal status, latency
            if message["type"] == "http.response.start":
                status = message["status"]
                latency = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.http_requests.labels(method, template, str(status)).inc()
            self.metrics.http_latency.labels(method, template).observe(
                latency if latency is not None else time.perf_counter() - started
            )
