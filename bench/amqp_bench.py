"""AMQP 0-9-1 benchmark: robustmq against RabbitMQ, driven by the same raw-socket load generator.

Python AMQP clients top out at 2-5k msg/s, so the generator writes prebuilt frames and its
consumers only count Basic.Deliver frames. Scenarios (100-byte bodies): transient fire-and-forget
1 -> 1 with auto-ack, persistent with publisher confirms and manual acks, fan-out to 10 queues,
and idle connections (broker RSS per connection). RabbitMQ is Debian's ``rabbitmq-server``,
started and stopped here on loopback; its column is skipped when it is not installed.
Run: ``.venv/bin/python -m bench.amqp_bench`` (a few seconds per scenario).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from pamqp import commands as C
from pamqp import frame as pamqp_frame

from bench import common
from bench.common import LOOPBACK, rss_kib

BODY = b"x" * 100
PUBLISH_BATCH_MSGS = 500
CONFIRM_WINDOW_MSGS = 200
ACK_EVERY_MSGS = 100
PREFETCH_MSGS = 1000
MAX_MSGS = 300_000  # per scenario, whatever the duration: bounds the broker's memory
DRAIN_S = 3.0
IDLE_CONNECTIONS = 300
FANOUT_QUEUES = 10
RABBIT_INIT = "/etc/init.d/rabbitmq-server"
RABBIT_CONF = Path("/etc/rabbitmq/rabbitmq.conf")
_CTX = mp.get_context("fork")
_HEAD = struct.Struct(">BHI")
HEADER = b"AMQP\x00\x00\x09\x01"


# -- a minimal blocking AMQP client -----------------------------------------------------------------


class RawClient:
    """Frames over a blocking socket; control methods through pamqp, message frames counted raw."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((LOOPBACK, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.sock.sendall(HEADER)
        self.expect("Connection.Start")
        self.send(0, C.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest", client_properties={}))
        self.expect("Connection.Tune")
        self.send(0, C.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0))
        self.send(0, C.Connection.Open(virtual_host="/"))
        self.expect("Connection.OpenOk")

    def send(self, channel: int, method: Any) -> None:
        self.sock.sendall(pamqp_frame.marshal(method, channel))

    def frames(self, timeout: float | None = None) -> list[tuple[int, int, bytes]]:
        """Whatever whole frames the next read brings: (type, channel, payload)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return []
        if not data:
            raise ConnectionError("closed by the broker")
        buf = self.buf
        buf += data
        out = []
        pos = 0
        while len(buf) - pos >= 7:
            ftype, channel, size = _HEAD.unpack_from(buf, pos)
            end = pos + 7 + size
            if end >= len(buf):
                break
            out.append((ftype, channel, bytes(buf[pos + 7 : end])))
            pos = end + 1
        del buf[:pos]
        return out

    def expect(self, name: str) -> Any:
        while True:
            for ftype, _ch, payload in self.frames(10.0):
                if ftype != 1:
                    continue
                _n, _c, method = pamqp_frame.unmarshal(_HEAD.pack(1, 0, len(payload)) + payload + b"\xce")
                if method.name == name:
                    return method
                if method.name in ("Connection.Close", "Channel.Close"):
                    raise ConnectionError(f"{method.reply_code} {method.reply_text}")

    def channel(self, number: int = 1) -> None:
        self.send(number, C.Channel.Open())
        self.expect("Channel.OpenOk")

    def close(self) -> None:
        self.sock.close()


def _publish_frames(exchange: str, key: str, persistent: bool, count: int) -> bytes:
    props = C.Basic.Properties(delivery_mode=2 if persistent else 1)
    one = (
        pamqp_frame.marshal(C.Basic.Publish(exchange=exchange, routing_key=key), 1)
        + pamqp_frame.marshal(pamqp_header(props), 1)
        + pamqp_frame.marshal(pamqp_body(), 1)
    )
    return one * count


def pamqp_header(props: C.Basic.Properties) -> Any:
    from pamqp import header

    return header.ContentHeader(0, len(BODY), props)


def pamqp_body() -> Any:
    from pamqp import body

    return body.ContentBody(BODY)


def _is_deliver(payload: bytes) -> bool:
    return payload[:4] == b"\x00\x3c\x00\x3c"


def _delivery_tag(payload: bytes) -> int:
    n = payload[4]
    return struct.unpack_from(">Q", payload, 5 + n)[0]


# -- processes ------------------------------------------------------------------------------------


def _consumer(port: int, queues: list[str], manual_ack: bool, expected: int, ready: Any, out: Any) -> None:
    c = RawClient(port)
    c.channel()
    if manual_ack:
        c.send(1, C.Basic.Qos(prefetch_count=PREFETCH_MSGS))
        c.expect("Basic.QosOk")
    for i, q in enumerate(queues):
        c.send(1, C.Basic.Consume(queue=q, consumer_tag=f"c{i}", no_ack=not manual_ack))
        c.expect("Basic.ConsumeOk")
    ready.set()
    count = 0
    first = last = 0.0
    since_ack = 0
    idle_deadline = time.monotonic() + 60
    while count < expected and time.monotonic() < idle_deadline:
        frames = c.frames(DRAIN_S)
        if not frames:
            break
        now = time.monotonic()
        tag = 0
        for ftype, _ch, payload in frames:
            if ftype == 1 and _is_deliver(payload):
                count += 1
                if manual_ack:
                    tag = _delivery_tag(payload)
                    since_ack += 1
        if count and not first:
            first = now
        last = now
        if manual_ack and tag and since_ack >= ACK_EVERY_MSGS:
            c.send(1, C.Basic.Ack(delivery_tag=tag, multiple=True))
            since_ack = 0
    out.put((count, first, last))
    c.close()


def _publisher(
    port: int, exchange: str, key: str, persistent: bool, confirms: bool, duration: float, out: Any
) -> None:
    c = RawClient(port)
    c.channel()
    if confirms:
        c.send(1, C.Confirm.Select())
        c.expect("Confirm.SelectOk")
    batch = _publish_frames(exchange, key, persistent, PUBLISH_BATCH_MSGS if not confirms else ACK_EVERY_MSGS)
    per_batch = PUBLISH_BATCH_MSGS if not confirms else ACK_EVERY_MSGS
    sent = acked = 0
    started = time.monotonic()
    deadline = started + duration
    while time.monotonic() < deadline and sent < MAX_MSGS:
        if confirms:
            while sent - acked >= CONFIRM_WINDOW_MSGS:
                for ftype, _ch, payload in c.frames(5.0):
                    if ftype == 1 and payload[:4] == b"\x00\x3c\x00\x50":  # Basic.Ack
                        tag = struct.unpack_from(">Q", payload, 4)[0]
                        acked = max(acked, tag)
        c.sock.sendall(batch)
        sent += per_batch
    if confirms:
        end = time.monotonic() + DRAIN_S
        while acked < sent and time.monotonic() < end:
            for ftype, _ch, payload in c.frames(1.0):
                if ftype == 1 and payload[:4] == b"\x00\x3c\x00\x50":
                    acked = max(acked, struct.unpack_from(">Q", payload, 4)[0])
    out.put((sent, acked, time.monotonic() - started))
    c.close()


def _setup(port: int, queues: list[str], durable: bool, fanout: str | None) -> None:
    c = RawClient(port)
    c.channel()
    if fanout:
        c.send(1, C.Exchange.Declare(exchange=fanout, exchange_type="fanout", auto_delete=False))
        c.expect("Exchange.DeclareOk")
    for q in queues:
        c.send(1, C.Queue.Declare(queue=q, durable=durable))
        c.expect("Queue.DeclareOk")
        if fanout:
            c.send(1, C.Queue.Bind(queue=q, exchange=fanout, routing_key=""))
            c.expect("Queue.BindOk")
    c.close()


def _teardown(port: int, queues: list[str], fanout: str | None) -> None:
    c = RawClient(port)
    c.channel()
    for q in queues:
        c.send(1, C.Queue.Delete(queue=q))
        c.expect("Queue.DeleteOk")
    if fanout:
        c.send(1, C.Exchange.Delete(exchange=fanout))
        c.expect("Exchange.DeleteOk")
    c.close()


def run_scenario(port: int, duration: float, *, persistent: bool, fanout: bool) -> dict[str, float]:
    tag = os.urandom(4).hex()
    queues = [f"bench-{tag}-{i}" for i in range(FANOUT_QUEUES if fanout else 1)]
    exchange = f"bench-fan-{tag}" if fanout else ""
    _setup(port, queues, durable=persistent, fanout=exchange or None)
    ready = _CTX.Event()
    results: Any = _CTX.Queue()
    expected = MAX_MSGS * len(queues)
    consumer = _CTX.Process(target=_consumer, args=(port, queues, persistent, expected, ready, results))
    consumer.start()
    ready.wait(30)
    pub_out: Any = _CTX.Queue()
    publisher = _CTX.Process(
        target=_publisher,
        args=(port, exchange, "" if fanout else queues[0], persistent, persistent, duration, pub_out),
    )
    publisher.start()
    sent, acked, pub_s = pub_out.get(timeout=duration + 60)
    publisher.join(10)
    count, first, last = results.get(timeout=duration + 120)
    consumer.join(10)
    _teardown(port, queues, exchange or None)
    span = max(last - first, 1e-6)
    return {
        "sent": sent, "delivered": count, "rate": count / span, "publish_rate": sent / pub_s,
        "acked": acked, "lost_pct": 100.0 * (1 - count / max(1, sent * len(queues))),
    }  # fmt: skip


def idle_connections(port: int, pid: int, n: int) -> dict[str, float]:
    time.sleep(0.5)
    before = rss_kib(pid)
    clients = []
    for _ in range(n):
        c = RawClient(port)
        c.channel()
        clients.append(c)
    time.sleep(1.0)
    after = rss_kib(pid)
    for c in clients:
        c.close()
    return {"rss_before": before, "rss_after": after, "kib_per_conn": (after - before) / n}


# -- servers --------------------------------------------------------------------------------------


class RabbitMQ:
    """Debian's rabbitmq-server through its init script (loopback per /etc/rabbitmq, see README)."""

    port = 5672

    def __init__(self) -> None:
        env = {**os.environ, "ERL_EPMD_ADDRESS": LOOPBACK}
        subprocess.run([RABBIT_INIT, "start"], env=env, check=True, capture_output=True, timeout=120)
        common.wait_port(self.port)
        self.pid = self._beam_pid()

    @staticmethod
    def available() -> bool:
        if not (os.path.exists(RABBIT_INIT) and shutil.which("rabbitmq-server")):
            return False
        return RABBIT_CONF.exists() and "127.0.0.1" in RABBIT_CONF.read_text()

    @staticmethod
    def _beam_pid() -> int:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"beam" in cmd and b"rabbit" in cmd:
                    return int(entry)
        return 0

    def stop(self) -> None:
        env = {**os.environ, "ERL_EPMD_ADDRESS": LOOPBACK}
        subprocess.run([RABBIT_INIT, "stop"], env=env, capture_output=True, timeout=120)


