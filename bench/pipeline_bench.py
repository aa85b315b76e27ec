"""Pipeline benchmark: a three-step pipeline of echo agents run by the broker, against the same chain
of three requests made by the client itself.

Three echo agents (one process, nats-py) register with the broker and also answer plain subjects.
In the same run: the client-side chain of three direct requests (the agents' time, with the hops
a client would make), the pipeline RUN p50/p99, the broker's overhead (RUN minus the chain; a RUN
saves two client round trips, so this can drop below zero on a busy machine), the time a run
spends between its steps as the broker reports it (run latency minus its steps' latencies:
scheduling, templates, checkpoints), runs/s and chains/s with 10 concurrent callers, the broker's
RSS, and the same chain on nats-server. Bounded: a few seconds per scenario.
Run: ``.venv/bin/python -m bench.pipeline_bench``.
"""

from __future__ import annotations

import argparse
import json

import nats

from bench.common import (
    API,
    EchoAgents,
    FigureTable,
    calls_per_s,
    echo_card,
    latency_us,
    percentiles,
    rss_kib,
    run_with_echo_agents,
)

AGENTS = ("bench-a", "bench-b", "bench-c")
PIPELINE = "bench-three-steps"
CONCURRENT_CALLERS = 10
PAYLOAD = {"text": "hello pipeline", "n": 1}


def start_agents(url: str, register: bool) -> EchoAgents:
    """The three echo agents: each answers bench.direct.<name> and, with ``register``, its INVOKE."""
    cards = [echo_card(name) for name in AGENTS] if register else []
    return EchoAgents(url, [f"bench.direct.{name}" for name in AGENTS], cards)


async def chain_once(nc) -> None:
    """What a client does without pipelines: each agent's output is the next one's input."""
    value = json.dumps({"input": PAYLOAD}).encode()
    for name in AGENTS:
        msg = await nc.request(f"bench.direct.{name}", value, timeout=5)
        value = json.dumps({"input": json.loads(msg.data)["output"]}).encode()


ORCHESTRATION_US: list[float] = []  # per run: the run's latency minus its steps' latencies


async def run_once(nc) -> None:
    msg = await nc.request(
        API + f"PIPELINE.RUN.{PIPELINE}", json.dumps({"input": PAYLOAD}).encode(), timeout=10
    )
    if b'"error":""' not in msg.data:
        raise RuntimeError(f"run failed: {msg.data[:300]!r}")
    reply = json.loads(msg.data)
    steps_ms = sum(step["latency_ms"] for step in reply["steps"].values())
    ORCHESTRATION_US.append((reply["latency_ms"] - steps_ms) * 1000)


async def timed(fn, nc, seconds: float, max_samples: int) -> dict[str, float]:
    return await latency_us(lambda: fn(nc), seconds, max_samples)


async def rate(fn, nc, seconds: float, callers: int) -> float:
    return await calls_per_s(lambda: fn(nc), seconds, callers)


async def bench_robustmq(url: str, pid: int, seconds: float, max_samples: int) -> dict[str, object]:
    nc = await nats.connect(url)
    spec = {
        "name": PIPELINE,
        "steps": [
            {"id": "a", "agent": AGENTS[0], "skill": "echo"},
            {"id": "b", "agent": AGENTS[1], "skill": "echo", "needs": ["a"]},
            {"id": "c", "agent": AGENTS[2], "skill": "echo", "needs": ["b"]},
        ],
        "replace": True,
    }
    reply = json.loads((await nc.request(API + "PIPELINE.CREATE", json.dumps(spec).encode(), timeout=5)).data)
    assert reply["error"] == "", reply
    out: dict[str, object] = {"rss_idle_kib": rss_kib(pid)}
    out["chain"] = await timed(chain_once, nc, seconds, max_samples)
    ORCHESTRATION_US.clear()
    out["run"] = await timed(run_once, nc, seconds, max_samples)
    out["orchestration"] = percentiles(ORCHESTRATION_US[50:])  # without the warm-up runs
    out["chain_rate"] = await rate(chain_once, nc, seconds, CONCURRENT_CALLERS)
    out["run_rate"] = await rate(run_once, nc, seconds, CONCURRENT_CALLERS)
    out["rss_after_kib"] = rss_kib(pid)
    await nc.close()
    return out


async def bench_reference(url: str, seconds: float, max_samples: int) -> dict[str, object]:
    nc = await nats.connect(url)
    out = {
        "chain": await timed(chain_once, nc, seconds, max_samples),
        "chain_rate": await rate(chain_once, nc, seconds, CONCURRENT_CALLERS),
    }
    await nc.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.pipeline_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each scenario")
    parser.add_argument("--max-samples", type=int, default=3000, help="cap per latency scenario")
    args = parser.parse_args(argv)
    ours, ref = run_with_echo_agents(
        start_agents,
        lambda robustmq: bench_robustmq(robustmq.url, robustmq.proc.pid, args.seconds, args.max_samples),
        lambda reference: bench_reference(reference.url, args.seconds, args.max_samples),
    )

    chain, run = ours["chain"], ours["run"]
    print(
        f"pipeline bench ({args.seconds:.0f} s per scenario, three echo agents in their own process, nats-py)"
    )
    table = FigureTable(50, 10, 11)
    table.header()
    row = table.row

    row("client chain of 3 requests p50 (us)", f"{chain['p50']:.0f}", f"{ref['chain']['p50']:.0f}")
    row("client chain of 3 requests p99 (us)", f"{chain['p99']:.0f}", f"{ref['chain']['p99']:.0f}")
    row("pipeline RUN, 3 steps, p50 (us)", f"{run['p50']:.0f}")
    row("pipeline RUN, 3 steps, p99 (us)", f"{run['p99']:.0f}")
    row("overhead p50 (RUN - chain, us, target <= 2000)", f"{run['p50'] - chain['p50']:.0f}")
    row("overhead p99 (RUN - chain, us)", f"{run['p99'] - chain['p99']:.0f}")
    orchestration = ours["orchestration"]
    row("between steps p50 (run - its steps, us)", f"{orchestration['p50']:.0f}")
    row("between steps p99 (run - its steps, us)", f"{orchestration['p99']:.0f}")
    row(f"chains/s, {CONCURRENT_CALLERS} callers", f"{ours['chain_rate']:.0f}", f"{ref['chain_rate']:.0f}")
    row(f"pipeline runs/s, {CONCURRENT_CALLERS} callers", f"{ours['run_rate']:.0f}")
    row("broker RSS before (MiB)", f"{ours['rss_idle_kib'] / 1024:.1f}")
    row("broker RSS after the run (MiB)", f"{ours['rss_after_kib'] / 1024:.1f}")
    print(f"samples: chain {chain['n']}, run {run['n']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
