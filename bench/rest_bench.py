"""Control-plane benchmark: ``GET /api/v1/agents`` with 10,000 agents; REST vs NATS invoke of one echo agent.

Same client next to nats-server's /varz and /connz; run ``.venv/bin/python -m bench.rest_bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable

import nats

from bench.common import (
    API,
    EchoAgents,
    echo_card,
    free_port,
    percentiles,
    robustmq_argv,
    rss_mib,
    start_nats_server,
    stop_process,
    wait_port,
)

ECHO_AGENT = "bench-echo"
TARGET_LIST_P99_MS = 10.0
TARGET_INVOKE_OVERHEAD_P50_MS = 1.0
REGISTER_CONCURRENCY = 200
INVOKE_ROUNDS = 5
QUIET_CPU_SHARE = 0.05  # the broker counts as idle below 5 % of a core
QUIET_WAIT_MAX_S = 120.0
_READY = re.compile(r"\bready\b(.*)$")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_quiet(pid: int) -> float:
    """Wait until the broker's own background work (e.g. embedding new cards) has settled."""
    start = time.monotonic()
    while time.monotonic() - start < QUIET_WAIT_MAX_S:
        before = _cpu_s(pid)
        time.sleep(1.0)
        if _cpu_s(pid) - before < QUIET_CPU_SHARE:
            break
    return time.monotonic() - start


class Broker:
    """robustmq with NATS and HTTP on ports it picks itself, read back from its ``ready`` line."""

    def __init__(self, data_dir: str) -> None:
        flags = ["--nats-port", "0", "--http-port", "0", "--mqtt-port", "off"]
        argv = [*robustmq_argv(data_dir, *flags), "--log-level", "warning"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while True:
            line = self.proc.stdout.readline()
            match = _READY.search(line)
            if match:
                break
            if not line or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("robustmq did not start")
        self.ports = {}
        for item in match.group(1).split():
            name, _, addr = item.partition("=")
            self.ports[name] = int(addr.rsplit(":", 1)[1])

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.ports['nats']}"

    def stop(self) -> None:
        stop_process(self.proc)


async def _register_agents(url: str, count: int) -> nats.NATS:
    """``count`` agents over NATS, each with one live instance; the connection stays open."""
    nc = await nats.connect(url)
    sem = asyncio.Semaphore(REGISTER_CONCURRENCY)

    async def one(i: int) -> None:
        card = {
            "name": f"agent-{i:05d}",
            "description": f"bench agent {i} handles tickets of kind {i % 97}",
            "version": "1.0.0",
            "skills": [{"id": f"skill-{i % 50}", "name": "work", "tags": [f"tag-{i % 20}"]}],
            "heartbeat_interval_ms": 3_600_000,
        }
        async with sem:
            msg = await nc.request(API + "AGENT.REGISTER", json.dumps(card).encode(), timeout=30)
        assert json.loads(msg.data)["error"] == ""

    await asyncio.gather(*(one(i) for i in range(count)))
    return nc