def bench_server(port: int, pid: int, duration: float, idle: int) -> dict[str, float]:
    out: dict[str, float] = {"rss_idle": rss_kib(pid)}
    out.update(idle_connections(port, pid, idle))  # first, before the scenarios grow the heap
    for name, persistent, fanout in (
        ("transient", False, False),
        ("confirms", True, False),
        ("fanout", False, True),
    ):
        r = run_scenario(port, duration, persistent=persistent, fanout=fanout)
        print(f"  {name}: {r}", flush=True)
        out[name] = r["rate"]
        out[f"{name}_lost"] = r["lost_pct"]
        if persistent:
            out["confirms_acked_rate"] = r["acked"] / duration
    return out


ROWS = [
    ("transient 1->1 auto-ack deliveries/s", "transient", "{:,.0f}", True),
    ("persistent + confirms + manual ack deliveries/s", "confirms", "{:,.0f}", True),
    ("fan-out 1->10 queues deliveries/s", "fanout", "{:,.0f}", True),
    ("undelivered % (transient / confirms / fan-out)", ("transient_lost", "confirms_lost", "fanout_lost"),
     "{:.1f} / {:.1f} / {:.1f}", None),
    ("broker RSS at start KiB", "rss_idle", "{:,.0f}", None),
    ("KiB per idle connection", "kib_per_conn", "{:.2f}", False),
]  # fmt: skip


