"""MQTT benchmark: robustmq against Mosquitto and amqtt, driven by the same raw-socket load generator.

Scenarios (64-byte payloads, MQTT 3.1.1): QoS 0 and QoS 1 throughput 1 -> 1, QoS 0 fan-out 1 -> 10,
latency at a light fixed rate, and 1,000 idle connections (connect time, broker RSS per connection).
Bounded: a few seconds per scenario. Run: ``.venv/bin/python -m bench.mqtt_bench``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import selectors
import shutil
import socket
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import common
from bench.common import Server, free_port, rss_kib

PAYLOAD_BYTES = 64
TOPIC = b"bench/t"
QOS0_WINDOW_MSGS = 20_000  # the publisher stays at most this far ahead of the slowest subscriber
QOS1_WINDOW_MSGS = 1_000  # unacknowledged QoS 1 publishes
QOS0_BATCH_MSGS = 500
QOS1_BATCH_MSGS = 100
DRAIN_S = 3.0
STOP_GRACE_S = 2.0
IDLE_CONNECTIONS = 1000
LATENCY_RATE_PER_S = 2000
LATENCY_SAMPLE_EVERY = 50
_CTX = mp.get_context("fork")
_TS = struct.Struct(">Q")


# -- wire helpers (MQTT 3.1.1, just enough for the generator) ----------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _varint(len(body)) + body


def _connect_frame(client_id: str, keepalive: int = 600) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02" + struct.pack(">H", keepalive) + struct.pack(">H", len(cid)) + cid
    return _packet(0x10, body)


def _subscribe_frame(topic: bytes, qos: int) -> bytes:
    return _packet(0x82, b"\x00\x01" + struct.pack(">H", len(topic)) + topic + bytes((qos,)))


def _open(port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(_connect_frame(client_id))
    _read_exact(sock, 4)  # CONNACK
    return sock


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


# -- load generator processes ------------------------------------------------------------------------


def _subscriber(port: int, n: int, qos: int, ready, stop, counts, out) -> None:
    socks = []
    for i in range(n):
        s = _open(port, f"bench-sub-{os.getpid()}-{i}")
        s.sendall(_subscribe_frame(TOPIC, qos))
        _read_exact(s, 5)  # SUBACK
        s.setblocking(False)
        socks.append(s)
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    bufs = [b""] * n
    local = [0] * n
    first = last = 0.0
    latencies: list[int] = []
    ready.set()
    idle_since = None
    stopped_at = None
    while True:
        events = sel.select(0.05)
        now = time.monotonic()
        if stop.is_set():
            if stopped_at is None:
                stopped_at = now
            if now - stopped_at > STOP_GRACE_S:  # a server still trickling: count what came
                break
        if not events:
            if stop.is_set():
                if idle_since is None:
                    idle_since = now
                if now - idle_since > 0.5:
                    break
            continue
        idle_since = None
        for key, _ in events:
            i = key.data
            try:
                data = key.fileobj.recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(key.fileobj)
                continue
            if not first:
                first = now
            last = now
            buf = bufs[i] + data if bufs[i] else data
            pos = 0
            end = len(buf)
            acks = []
            cnt = local[i]
            while end - pos >= 2:
                b0 = buf[pos]
                ln = 0
                shift = 0
                p = pos + 1
                while p < end:
                    b = buf[p]
                    ln |= (b & 0x7F) << shift
                    p += 1
                    if b < 0x80:
                        break
                    shift += 7
                else:
                    break
                if p + ln > end:
                    break
                if b0 >> 4 == 3:
                    cnt += 1
                    tl = (buf[p] << 8) | buf[p + 1]
                    body = p + 2 + tl
                    if b0 & 0x06:
                        acks.append(b"\x40\x02" + buf[body : body + 2])
                        body += 2
                    if cnt % LATENCY_SAMPLE_EVERY == 0:
                        latencies.append(time.monotonic_ns() - _TS.unpack_from(buf, body)[0])
                pos = p + ln
            bufs[i] = buf[pos:]
            local[i] = cnt
            counts[i] = cnt
            if acks:
                try:
                    key.fileobj.sendall(b"".join(acks))
                except BlockingIOError:
                    key.fileobj.setblocking(True)
                    key.fileobj.sendall(b"".join(acks))
                    key.fileobj.setblocking(False)
    out.put((sum(local), first, last, latencies))
    for s in socks:
        s.close()


def _publisher(port: int, qos: int, duration_s: float, counts, n_subs: int, rate: float, out) -> None:
    sock = _open(port, f"bench-pub-{os.getpid()}")
    head = struct.pack(">H", len(TOPIC)) + TOPIC
    pad = b"x" * (PAYLOAD_BYTES - _TS.size)
    first0 = bytes((0x30,)) + _varint(len(head) + PAYLOAD_BYTES)
    first1 = bytes((0x32,)) + _varint(len(head) + 2 + PAYLOAD_BYTES)
    batch = QOS0_BATCH_MSGS if qos == 0 else QOS1_BATCH_MSGS
    sent = acked = 0
    ack_bytes = 0
    pid = 0
    sock.setblocking(False)
    started = time.monotonic()
    deadline = started + duration_s
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if qos:
            try:
                while True:
                    data = sock.recv(1 << 20)
                    if not data:
                        break
                    ack_bytes += len(data)
            except BlockingIOError:
                pass
            acked = ack_bytes // 4
            if sent - acked >= QOS1_WINDOW_MSGS:
                time.sleep(0.0002)
                continue
        elif rate == 0 and sent - min(counts[:n_subs]) >= QOS0_WINDOW_MSGS:
            time.sleep(0.0002)
            continue
        if rate:
            due = int((now - started) * rate)
            if sent >= due:
                time.sleep(0.0005)
                continue
            n = 1
        else:
            n = batch
        ts = _TS.pack(time.monotonic_ns())
        if qos == 0:
            frame = first0 + head + ts + pad
            data = frame * n
        else:
            parts = []
            for _ in range(n):
                pid = pid + 1 if pid < 65535 else 1
                parts.append(first1 + head + struct.pack(">H", pid) + ts + pad)
            data = b"".join(parts)
        sock.setblocking(True)
        sock.sendall(data)
        sock.setblocking(False)
        sent += n
    elapsed = time.monotonic() - started
    if qos:  # collect the remaining acks for a while
        sock.settimeout(0.5)
        end = time.monotonic() + DRAIN_S
        while ack_bytes // 4 < sent and time.monotonic() < end:
            try:
                data = sock.recv(1 << 20)
            except (TimeoutError, BlockingIOError):
                continue
            if not data:
                break
            ack_bytes += len(data)
        acked = ack_bytes // 4
    out.put((sent, acked, elapsed))
    sock.close()


@dataclass
class RunResult:
    delivered_per_s: float = 0.0
    undelivered_pct: float = 0.0
    acks_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    extra: dict = field(default_factory=dict)


def run_pubsub(port: int, qos: int, n_subs: int, duration_s: float, rate: float = 0) -> RunResult:
    counts = _CTX.Array("q", n_subs, lock=False)
    ready, stop = _CTX.Event(), _CTX.Event()
    sub_out, pub_out = _CTX.Queue(), _CTX.Queue()
    sub = _CTX.Process(target=_subscriber, args=(port, n_subs, qos, ready, stop, counts, sub_out))
    sub.start()
    if not ready.wait(30):
        sub.kill()
        raise RuntimeError("subscribers did not start")
    time.sleep(0.2)
    pub = _CTX.Process(target=_publisher, args=(port, qos, duration_s, counts, n_subs, rate, pub_out))
    pub.start()
    sent, acked, elapsed = pub_out.get(timeout=duration_s + DRAIN_S + 30)
    pub.join(10)
    drain_end = time.monotonic() + DRAIN_S
    while time.monotonic() < drain_end and sum(counts[:n_subs]) < sent * n_subs:
        time.sleep(0.05)
    stop.set()
    delivered, first, last, lat = sub_out.get(timeout=30)
    sub.join(10)
    r = RunResult()
    r.delivered_per_s = delivered / (last - first) if last > first else 0.0
    r.undelivered_pct = 100.0 * (sent * n_subs - delivered) / max(1, sent * n_subs)
    r.acks_per_s = acked / elapsed if qos else 0.0
    if lat:
        lat.sort()
        r.p50_ms = lat[len(lat) // 2] / 1e6
        r.p99_ms = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e6
    r.extra = {"sent": sent, "delivered": delivered}
    return r


def run_idle(port: int, pid: int, n: int) -> tuple[float, float, float]:
    """(seconds to connect n clients and get every CONNACK, RSS before KiB, RSS after KiB)."""
    before = rss_kib(pid)
    socks = []
    started = time.monotonic()
    sel = selectors.DefaultSelector()
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(_connect_frame(f"idle-{i}"))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    pending = n
    deadline = time.monotonic() + 15
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            try:
                if key.fileobj.recv(16):
                    pending -= 1
                    sel.unregister(key.fileobj)
            except BlockingIOError:
                pass
    took = time.monotonic() - started
    time.sleep(1.0)
    after = rss_kib(pid)
    for s in socks:
        s.close()
    if pending:
        took = float("nan")
    return took, before, after


# -- servers -----------------------------------------------------------------------------------------


def start_robustmq(tmp: Path) -> Server:
    return common.start_robustmq(
        str(tmp / "robustmq"), "--log-level", "warning", listener="mqtt", stderr=None
    )


def start_mosquitto(tmp: Path) -> Server | None:
    exe = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    if exe is None:
        return None
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"per_listener_settings false\nallow_anonymous true\nlistener {port} 127.0.0.1\n"
        "persistence false\nmax_keepalive 65535\n"
    )
    return Server("mosquitto", [exe, "-c", str(conf)], port)


def start_amqtt(tmp: Path, exe: str | None) -> Server | None:
    if not exe or not os.path.exists(exe):
        return None
    port = free_port()
    conf = tmp / "amqtt.yaml"
    conf.write_text(
        f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
    )
    return Server("amqtt", [exe, "-c", str(conf)], port)


# -- the run -------------------------------------------------------------------------------------------


def settle(pid: int, timeout_s: float = 20.0) -> float:
    """Wait until the server's RSS stops growing (background start-up work), return it in KiB."""
    last = rss_kib(pid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = rss_kib(pid)
        if abs(now - last) < 256:
            return now
        last = now
    return last


def bench_server(server: Server, duration_s: float, idle: int) -> dict[str, float]:
    out: dict[str, float] = {"rss_idle_kib": settle(server.proc.pid)}
    # idle connections first, so the RSS growth is not hidden by memory freed after the load runs
    took, before, after = run_idle(server.port, server.proc.pid, idle)
    out.update(
        idle_s=took, idle_rss_before=before, idle_rss_after=after, idle_kib_per_conn=(after - before) / idle
    )
    r = run_pubsub(server.port, 0, 1, duration_s)
    out.update(qos0=r.delivered_per_s, qos0_lost=r.undelivered_pct, qos0_p50=r.p50_ms, qos0_p99=r.p99_ms)
    r = run_pubsub(server.port, 1, 1, duration_s)
    out.update(qos1=r.delivered_per_s, qos1_acks=r.acks_per_s, qos1_lost=r.undelivered_pct, qos1_p50=r.p50_ms,
               qos1_p99=r.p99_ms)  # fmt: skip
    r = run_pubsub(server.port, 0, 10, duration_s)
    out.update(fanout=r.delivered_per_s, fanout_lost=r.undelivered_pct)
    r = run_pubsub(server.port, 0, 1, min(duration_s, 3.0), rate=LATENCY_RATE_PER_S)
    out.update(light_p50=r.p50_ms, light_p99=r.p99_ms)
    out["rss_end_kib"] = rss_kib(server.proc.pid)
    return out


ROWS = [
    ("QoS 0 1->1 delivered/s", "qos0", "{:,.0f}", True),
    ("QoS 0 1->1 undelivered %", "qos0_lost", "{:.1f}", None),
    ("QoS 0 1->1 latency p50/p99 ms (saturated)", ("qos0_p50", "qos0_p99"), "{:.1f} / {:.1f}", None),
    ("QoS 1 1->1 delivered/s", "qos1", "{:,.0f}", True),
    ("QoS 1 publisher acks/s", "qos1_acks", "{:,.0f}", True),
    ("QoS 1 1->1 undelivered %", "qos1_lost", "{:.1f}", None),
    ("QoS 1 1->1 latency p50/p99 ms (saturated)", ("qos1_p50", "qos1_p99"), "{:.1f} / {:.1f}", None),
    ("QoS 0 fan-out 1->10 deliveries/s", "fanout", "{:,.0f}", True),
    ("QoS 0 fan-out undelivered %", "fanout_lost", "{:.1f}", None),
    (
        f"latency p50/p99 ms at {LATENCY_RATE_PER_S:,} msg/s",
        ("light_p50", "light_p99"),
        "{:.2f} / {:.2f}",
        None,
    ),
    (f"{IDLE_CONNECTIONS:,} idle connections: connect time s", "idle_s", "{:.2f}", False),
    (
        "RSS before -> with idle connections KiB",
        ("idle_rss_before", "idle_rss_after"),
        "{:,.0f} -> {:,.0f}",
        None,
    ),
    ("KiB per idle connection", "idle_kib_per_conn", "{:.2f}", False),
    ("broker RSS at start KiB", "rss_idle_kib", "{:,.0f}", None),
]


def _cell(results: dict[str, float] | None, key, fmt: str) -> str:
    if results is None:
        return "n/a"
    if isinstance(key, tuple):
        return fmt.format(*(results[k] for k in key))
    return fmt.format(results[key])


def print_table(results: dict[str, dict[str, float] | None]) -> None:
    names = list(results)
    header = ["scenario", *names, "robustmq / mosquitto", "robustmq / amqtt"]
    lines = [header]
    rm = results.get("robustmq")
    for label, key, fmt, higher in ROWS:
        row = [label, *(_cell(results[n], key, fmt) for n in names)]
        for ref in ("mosquitto", "amqtt"):
            other = results.get(ref)
            if higher is None or rm is None or other is None or isinstance(key, tuple) or not other[key]:
                row.append("")
            else:
                ratio = rm[key] / other[key]
                row.append(f"{ratio:.2f}x" if higher else f"{ratio:.2f}x (lower is better)")
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    for j, row in enumerate(lines):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--duration", type=float, default=4.0, help="seconds per throughput scenario (max 15)"
    )
    parser.add_argument("--idle", type=int, default=IDLE_CONNECTIONS, help="idle connections")
    parser.add_argument("--amqtt", default=os.environ.get("AMQTT_BIN", "/tmp/amqtt-venv/bin/amqtt"),
                        help="the amqtt executable (installed in a separate virtualenv)")  # fmt: skip
    parser.add_argument("--only", nargs="*", default=["robustmq", "mosquitto", "amqtt"])
    args = parser.parse_args(argv)
    duration = min(args.duration, 15.0)
    results: dict[str, dict[str, float] | None] = {}
    with tempfile.TemporaryDirectory(prefix="mqtt-bench-") as tmpdir:
        tmp = Path(tmpdir)
        starters = {
            "robustmq": lambda: start_robustmq(tmp),
            "mosquitto": lambda: start_mosquitto(tmp),
            "amqtt": lambda: start_amqtt(tmp, args.amqtt),
        }
        for name in ("robustmq", "mosquitto", "amqtt"):
            if name not in args.only:
                continue
            server = starters[name]()
            if server is None:
                print(f"{name}: not installed, column skipped", flush=True)
                results[name] = None
                continue
            try:
                print(f"running {name} ...", flush=True)
                results[name] = bench_server(server, duration, args.idle)
            finally:
                server.stop()
    print()
    print(
        f"MQTT 3.1.1, {PAYLOAD_BYTES}-byte payloads, {duration:.0f} s per scenario, loopback, {os.cpu_count()} cores"
    )
    print_table(results)
    rm, mq = results.get("robustmq"), results.get("mosquitto")
    if rm and mq:
        print()
        print(f"targets: QoS 0 >= 0.5x mosquitto: {rm['qos0'] / mq['qos0']:.2f}x; "
              f"QoS 1 >= 0.5x: {rm['qos1'] / mq['qos1']:.2f}x; "
              f"idle <= 8 KiB/conn: {rm['idle_kib_per_conn']:.2f} KiB")  # fmt: skip
    am = results.get("amqtt")
    if rm and am:
        print(f"targets: >= 20x amqtt: QoS 0 {rm['qos0'] / am['qos0']:.1f}x, QoS 1 {rm['qos1'] / am['qos1']:.1f}x, "
              f"fan-out {rm['fanout'] / am['fanout']:.1f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