def _register_cards_over_http(port: int, count: int, connections: int = 4) -> None:
    """``count`` agent cards over HTTP (no instances: nothing for the liveness sweep to visit)."""
    import concurrent.futures

    def batch(indexes: range) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in indexes:
            card = {
                "name": f"agent-{i:05d}",
                "description": f"bench agent {i} handles tickets of kind {i % 97}",
                "version": "1.0.0",
                "skills": [{"id": f"skill-{i % 50}", "name": "work", "tags": [f"tag-{i % 20}"]}],
            }
            conn.request(
                "POST", "/api/v1/agents", body=json.dumps(card), headers={"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            response.read()
            if response.status != 201:
                raise SystemExit(f"registering agent {i} answered {response.status}")
        conn.close()

    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        list(pool.map(batch, [range(k, count, connections) for k in range(connections)]))


def _time_http(
    port: int, method: str, path: str, body: bytes | None, count: int, seconds: float
) -> dict[str, float]:
    """Sequential requests on one keep-alive connection; latency is request sent -> body read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    samples: list[float] = []
    size = 0
    deadline = time.monotonic() + seconds
    for i in range(count + count // 10):
        start = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        elapsed = (time.perf_counter() - start) * 1000
        if response.status >= 300:
            raise SystemExit(f"{method} {path} answered {response.status}: {data[:200]!r}")
        if i >= count // 10:  # the first tenth warms up caches and the connection
            samples.append(elapsed)
            size = len(data)
        if time.monotonic() > deadline and len(samples) >= 20:
            break
    conn.close()
    return {**percentiles(samples), "bytes": size, "samples": samples}


async def _time_nats_invoke(url: str, count: int, seconds: float) -> dict[str, float]:
    nc = await nats.connect(url)
    body = json.dumps({"input": {"text": "hello"}}).encode()
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    for i in range(count + count // 10):
        start = time.perf_counter()
        msg = await nc.request(API + f"AGENT.INVOKE.{ECHO_AGENT}", body, timeout=10)
        elapsed = (time.perf_counter() - start) * 1000
        assert json.loads(msg.data)["state"] == "completed"
        if i >= count // 10:
            samples.append(elapsed)
        if time.monotonic() > deadline and len(samples) >= 20:
            break
    await nc.close()
    return {**percentiles(samples), "samples": samples}


def _line(label: str, figures: dict[str, float], note: str = "") -> None:
    print(
        f"  {label:<44} p50 {figures['p50']:7.3f}  p90 {figures['p90']:7.3f}  p99 {figures['p99']:7.3f}"
        f"  max {figures['max']:7.3f} ms  (n={int(figures['n'])}){note}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1000, help="timed requests per scenario")
    parser.add_argument("--seconds", type=float, default=10.0, help="time cap per scenario")
    parser.add_argument(
        "--register",
        choices=["nats", "http"],
        default="nats",
        help="nats: agents with a live instance each (default); http: cards only, no instances",
    )
    args = parser.parse_args(argv)
    timed: Callable[..., dict[str, float]] = _time_http

    with tempfile.TemporaryDirectory(prefix="rest-bench-") as data_dir:
        monitor = free_port()
        reference = start_nats_server("-m", str(monitor))
        wait_port(monitor)
        broker = Broker(data_dir)
        http_port = broker.ports["http"]
        agent = None
        holder = None
        loop = asyncio.new_event_loop()
        try:
            card = echo_card(ECHO_AGENT, max_concurrency=64, heartbeat_interval_ms=3_600_000)
            agent = EchoAgents(broker.nats_url, cards=[card], use_uvloop=False)
            rss_idle = rss_mib(broker.proc.pid)
            print(
                f"robustmq control plane benchmark ({args.agents} agents, {args.requests} requests per scenario)"
            )
            print("\nreference: nats-server HTTP monitoring, same client")
            _line("nats-server GET /varz", timed(monitor, "GET", "/varz", None, args.requests, args.seconds))
            _line(
                "nats-server GET /connz", timed(monitor, "GET", "/connz", None, args.requests, args.seconds)
            )
            print("\nrobustmq, before registering agents")
            _line(
                "GET /healthz (HTTP stack floor)",
                timed(http_port, "GET", "/healthz", None, args.requests, args.seconds),
            )

            started = time.monotonic()
            if args.register == "nats":
                holder = loop.run_until_complete(_register_agents(broker.nats_url, args.agents))
            else:
                _register_cards_over_http(http_port, args.agents)
            took = time.monotonic() - started
            settled = _wait_quiet(broker.proc.pid)
            rss_agents = rss_mib(broker.proc.pid)
            print(
                f"\nregistered {args.agents} agents over {args.register.upper()} in {took:.1f} s "
                f"({args.agents / took:,.0f}/s); broker quiet after {settled:.0f} s more"
            )
            listing = timed(http_port, "GET", "/api/v1/agents", None, args.requests, args.seconds)
            mark = "OK" if listing["p99"] <= TARGET_LIST_P99_MS else "over target"
            _line("GET /api/v1/agents (page of 100)", listing, f"  {listing['bytes'] / 1024:.0f} KiB")
            print(f"    target p99 <= {TARGET_LIST_P99_MS} ms: {mark}")
            _line(
                "GET /api/v1/agents?limit=10",
                timed(http_port, "GET", "/api/v1/agents?limit=10", None, args.requests, args.seconds),
            )
            _line(
                "GET /api/v1/agents?capability=skill-7&limit=10",
                timed(
                    http_port,
                    "GET",
                    "/api/v1/agents?capability=skill-7&limit=10",
                    None,
                    args.requests,
                    args.seconds,
                ),
            )
            _line(
                f"GET /api/v1/agents/{ECHO_AGENT}",
                timed(http_port, "GET", f"/api/v1/agents/{ECHO_AGENT}", None, args.requests, args.seconds),
            )

            print(
                f"\ninvoke of the same echo agent (its own process), sequential, {INVOKE_ROUNDS} alternating rounds"
            )
            body = json.dumps({"input": {"text": "hello"}}).encode()
            nats_samples: list[float] = []
            http_samples: list[float] = []
            per_round = max(20, args.requests // INVOKE_ROUNDS)
            for _ in range(INVOKE_ROUNDS):
                nats_samples += loop.run_until_complete(
                    _time_nats_invoke(broker.nats_url, per_round, args.seconds / INVOKE_ROUNDS)
                )["samples"]
                http_samples += timed(
                    http_port, "POST", f"/api/v1/agents/{ECHO_AGENT}/invoke", body, per_round,
                    args.seconds / INVOKE_ROUNDS,
                )["samples"]  # fmt: skip
            over_nats, over_http = percentiles(nats_samples), percentiles(http_samples)
            _line("NATS  $mq9.AI.API.AGENT.INVOKE (nats-py)", over_nats)
            _line("REST  POST /api/v1/agents/{name}/invoke", over_http)
            overhead = over_http["p50"] - over_nats["p50"]
            mark = "OK" if overhead <= TARGET_INVOKE_OVERHEAD_P50_MS else "over target"
            print(
                f"    REST overhead at p50: {overhead:+.3f} ms (target <= {TARGET_INVOKE_OVERHEAD_P50_MS} ms): {mark}"
            )
            rss_end = rss_mib(broker.proc.pid)
            print(
                f"\nrobustmq RSS: {rss_idle:.0f} MiB idle, {rss_agents:.0f} MiB with {args.agents} agents, "
                f"{rss_end:.0f} MiB at the end"
            )
        finally:
            if agent is not None:
                agent.stop()
            if holder is not None:
                loop.run_until_complete(holder.close())
            loop.close()
            broker.stop()
            reference.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