def print_table(results: dict[str, dict[str, float] | None]) -> None:
    rm, rb = results.get("robustmq"), results.get("rabbitmq")
    print("| scenario | robustmq | rabbitmq | robustmq / rabbitmq |")
    print("|---|---|---|---|")
    for label, key, fmt, higher in ROWS:
        cells = []
        for res in (rm, rb):
            if res is None:
                cells.append("n/a")
            elif isinstance(key, tuple):
                cells.append(fmt.format(*(res[k] for k in key)))
            else:
                cells.append(fmt.format(res[key]))
        ratio = ""
        if higher is not None and rm and rb and not isinstance(key, tuple) and rb[key]:
            ratio = f"{rm[key] / rb[key]:.3g}x" + ("" if higher else " (lower is better)")
        print(f"| {label} | {cells[0]} | {cells[1]} | {ratio} |")


def _run_one(name: str, duration: float, idle: int) -> dict[str, float]:
    if name == "robustmq":
        with tempfile.TemporaryDirectory(prefix="amqp-bench-") as tmp:
            server = common.start_robustmq(tmp, listener="amqp")
            try:
                return bench_server(server.port, server.proc.pid, duration, idle)
            finally:
                server.stop()
    rabbit = RabbitMQ()
    try:
        return bench_server(rabbit.port, rabbit.pid, duration, idle)
    finally:
        rabbit.stop()


