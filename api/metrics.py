"""Prometheus metrics of the broker in a registry of our own (never the process-global one).

Figures the parts already keep are read at scrape time, so hot paths pay nothing for them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from robustmq.broker import Broker

log = logging.getLogger("robustmq.api")

NAMESPACE = "robustmq"
# connection counter -> metric name
TRAFFIC_FIELDS = {
    "in_msgs": "messages_in",
    "out_msgs": "messages_out",
    "in_bytes": "bytes_in",
    "out_bytes": "bytes_out",
}
METRICS_MAX_LABELLED = 1000  # per-stream, per-mailbox and per-agent series stop here (label cardinality)
LATENCY_WINDOW_NOTE = "1024 calls"
HTTP_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def _number(source: Any, name: str) -> float | None:
    if source is None:
        return None
    value = source.get(name) if isinstance(source, dict) else getattr(source, name, None)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class BrokerCollector(Collector):
    """Reads the figures each part of the broker keeps, once per scrape."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        parts = (
            self._clients,
            self._subscriptions,
            self._store,
            self._agents,
            self._mailboxes,
            self._orchestration,
        )
        for part in parts:
            try:
                yield from part()
            except Exception:  # a part starting or stopping must not break the scrape
                log.warning("metrics of %s skipped in this scrape", part.__name__, exc_info=True)
        yield from self._component_stats()

    def _clients(self) -> Iterator[Metric]:
        conns = GaugeMetricFamily(f"{NAMESPACE}_connections", "open client connections", labels=["protocol"])
        live = {
            field: GaugeMetricFamily(
                f"{NAMESPACE}_open_connections_{metric}",
                f"{metric.replace('_', ' ')} of the connections open now, per protocol",
                labels=["protocol"],
            )
            for field, metric in TRAFFIC_FIELDS.items()
        }
        totals = {
            field: CounterMetricFamily(
                f"{NAMESPACE}_{metric}",
                f"{metric.replace('_', ' ')} since start, per protocol",
                labels=["protocol"],
            )
            for field, metric in TRAFFIC_FIELDS.items()
        }
        accepted = CounterMetricFamily(
            f"{NAMESPACE}_connections_accepted", "connections accepted since start", labels=["protocol"]
        )
        slow = CounterMetricFamily(
            f"{NAMESPACE}_slow_consumers", "connections cut off as slow consumers", labels=["protocol"]
        )
        client_subs = GaugeMetricFamily(
            f"{NAMESPACE}_client_subscriptions",
            "subscriptions of client connections, per protocol (MQTT: topic filters of connected sessions)",
            labels=["protocol"],
        )
        for component in self.broker.components:
            listing = getattr(component, "connections", None)
            if not callable(listing):
                continue
            entries = listing()
            protocol = component.name
            conns.add_metric([protocol], len(entries))
            for name in TRAFFIC_FIELDS:
                total = _number(component, name)  # server-wide totals, when the listener keeps them
                if total is not None:
                    totals[name].add_metric([protocol], total)
                else:
                    live[name].add_metric([protocol], sum(_number(e, name) or 0 for e in entries))
            for family, attr in ((accepted, "total_connections"), (slow, "slow_consumers")):
                value = _number(component, attr)
                if value is not None:
                    family.add_metric([protocol], value)
            subscriptions = getattr(component, "subscriptions", None)
            if callable(subscriptions):
                client_subs.add_metric([protocol], len(subscriptions()))
        yield conns
        yield accepted
        yield slow
        yield client_subs
        for family in (*totals.values(), *live.values()):
            if family.samples:
                yield family

    def _subscriptions(self) -> Iterator[Metric]:
        subs = GaugeMetricFamily(f"{NAMESPACE}_subscriptions", "subscriptions in the subject router")
        subs.add_metric([], self.broker.router.trie.count)
        yield subs

    def _store(self) -> Iterator[Metric]:
        store = self.broker.store
        if not self.broker.is_started(store):
            return
        stats = store.stats()
        for name, text, value in (
            ("store_commits", "group commits written", stats.commits),
            ("store_appends", "records appended to the log", stats.appends),
            ("store_appended_bytes", "record bytes appended to the log", stats.appended_bytes),
        ):
            family = CounterMetricFamily(f"{NAMESPACE}_{name}", text)
            family.add_metric([], value)
            yield family
        fsync = HistogramMetricFamily(
            f"{NAMESPACE}_store_fsync_seconds", "fdatasync latency of committed segment and journal files"
        )
        fsync.add_metric([], stats.fsync.cumulative(), stats.fsync.sum_s)
        yield fsync
        lag = GaugeMetricFamily(
            f"{NAMESPACE}_store_index_lag_records", "records committed but not yet indexed"
        )
        lag.add_metric([], store.index_lag())
        yield lag
        indexed = _number(getattr(store, "index", None), "indexed_rows")
        if indexed is not None:
            family = CounterMetricFamily(f"{NAMESPACE}_store_indexed_rows", "rows written to the index")
            family.add_metric([], indexed)
            yield family
        configs = store.list_streams()
        count = GaugeMetricFamily(f"{NAMESPACE}_streams", "streams in the store")
        count.add_metric([], len(configs))
        yield count
        records = GaugeMetricFamily(
            f"{NAMESPACE}_stream_records", "records kept per stream", labels=["stream"]
        )
        size = GaugeMetricFamily(f"{NAMESPACE}_stream_bytes", "bytes kept per stream", labels=["stream"])
        for config in sorted(configs, key=lambda c: c.name)[:METRICS_MAX_LABELLED]:
            info = store.stream_info(config.name)
            records.add_metric([config.name], info.count)
            size.add_metric([config.name], info.bytes)
        yield records
        yield size

    def _agents(self) -> Iterator[Metric]:
        service = self.broker.agent_api
        if not self.broker.is_started(service):
            return
        invoker = service.invoker
        calls = CounterMetricFamily(
            f"{NAMESPACE}_agent_invocations", "finished invocations per agent", labels=["agent", "outcome"]
        )
        latency = GaugeMetricFamily(
            f"{NAMESPACE}_agent_invocation_latency_ms",
            f"invocation latency per agent over the last {LATENCY_WINDOW_NOTE}",
            labels=["agent", "stat"],
        )
        for agent, counters in sorted(invoker.counters.items())[:METRICS_MAX_LABELLED]:
            calls.add_metric([agent, "completed"], counters.processed)
            calls.add_metric([agent, "failed"], counters.failed)
            latency.add_metric([agent, "avg"], counters.avg_latency_ms())
            latency.add_metric([agent, "p99"], counters.p99_latency_ms())
        yield calls
        yield latency
        states: dict[str, int] = {}
        for task in list(service.tasks.tasks.values()):
            state = _packed_state(task) if isinstance(task, bytes) else task.state
            states[state] = states.get(state, 0) + 1
        tasks = GaugeMetricFamily(
            f"{NAMESPACE}_tasks", "tasks held by the broker, per state", labels=["state"]
        )
        for state, n in sorted(states.items()):
            tasks.add_metric([state], n)
        yield tasks
        now_ms = int(time.time() * 1000)
        agents: dict[str, int] = {}
        for record in service.records():
            status = service.agent_status(record.name, now_ms)
            agents[status] = agents.get(status, 0) + 1
        family = GaugeMetricFamily(f"{NAMESPACE}_agents", "registered agents, per status", labels=["status"])
        for status, n in sorted(agents.items()):
            family.add_metric([status], n)
        yield family

    def _mailboxes(self) -> Iterator[Metric]:
        mailboxes = self.broker.mq9.mailboxes
        boxes = sorted(mailboxes.mailboxes)
        count = GaugeMetricFamily(f"{NAMESPACE}_mailboxes", "mq9 mailboxes")
        count.add_metric([], len(boxes))
        yield count
        depth = GaugeMetricFamily(
            f"{NAMESPACE}_mailbox_records",
            "records kept per mailbox (deleted and expired ones until they are reclaimed)",
            labels=["mailbox"],
        )
        store = self.broker.store
        for address in boxes[:METRICS_MAX_LABELLED]:
            if store.has_stream(address):
                depth.add_metric([address], store.stream_info(address).count)
        yield depth

    def _orchestration(self) -> Iterator[Metric]:
        tools = self.broker.tools
        if self.broker.is_started(tools):
            counts: dict[str, int] = {}
            for info in tools.tools():
                counts[info["status"]] = counts.get(info["status"], 0) + 1
            family = GaugeMetricFamily(
                f"{NAMESPACE}_tools", "registered tools, per status", labels=["status"]
            )
            for status, n in sorted(counts.items()):
                family.add_metric([status], n)
            yield family
        pipelines = self.broker.pipelines
        if self.broker.is_started(pipelines):
            defined = GaugeMetricFamily(f"{NAMESPACE}_pipelines", "pipeline definitions")
            defined.add_metric([], len(pipelines.definitions))
            yield defined
            states: dict[str, int] = {}
            for run in list(pipelines.runs.values()):
                states[run.state] = states.get(run.state, 0) + 1
            runs = GaugeMetricFamily(
                f"{NAMESPACE}_pipeline_runs", "pipeline runs held by the broker, per state", labels=["state"]
            )
            for state, n in sorted(states.items()):
                runs.add_metric([state], n)
            yield runs

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


def _packed_state(blob: bytes) -> str:
    """The state of a finished task kept as JSON bytes, without decoding all of it."""
    at = blob.find(b'"state":"')
    if at < 0:
        return "finished"
    start = at + len(b'"state":"')
    return blob[start : blob.find(b'"', start)].decode()


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

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, prefix: str) -> None:
        self.app = app
        self.metrics = metrics
        self.prefix = prefix

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
            template = getattr(scope.get("route"), "path", None)
            if template is None:
                template = "unmatched"
            elif scope["path"].startswith(self.prefix) and not template.startswith(self.prefix):
                template = self.prefix + template  # included routers report their own path
            method = scope["method"]
            self.metrics.http_requests.labels(method, template, str(status)).inc()
            self.metrics.http_latency.labels(method, template).observe(
                latency if latency is not None else time.perf_counter() - started
            )
