"""mq9 benchmark: acknowledged MSG.SEND with 50 concurrent requesters, FETCH of 100, and
AGENT.DISCOVER (text and semantic) with 10,000 registered agents.

The reference is nats-server with JetStream (file storage) in the same run: a JetStream publish
with its PubAck is the acknowledged send, a pull-consumer fetch of 100 the FETCH. DISCOVER has
no counterpart there. Bounded: a few seconds per scenario.
Run: ``.venv/bin/python -m bench.mq9_bench`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import orjson

from bench import loadgen
from bench.common import Server, percentile, rss_kib, start_nats_server, start_robustmq

REQUESTERS = 50
PAYLOAD_BYTES = 128
FETCH_BATCH = 100
AGENTS = 10_000
MAILBOX = "bench.box"
STREAM = "BENCH"
LABELLED = Path(__file__).parent.parent / "tests" / "data" / "discovery_agents.json"


# -- servers ---------------------------------------------------------------------------------------


def start_servers(data_dir: str) -> tuple[Server, Server]:
    reference = start_nats_server("-js", "-sd", os.path.join(data_dir, "js"), name="nats-server -js")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    robustmq = start_robustmq(os.path.join(data_dir, "robustmq"), "--fsync", "interval", env=env)
    return reference, robustmq


# -- closed-loop requesters on one raw socket (no client library in the way) -----------------------


def closed_loop(port: int, subject: str, requesters: int, seconds: float, out: Any, go: Any) -> None:
    """``requesters`` outstanding requests at all times; each reply starts the next request."""
    sock = loadgen._connect(port)
    sock.sendall(b"SUB _INBOX.b.* 1\r\n")
    loadgen._ping(sock)
    body = b"x" * PAYLOAD_BYTES
    frames = [
        b"PUB %s _INBOX.b.%d %d\r\n%s\r\n" % (subject.encode(), i, len(body), body) for i in range(requesters)
    ]
    sent_at = [0.0] * requesters
    latencies: list[float] = []
    errors = 0
    go.wait(30)
    start = time.perf_counter()
    now = start
    for i in range(requesters):
        sent_at[i] = now
    sock.sendall(b"".join(frames))
    deadline = start + seconds
    buf = b""
    done = 0
    outstanding = requesters
    while outstanding:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
        now = time.perf_counter()
        again = []
        pos = 0
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            line = buf[pos:nl]
            if line.startswith(b"MSG "):
                parts = line.split(b" ")
                size = int(parts[-1])
                end = nl + 2 + size + 2
                if len(buf) < end:
                    break
                payload = buf[nl + 2 : end - 2]
                if b'"error":""' not in payload and b'"seq"' not in payload:
                    errors += 1
                i = int(parts[1].rsplit(b".", 1)[1])
                latencies.append(now - sent_at[i])
                done += 1
                if now < deadline:
                    sent_at[i] = now
                    again.append(frames[i])
                else:
                    outstanding -= 1
                pos = end
            else:
                if line == b"PING":
                    again.append(b"PONG\r\n")
                pos = nl + 2
        buf = buf[pos:]
        if again:
            sock.sendall(b"".join(again))
    elapsed = time.perf_counter() - start
    sock.close()
    out.put((done, elapsed, errors, latencies))


def acked_sends(port: int, subject: str, seconds: float) -> dict[str, float]:
    out, go = loadgen.queue(), loadgen.event()
    proc = loadgen.spawn(closed_loop, port, subject, REQUESTERS, seconds, out, go)
    go.set()
    done, elapsed, errors, latencies = out.get(timeout=seconds + 120)
    proc.join()
    latencies.sort()
    return {
        "rate": done / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "errors": errors,
        "count": done,
    }


# -- set-up and the request/reply scenarios (nats-py) -----------------------------------------------


async def prepare(reference: Server, robustmq: Server) -> None:
    ref = await nats.connect(f"nats://127.0.0.1:{reference.port}")
    js = ref.jetstream()
    await js.add_stream(name=STREAM, subjects=[MAILBOX])
    await ref.close()
    ours = await nats.connect(f"nats://127.0.0.1:{robustmq.port}")
    reply = orjson.loads(
        (await ours.request("$mq9.AI.MAILBOX.CREATE", orjson.dumps({"name": MAILBOX}), 10)).data
    )
    assert reply["error"] == "", reply
    await ours.close()


async def fetch_latency(reference: Server, robustmq: Server, rounds: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    ours = await nats.connect(f"nats://127.0.0.1:{robustmq.port}")
    body = orjson.dumps({"deliver": "earliest", "config": {"num_msgs": FETCH_BATCH, "max_wait_ms": 0}})
    subject = f"$mq9.AI.MSG.FETCH.{MAILBOX}"
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        msg = await ours.request(subject, body, 10)
        times.append(time.perf_counter() - t0)
        assert len(orjson.loads(msg.data)["messages"]) == FETCH_BATCH
    await ours.close()
    results["robustmq"] = {"p50_ms": percentile(times, 0.5) * 1000, "p99_ms": percentile(times, 0.99) * 1000}

    ref = await nats.connect(f"nats://127.0.0.1:{reference.port}")
    js = ref.jetstream()
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    psub = await js.pull_subscribe(
        MAILBOX,
        durable="bench",
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
    )
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        msgs = await psub.fetch(FETCH_BATCH, timeout=10)
        times.append(time.perf_counter() - t0)
        assert len(msgs) == FETCH_BATCH
    await ref.close()
    results["nats-server -js"] = {
        "p50_ms": percentile(times, 0.5) * 1000,
        "p99_ms": percentile(times, 0.99) * 1000,
    }
    return results


def synthetic_cards(count: int) -> list[dict[str, Any]]:
    """``count`` cards: the labelled agents, then variants that mix their skills and words."""
    base = json.loads(LABELLED.read_text())["agents"]
    rng = random.Random(7)
    words = sorted(
        {w for c in base for s in c["skills"] for w in s["description"].lower().split() if w.isalpha()}
    )
    cards = [dict(c) for c in base]
    while len(cards) < count:
        a, b = rng.sample(base, 2)
        i = len(cards)
        extra = " ".join(rng.sample(words, 6))
        cards.append(
            {
                "name": f"{a['name']}-{b['name']}-{i}",
                "description": f"{a['description']} Also {b['description'].lower()} ({extra})",
                "version": "1.0.0",
                "skills": [
                    a["skills"][0],
                    {**b["skills"][0], "id": f"s{i}", "tags": [*b["skills"][0]["tags"], extra.split()[0]]},
                ],
            }
        )
    return cards


async def discover_latency(robustmq: Server, queries: int) -> dict[str, Any]:
    nc = await nats.connect(f"nats://127.0.0.1:{robustmq.port}")
    cards = synthetic_cards(AGENTS)
    t0 = time.perf_counter()
    for start in range(0, len(cards), 250):
        batch = cards[start : start + 250]
        replies = await asyncio.gather(
            *(nc.request("$mq9.AI.AGENT.REGISTER", orjson.dumps(c), 30) for c in batch)
        )
        assert all(orjson.loads(r.data)["error"] == "" for r in replies)
    register_s = time.perf_counter() - t0
    # the first semantic query waits for every card to be embedded
    t0 = time.perf_counter()
    await nc.request("$mq9.AI.AGENT.DISCOVER", orjson.dumps({"semantic": "warm up", "limit": 5}), 120)
    embed_s = time.perf_counter() - t0
    labelled = [q["text"] for q in json.loads(LABELLED.read_text())["queries"]]
    out: dict[str, Any] = {"register_s": register_s, "embed_s": embed_s}
    for mode in ("text", "semantic"):
        times = []
        for i in range(queries):
            body = orjson.dumps({mode: labelled[i % len(labelled)], "limit": 10})
            t = time.perf_counter()
            msg = await nc.request("$mq9.AI.AGENT.DISCOVER", body, 10)
            times.append(time.perf_counter() - t)
            assert orjson.loads(msg.data)["error"] == ""
        out[mode] = {"p50_ms": percentile(times, 0.5) * 1000, "p99_ms": percentile(times, 0.99) * 1000}
    await nc.close()
    return out


# -- report ------------------------------------------------------------------------------------------


def row(label: str, ref: str, ours: str, note: str = "") -> None:
    print(f"| {label:<40} | {ref:>16} | {ours:>16} | {note}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mq9_bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="sending time per server")
    parser.add_argument("--fetches", type=int, default=200, help="FETCH round trips per server")
    parser.add_argument("--queries", type=int, default=300, help="DISCOVER queries per mode")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="robustmq-mq9-bench-") as tmp:
        reference, robustmq = start_servers(tmp)
        try:
            asyncio.run(prepare(reference, robustmq))
            print(
                f"mq9 bench: {REQUESTERS} concurrent requesters, {PAYLOAD_BYTES} B payloads, fsync interval"
            )
            row("scenario", reference.name, "robustmq", "")
            row("-" * 40, "-" * 16, "-" * 16, "")
            ref_send = acked_sends(reference.port, MAILBOX, args.seconds)
            our_send = acked_sends(robustmq.port, f"$mq9.AI.MSG.SEND.{MAILBOX}", args.seconds)
            row(
                "acked sends/s",
                f"{ref_send['rate']:,.0f}",
                f"{our_send['rate']:,.0f}",
                f"{our_send['rate'] / ref_send['rate']:.2f}x; target >= 30,000/s; errors {our_send['errors']}",
            )
            row(
                "acked send p50 / p99 (ms)",
                f"{ref_send['p50_ms']:.2f} / {ref_send['p99_ms']:.2f}",
                f"{our_send['p50_ms']:.2f} / {our_send['p99_ms']:.2f}",
            )
            fetch = asyncio.run(fetch_latency(reference, robustmq, args.fetches))
            ref_f, our_f = fetch["nats-server -js"], fetch["robustmq"]
            row(
                f"FETCH {FETCH_BATCH} p50 / p99 (ms)",
                f"{ref_f['p50_ms']:.2f} / {ref_f['p99_ms']:.2f}",
                f"{our_f['p50_ms']:.2f} / {our_f['p99_ms']:.2f}",
                "target p50 <= 2 ms",
            )
            disc = asyncio.run(discover_latency(robustmq, args.queries))
            for mode in ("text", "semantic"):
                row(
                    f"DISCOVER {mode} p50 / p99 (ms), {AGENTS:,} agents",
                    "n/a",
                    f"{disc[mode]['p50_ms']:.2f} / {disc[mode]['p99_ms']:.2f}",
                    "target p99 <= 20 ms",
                )
            row(
                f"register {AGENTS:,} agents / embed them (s)",
                "n/a",
                f"{disc['register_s']:.1f} / {disc['embed_s']:.1f}",
            )
            row(
                "RSS at the end (MiB)",
                f"{reference.rss_kib() / 1024:.0f}",
                f"{rss_kib(robustmq.proc.pid) / 1024:.0f}",
            )
        finally:
            reference.stop()
            robustmq.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