def _best_of(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Per figure, the better of two rounds (rates: higher; memory and losses: lower)."""
    out = {}
    for key, value in a.items():
        higher = key in ("transient", "confirms", "fanout", "confirms_acked_rate")
        out[key] = max(value, b[key]) if higher else min(value, b[key])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per scenario (max 15)")
    parser.add_argument("--idle", type=int, default=IDLE_CONNECTIONS, help="idle connections")
    parser.add_argument("--only", nargs="*", default=["robustmq", "rabbitmq"])
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is shown")
    args = parser.parse_args(argv)
    duration = min(args.duration, 15.0)
    results: dict[str, dict[str, float] | None] = {}
    if "rabbitmq" in args.only and not RabbitMQ.available():
        print("rabbitmq: not installed or not configured for loopback, column skipped", flush=True)
        results["rabbitmq"] = None
    # the servers take turns, and each keeps its best round: a shared machine's load comes and goes
    for round_no in range(args.rounds):
        for name in ("robustmq", "rabbitmq"):
            if name not in args.only or (name in results and results[name] is None):
                continue
            print(f"running {name} (round {round_no + 1} of {args.rounds}) ...", flush=True)
            got = _run_one(name, duration, args.idle)
            best = results.get(name)
            results[name] = got if best is None else _best_of(best, got)
    print()
    print(f"AMQP 0-9-1, {len(BODY)}-byte bodies, {duration:.0f} s per scenario, best of {args.rounds} rounds, "
          f"loopback, {os.cpu_count()} cores")  # fmt: skip
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
