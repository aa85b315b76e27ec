"""NATS benchmark: robustmq against nats-server, driven by the same raw-socket load generator.

Throughput, latency and memory for both servers and their ratio; a few seconds per scenario.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench import loadgen
from bench.common import Server, free_port, start_nats_pair

IDLE_CONNECTIONS = 1000
SUBJECT = "bench.subject"


def serve_core_only(port: int) -> None:
    """The NATS listener and the router alone, without the store or the other services.

    Only for the memory figure that shows what the NATS core itself costs.
    """
    import asyncio
    import types

    import uvloop

    from robustmq.config import load_settings
    from robustmq.nats.server import NatsServer
    from robustmq.router import Router

    async def run() -> None:
        settings = load_settings(environ={}, overrides={"host": "127.0.0.1", "nats": {"port": port}})
        server = NatsServer(types.SimpleNamespace(settings=settings, router=Router()))  # type: ignore[arg-type]
        await server.start()
        await asyncio.Event().wait()

    uvloop.run(run())


def core_only_idle_rss_mib() -> float:
    port = free_port()
    server = Server("core", [sys.executable, "-m", "bench.nats_bench", "--serve-core-only", str(port)], port)
    try:
        time.sleep(0.5)
        return server.rss_kib() / 1024
    finally:
        server.stop()


# -- scenarios -----------------------------------------------------------------------------------


def publish_only(port: int, size: int, seconds: float, max_msgs: int) -> dict[str, float]:
    out, go = loadgen.queue(), loadgen.event()
    proc = loadgen.spawn(loadgen.publisher, port, SUBJECT, size, max_msgs, seconds, out, go)
    go.set()
    _, sent, start, _published, done = out.get(timeout=seconds + 60)
    proc.join()
    return {"rate": sent / (done - start), "sent": sent}


def fan_out(
    port: int,
    size: int,
    subscribers: int,
    seconds: float,
    max_msgs: int,
    mixed: bool = False,
    size_spread: int = 4,
) -> dict[str, float]:
    out, go, ready, expect = loadgen.queue(), loadgen.event(), loadgen.event(), loadgen.queue()
    pattern = SUBJECT + ".*" if mixed else SUBJECT
    counter = loadgen.spawn(loadgen.counter, port, pattern, subscribers, expect, 3.0, out, ready)
    ready.wait(30)
    pub = loadgen.spawn(
        loadgen.publisher, port, SUBJECT, size, max_msgs, seconds, out, go, mixed, size_spread
    )
    go.set()
    results = {}
    first = out.get(timeout=seconds + 120)
    results[first[0]] = first
    if first[0] == "pub":
        expect.put(first[1])
    second = out.get(timeout=seconds + 120)
    results[second[0]] = second
    if second[0] == "pub":
        expect.put(second[1])
    pub.join()
    counter.join()
    _, sent, start, _published, _done = results["pub"]
    _, delivered, _first, last = results["count"]
    elapsed = max(last - start, 1e-9)
    return {
        "rate": delivered / elapsed,
        "published_rate": sent / elapsed,
        "sent": sent,
        "lost": sent * subscribers - delivered,
    }


def request_reply(
    port: int, count: int, seconds: float, requester: Any = loadgen.requester
) -> dict[str, float]:
    ready, stop, out = loadgen.event(), loadgen.event(), loadgen.queue()
    resp = loadgen.spawn(loadgen.responder, port, "bench.req", ready, stop)
    ready.wait(30)
    req = loadgen.spawn(requester, port, "bench.req", count, seconds, out)
    _, latencies = out.get(timeout=seconds + 60)
    req.join()
    stop.set()
    resp.join(5)
    latencies.sort()
    n = len(latencies)
    return {
        "p50": latencies[n // 2] * 1e6,
        "p99": latencies[min(n - 1, int(n * 0.99))] * 1e6,
        "n": n,
    }


def idle_memory(server: Server) -> dict[str, float]:
    time.sleep(0.5)
    idle = server.rss_kib()
    socks = []
    for _ in range(IDLE_CONNECTIONS):
        s = socket.create_connection(("127.0.0.1", server.port))
        socks.append(s)
    for s in socks:
        loadgen._read_until(s, b"\r\n")
        s.sendall(loadgen.CONNECT_FRAME + b"PING\r\n")
    for s in socks:
        loadgen._read_until(s, b"PONG\r\n")
    time.sleep(0.5)
    loaded = server.rss_kib()
    for s in socks:
        s.close()
    return {
        "idle_mib": idle / 1024,
        "loaded_mib": loaded / 1024,
        "per_conn_kib": (loaded - idle) / IDLE_CONNECTIONS,
    }


def generator_ceiling(seconds: float) -> dict[str, float]:
    """The generator against fake servers: the publisher into a sink, a source into the counter."""
    import threading

    listener, port = loadgen.listen()
    threading.Thread(target=loadgen.sink_server, args=(listener,), daemon=True).start()
    pub = publish_only(port, 16, seconds, 10**9)
    listener2, port2 = loadgen.listen()
    threading.Thread(target=loadgen.source_server, args=(listener2, 16, seconds), daemon=True).start()
    out, ready, expect = loadgen.queue(), loadgen.event(), loadgen.queue()
    counter = loadgen.spawn(loadgen.counter, port2, "bench", 1, expect, 1.0, out, ready)
    ready.wait(30)
    expect.put(10**12)
    _, delivered, first, last = out.get(timeout=seconds + 30)
    counter.join()
    return {"pub_rate": pub["rate"], "count_rate": delivered / max(last - first, 1e-9)}


# -- report --------------------------------------------------------------------------------------


def _fmt_rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M/s"
    return f"{value / 1e3:.0f} k/s"


def _row(label: str, ref: float, ours: float, fmt: Callable[[float], str], note: str = "") -> None:
    ratio = ours / ref if ref else float("nan")
    print(f"| {label:<34} | {fmt(ref):>14} | {fmt(ours):>14} | {ratio:6.2f}x | {note}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nats_bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="publishing time per scenario")
    parser.add_argument("--requests", type=int, default=5000, help="request/reply round trips")
    parser.add_argument("--serve-core-only", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_core_only:
        serve_core_only(args.serve_core_only)
        return 0
    secs = args.seconds
    with tempfile.TemporaryDirectory(prefix="robustmq-bench-") as tmp:
        servers = start_nats_pair(tmp)
        ref, ours = servers
        try:
            print(f"NATS benchmark on loopback, {os.cpu_count()} CPUs, {secs:.0f} s per scenario", flush=True)
            print(f"| {'scenario':<34} | {'nats-server':>14} | {'robustmq':>14} | {'ratio':>7} | notes")
            print(f"|{'-' * 36}|{'-' * 16}|{'-' * 16}|{'-' * 8}|------")
            mem = {s.name: idle_memory(s) for s in servers}
            _row(
                "idle RSS (MiB)", mem[ref.name]["idle_mib"], mem[ours.name]["idle_mib"], lambda v: f"{v:.1f}"
            )
            print(
                f"| {'idle RSS, NATS core alone (MiB)':<34} | {'':>14} | {core_only_idle_rss_mib():>14.1f} |"
                f" {'':>7} | listener + router, no store or services",
                flush=True,
            )
            _row(
                f"RSS with {IDLE_CONNECTIONS} idle conns (MiB)",
                mem[ref.name]["loaded_mib"],
                mem[ours.name]["loaded_mib"],
                lambda v: f"{v:.1f}",
            )
            _row(
                "per idle connection (KiB)",
                mem[ref.name]["per_conn_kib"],
                mem[ours.name]["per_conn_kib"],
                lambda v: f"{v:.1f}",
            )
            for size, max_msgs in ((16, 20_000_000), (1024, 5_000_000)):
                r = {s.name: publish_only(s.port, size, secs, max_msgs) for s in servers}
                _row(f"publish only, {size} B", r[ref.name]["rate"], r[ours.name]["rate"], _fmt_rate)
            for subs in (1, 10):
                for size in (16, 1024):
                    max_msgs = 20_000_000 // subs if size == 16 else 5_000_000 // subs
                    r = {s.name: fan_out(s.port, size, subs, secs, max_msgs) for s in servers}
                    note = f"lost {r[ref.name]['lost']:.0f} / {r[ours.name]['lost']:.0f}"
                    _row(
                        f"1 -> {subs} subs, {size} B (deliveries)",
                        r[ref.name]["rate"],
                        r[ours.name]["rate"],
                        _fmt_rate,
                        note,
                    )
            # varied traffic, no repeated control line: 8 subjects interleaved, wildcard subscribers
            for subs, spread, label in (
                (1, 4, "1 -> 1, 16-19 B, 8 subjects (mixed)"),
                (10, 4, "1 -> 10, 16-19 B, 8 subjects (mixed)"),
                (1, 1009, "1 -> 1, 16-1024 B, 8 subjects (mixed)"),
                (10, 1009, "1 -> 10, 16-1024 B, 8 subjects (mixed)"),
            ):
                max_msgs = 20_000_000 // subs if spread == 4 else 5_000_000 // subs
                r = {
                    s.name: fan_out(s.port, 16, subs, secs, max_msgs, mixed=True, size_spread=spread)
                    for s in servers
                }
                note = f"lost {r[ref.name]['lost']:.0f} / {r[ours.name]['lost']:.0f}"
                _row(label, r[ref.name]["rate"], r[ours.name]["rate"], _fmt_rate, note)
            r = {s.name: request_reply(s.port, args.requests, secs) for s in servers}
            _row("request/reply raw p50 (us)", r[ref.name]["p50"], r[ours.name]["p50"], lambda v: f"{v:.0f}")
            _row("request/reply raw p99 (us)", r[ref.name]["p99"], r[ours.name]["p99"], lambda v: f"{v:.0f}")
            r = {
                s.name: request_reply(s.port, args.requests, secs, loadgen.nats_py_requester) for s in servers
            }
            _row(
                "request/reply nats-py p50 (us)",
                r[ref.name]["p50"],
                r[ours.name]["p50"],
                lambda v: f"{v:.0f}",
            )
            _row(
                "request/reply nats-py p99 (us)",
                r[ref.name]["p99"],
                r[ours.name]["p99"],
                lambda v: f"{v:.0f}",
            )
            ceiling = generator_ceiling(min(secs, 2.0))
            print(
                f"load generator ceiling (fake servers): publisher {_fmt_rate(ceiling['pub_rate'])} at 16 B, "
                f"MSG counter {_fmt_rate(ceiling['count_rate'])} at 16 B",
                flush=True,
            )
        finally:
            for s in servers:
                s.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
