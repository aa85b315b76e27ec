"""Agent API benchmark: sync INVOKE through robustmq against a direct NATS request to the same agent.

An echo agent (its own process, nats-py) registers with the broker and also answers a plain
subject. The bench measures, in the same run: direct request p50/p99, INVOKE p50/p99 and their
difference (the broker's overhead), invocations/s with 20 concurrent callers, the time to a 503
for an agent with no live instance, the broker's RSS, and the same direct request on nats-server.
Bounded: a few seconds per scenario. Run: ``.venv/bin/python -m bench.invoke_bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import nats

from bench.common import (
    API,
    EchoAgents,
    FigureTable,
    echo_card,
    latency_us,
    percentiles,
    rss_kib,
    run_with_echo_agents,
)

DIRECT_SUBJECT = "bench.echo"
AGENT = "bench-echo"
CONCURRENT_CALLERS = 20
PAYLOAD = {"text": "hello agent", "n": 1}


def start_agent(url: str, register: bool) -> EchoAgents:
    """The echo agent: answers DIRECT_SUBJECT and, with ``register``, INVOKE of AGENT."""
    return EchoAgents(url, [DIRECT_SUBJECT], [echo_card(AGENT)] if register else [])


async def latency(nc, subject: str, body: bytes, seconds: float, max_requests: int) -> dict[str, float]:
    def check(msg) -> None:
        if subject.startswith(API) and b'"error":""' not in msg.data:
            raise RuntimeError(f"invoke failed: {msg.data[:200]!r}")

    return await latency_us(lambda: nc.request(subject, body, timeout=5), seconds, max_requests, check)


async def throughput(nc, subject: str, body: bytes, seconds: float, callers: int) -> dict[str, float]:
    done = 0
    failed = 0
    stop_at = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done, failed
        while time.perf_counter() < stop_at:
            msg = await nc.request(subject, body, timeout=10)
            if subject.startswith(API) and b'"error":""' not in msg.data:
                failed += 1
            else:
                done += 1

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - start
    return {"rate": done / elapsed, "failed": failed}


async def bench_robustmq(url: str, pid: int, seconds: float, max_requests: int) -> dict[str, object]:
    nc = await nats.connect(url)
    invoke = API + f"AGENT.INVOKE.{AGENT}"
    direct_body = json.dumps({"input": PAYLOAD}).encode()
    invoke_body = json.dumps({"input": PAYLOAD, "skill": "echo"}).encode()
    out: dict[str, object] = {"rss_idle_kib": rss_kib(pid)}
    out["direct"] = await latency(nc, DIRECT_SUBJECT, direct_body, seconds, max_requests)
    out["invoke"] = await latency(nc, invoke, invoke_body, seconds, max_requests)
    out["direct_rate"] = await throughput(nc, DIRECT_SUBJECT, direct_body, seconds, CONCURRENT_CALLERS)
    out["invoke_rate"] = await throughput(nc, invoke, invoke_body, seconds, CONCURRENT_CALLERS)
    out["rss_after_kib"] = rss_kib(pid)
    # an agent with no live instance: fails fast with 503
    ghost = json.dumps({"name": "bench-ghost", "description": "registered, then gone"}).encode()
    gone = await nats.connect(url)
    await gone.request(API + "AGENT.REGISTER", ghost, timeout=5)
    await gone.close()
    for _ in range(100):
        status = json.loads((await nc.request(API + "AGENT.STATUS.bench-ghost", b"", timeout=5)).data)
        if status["status"] == "down":
            break
        await asyncio.sleep(0.01)
    samples = []
    for _ in range(200):
        t0 = time.perf_counter()
        msg = await nc.request(API + "AGENT.INVOKE.bench-ghost", b'{"input": 1}', timeout=5)
        samples.append((time.perf_counter() - t0) * 1e6)
        assert b'"code":503' in msg.data, msg.data
    out["rejected"] = percentiles(samples)
    await nc.close()
    return out


async def bench_reference(url: str, seconds: float, max_requests: int) -> dict[str, object]:
    nc = await nats.connect(url)
    body = json.dumps({"input": PAYLOAD}).encode()
    out = {
        "direct": await latency(nc, DIRECT_SUBJECT, body, seconds, max_requests),
        "direct_rate": await throughput(nc, DIRECT_SUBJECT, body, seconds, CONCURRENT_CALLERS),
    }
    await nc.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.invoke_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each scenario")
    parser.add_argument("--max-requests", type=int, default=5000, help="cap per latency scenario")
    args = parser.parse_args(argv)
    ours, ref = run_with_echo_agents(
        start_agent,
        lambda robustmq: bench_robustmq(robustmq.url, robustmq.proc.pid, args.seconds, args.max_requests),
        lambda reference: bench_reference(reference.url, args.seconds, args.max_requests),
    )

    direct, invoke = ours["direct"], ours["invoke"]
    print(
        f"agent API invoke bench ({args.seconds:.0f} s per scenario, echo agent in its own process, nats-py clients)"
    )
    table = FigureTable(44, 12, 12)
    table.header()
    row = table.row

    row("direct request p50 (us)", f"{direct['p50']:.0f}", f"{ref['direct']['p50']:.0f}")
    row("direct request p99 (us)", f"{direct['p99']:.0f}", f"{ref['direct']['p99']:.0f}")
    row("sync INVOKE p50 (us)", f"{invoke['p50']:.0f}")
    row("sync INVOKE p99 (us)", f"{invoke['p99']:.0f}")
    row("INVOKE overhead p50 (us, target <= 300)", f"{invoke['p50'] - direct['p50']:.0f}")
    row("INVOKE overhead p99 (us)", f"{invoke['p99'] - direct['p99']:.0f}")
    row(f"direct requests/s, {CONCURRENT_CALLERS} callers", f"{ours['direct_rate']['rate']:.0f}",
        f"{ref['direct_rate']['rate']:.0f}")  # fmt: skip
    row(f"invocations/s, {CONCURRENT_CALLERS} callers (target >= 5000)", f"{ours['invoke_rate']['rate']:.0f}")
    row("invocations failed", f"{ours['invoke_rate']['failed']}")
    row("503 no live instance p50 (us)", f"{ours['rejected']['p50']:.0f}")
    row("503 no live instance p99 (us)", f"{ours['rejected']['p99']:.0f}")
    row("broker RSS before (MiB)", f"{ours['rss_idle_kib'] / 1024:.1f}")
    row("broker RSS after the run (MiB)", f"{ours['rss_after_kib'] / 1024:.1f}")
    print(f"samples: direct {direct['n']}, invoke {invoke['n']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
