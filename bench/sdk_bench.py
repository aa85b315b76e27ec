"""SDK benchmark: what the mq9 Python SDK adds on top of raw nats-py, on both sides of an invocation.

In one run: sync INVOKE p50/p99 and invocations/s (20 callers) for a raw nats-py echo agent called
with raw requests, an SDK ``Agent`` called with raw requests, and an SDK ``Agent`` called with
``Client.invoke``; SDK mailbox sends/s (50 callers) and an ``@on_message`` worker's messages/s;
RSS of the broker and of the SDK agent; and a direct request on nats-server as the reference.
Bounded: a few seconds per scenario. Run: ``.venv/bin/python -m bench.sdk_bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import nats

from bench.common import (
    API,
    EchoAgents,
    FigureTable,
    calls_per_s,
    percentiles,
    rss_kib,
    start_nats_pair,
    stop_all,
)
from bench.invoke_bench import CONCURRENT_CALLERS, DIRECT_SUBJECT, PAYLOAD, start_agent

SDK_SRC = Path(__file__).resolve().parents[1] / "sdk" / "src"
SDK_AGENT = "sdk-echo"
MAILBOX = "bench.sdk.inbox"
SEND_CALLERS = 50
WORKER_MESSAGES = 2000


def _sdk_agent_main(url: str, ready: multiprocessing.Event, stop: multiprocessing.Event, handled) -> None:
    sys.path.insert(0, str(SDK_SRC))
    import uvloop
    from mq9 import Agent, Message

    agent = Agent(
        SDK_AGENT, servers=url, description="echoes its input", max_concurrency=256, mailbox=MAILBOX
    )

    @agent.skill
    async def echo(text: str, n: int = 0) -> dict:
        return {"text": text, "n": n}

    @agent.on_message(batch=100)
    async def inbox(msg: Message) -> None:
        with handled.get_lock():
            handled.value += 1

    async def run() -> None:
        async with agent:
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.1)

    uvloop.run(run())


def start_sdk_agent(url: str):
    ctx = multiprocessing.get_context("spawn")
    ready, stop, handled = ctx.Event(), ctx.Event(), ctx.Value("i", 0)
    proc = ctx.Process(target=_sdk_agent_main, args=(url, ready, stop, handled), daemon=True)
    proc.start()
    if not ready.wait(30):
        raise RuntimeError("SDK agent did not start")
    return proc, stop, handled


async def _timed(calls: dict[str, object], seconds: float, max_requests: int) -> dict[str, dict[str, float]]:
    """Latency of each call, taken in turns so that load from elsewhere affects them alike."""
    for call in calls.values():
        for _ in range(50):
            await call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    deadline = time.perf_counter() + seconds * len(calls)
    rounds = 0
    while rounds < max_requests and time.perf_counter() < deadline:
        for name, call in calls.items():
            t0 = time.perf_counter()
            await call()
            samples[name].append((time.perf_counter() - t0) * 1e6)
        rounds += 1
    return {name: percentiles(values) for name, values in samples.items()}


def _raw_invoke(nc, agent: str, skill: str):
    subject = API + f"AGENT.INVOKE.{agent}"
    body = json.dumps({"input": PAYLOAD, "skill": skill}).encode()

    async def call() -> None:
        msg = await nc.request(subject, body, timeout=10)
        if b'"error":""' not in msg.data:
            raise RuntimeError(f"invoke failed: {msg.data[:200]!r}")

    return call


async def bench_robustmq(url: str, seconds: float, max_requests: int, handled) -> dict[str, object]:
    sys.path.insert(0, str(SDK_SRC))
    from mq9 import Client

    nc = await nats.connect(url)
    out: dict[str, object] = {}
    raw_agent = _raw_invoke(nc, "bench-echo", "echo")
    raw_to_sdk = _raw_invoke(nc, SDK_AGENT, "echo")
    async with Client(url) as c:

        async def sdk_to_sdk() -> None:
            await c.invoke(SDK_AGENT, PAYLOAD, skill="echo", timeout=10)

        calls = {"raw->raw": raw_agent, "raw->sdk": raw_to_sdk, "sdk->sdk": sdk_to_sdk}
        out.update(await _timed(calls, seconds, max_requests))
        for name, call in calls.items():
            out[name + " rate"] = await calls_per_s(call, seconds, CONCURRENT_CALLERS)

        async def send() -> None:
            await c.send(MAILBOX, b"x" * 100, priority="normal")

        out["send rate"] = await calls_per_s(send, seconds, SEND_CALLERS)
        # the worker has drained what the send scenario left; now time a fresh batch of messages
        async with asyncio.timeout(60):
            while True:
                before = handled.value
                await asyncio.sleep(0.5)
                if handled.value == before:
                    break
        start_count, start = handled.value, time.perf_counter()
        await asyncio.gather(*(c.send(MAILBOX, b"y" * 100) for _ in range(WORKER_MESSAGES)))
        async with asyncio.timeout(120):
            while handled.value < start_count + WORKER_MESSAGES:
                await asyncio.sleep(0.01)
        out["worker rate"] = WORKER_MESSAGES / (time.perf_counter() - start)
    await nc.close()
    return out


async def bench_reference(url: str, seconds: float, max_requests: int) -> dict[str, object]:
    nc = await nats.connect(url)
    body = json.dumps({"input": PAYLOAD}).encode()

    async def direct() -> None:
        await nc.request(DIRECT_SUBJECT, body, timeout=5)

    out = {
        "direct": (await _timed({"direct": direct}, seconds, max_requests))["direct"],
        "direct rate": await calls_per_s(direct, seconds, 20),
    }
    await nc.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.sdk_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each scenario")
    parser.add_argument("--max-requests", type=int, default=3000, help="cap per latency scenario")
    args = parser.parse_args(argv)
    import uvloop

    with tempfile.TemporaryDirectory() as data_dir:
        servers = start_nats_pair(data_dir)
        reference, robustmq = servers
        agents: list[EchoAgents] = []
        sdk_proc = sdk_stop = None
        try:
            agents.append(start_agent(robustmq.url, register=True))
            sdk_proc, sdk_stop, handled = start_sdk_agent(robustmq.url)
            rss_agent_idle = rss_kib(sdk_proc.pid)
            ours = uvloop.run(bench_robustmq(robustmq.url, args.seconds, args.max_requests, handled))
            rss_agent_after = rss_kib(sdk_proc.pid)
            rss_broker = robustmq.rss_kib()
            agents.append(start_agent(reference.url, register=False))
            ref = uvloop.run(bench_reference(reference.url, args.seconds, args.max_requests))
        finally:
            if sdk_proc is not None:
                sdk_stop.set()
                sdk_proc.join(10)
            for agent in agents:
                agent.stop(10)
            stop_all(servers)

    print(
        f"mq9 SDK bench ({args.seconds:g} s per scenario; caller and agent in separate processes; "
        "the three invocation paths timed in turns)"
    )
    table = FigureTable(52, 10, 11)
    table.header()
    row = table.row

    row("direct request to a raw echo responder p50 (us)", "", f"{ref['direct']['p50']:.0f}")
    row("direct request p99 (us)", "", f"{ref['direct']['p99']:.0f}")
    for name, label in (
        ("raw->raw", "raw INVOKE -> raw nats-py agent"),
        ("raw->sdk", "raw INVOKE -> SDK Agent"),
        ("sdk->sdk", "Client.invoke -> SDK Agent"),
    ):
        row(f"{label} p50 (us)", f"{ours[name]['p50']:.0f}")
        row(f"{label} p99 (us)", f"{ours[name]['p99']:.0f}")
        row(f"{label}, /s with {CONCURRENT_CALLERS} callers", f"{ours[name + ' rate']:.0f}")
    row("SDK agent-side overhead p50 (us)", f"{ours['raw->sdk']['p50'] - ours['raw->raw']['p50']:.0f}")
    row("SDK client-side overhead p50 (us)", f"{ours['sdk->sdk']['p50'] - ours['raw->sdk']['p50']:.0f}")
    row("direct requests/s with 20 callers", "", f"{ref['direct rate']:.0f}")
    row(f"Client.send acknowledged/s, {SEND_CALLERS} callers", f"{ours['send rate']:.0f}")
    row(f"@on_message worker messages/s ({WORKER_MESSAGES} queued)", f"{ours['worker rate']:.0f}")
    row("SDK agent RSS idle / after (MiB)", f"{rss_agent_idle / 1024:.0f} / {rss_agent_after / 1024:.0f}")
    row("broker RSS after the run (MiB)", f"{rss_broker / 1024:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
