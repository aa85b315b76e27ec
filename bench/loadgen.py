"""A raw-socket NATS load generator: prebuilt PUB frames in large batches, MSG counters, request/reply.

One process per role, the same code for every server, and fake servers to measure its own ceiling.
"""

from __future__ import annotations

import multiprocessing as mp
import selectors
import socket
import time
from typing import Any

BATCH_BYTES = 64 * 1024
RECV_BYTES = 1024 * 1024
CONNECT_FRAME = b'CONNECT {"verbose":false,"pedantic":false,"echo":false}\r\n'
_CTX = mp.get_context("fork")


def _connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _read_until(sock, b"\r\n")  # INFO
    sock.sendall(CONNECT_FRAME)
    return sock


def _read_until(sock: socket.socket, marker: bytes, buf: bytes = b"") -> bytes:
    while marker not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return buf


def _ping(sock: socket.socket) -> None:
    """Round trip: when PONG arrives the server has processed everything sent before."""
    sock.sendall(b"PING\r\n")
    tail = b""
    while True:
        chunk = sock.recv(RECV_BYTES)
        if not chunk:
            raise ConnectionError("server closed the connection")
        if b"PONG\r\n" in tail + chunk:
            return
        tail = chunk[-8:]


MIXED_SUBJECTS = 8


def publisher(
    port: int,
    subject: str,
    size: int,
    max_msgs: int,
    seconds: float,
    out: Any,
    go: Any,
    mixed: bool = False,
    size_spread: int = 4,
) -> None:
    """Publishes one prebuilt frame in batches.

    ``mixed``: cycle ``<subject>.0..7``, with sizes from ``size`` to ``size + size_spread - 1``.
    """
    sock = _connect(port)
    _ping(sock)
    frame = b"PUB %s %d\r\n%s\r\n" % (subject.encode(), size, b"x" * size)
    per_batch = max(1, BATCH_BYTES // len(frame))
    if mixed:
        batch = b"".join(
            b"PUB %s.%d %d\r\n%s\r\n"
            % (
                subject.encode(),
                i % MIXED_SUBJECTS,
                size + i * 37 % size_spread,
                b"x" * (size + i * 37 % size_spread),
            )
            for i in range(per_batch)
        )
    else:
        batch = frame * per_batch
    go.wait()
    start = time.monotonic()
    deadline = start + seconds
    sent = 0
    while sent + per_batch <= max_msgs and time.monotonic() < deadline:
        sock.sendall(batch)
        sent += per_batch
    published = time.monotonic()
    _ping(sock)
    done = time.monotonic()
    sock.close()
    out.put(("pub", sent, start, published, done))


def counter(
    port: int, subject: str, sockets: int, expect_per_socket: Any, idle_s: float, out: Any, ready: Any
) -> None:
    """Counts MSG frames on ``sockets`` subscriptions until each got the expected count or goes idle."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(sockets):
        s = _connect(port)
        s.sendall(b"SUB %s 1\r\n" % subject.encode())
        _ping(s)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    ready.set()
    counts = {s: 0 for s in socks}
    tails = {s: b"" for s in socks}
    first = last = 0.0
    expected = None
    while True:
        if expected is None and not expect_per_socket.empty():
            expected = expect_per_socket.get()
        events = sel.select(timeout=idle_s)
        if not events:
            if expected is not None:
                break
            continue
        now = time.monotonic()
        for key, _ in events:
            s = key.fileobj
            data = s.recv(RECV_BYTES)  # type: ignore[union-attr]
            if not data:
                sel.unregister(s)
                continue
            joined = tails[s] + data
            counts[s] += joined.count(b"MSG ")
            tails[s] = joined[-3:]
            if b"PING\r\n" in joined:
                s.sendall(b"PONG\r\n")  # type: ignore[union-attr]
            if not first:
                first = now
            last = now
        if expected is not None and all(c >= expected for c in counts.values()):
            break
    for s in socks:
        s.close()
    out.put(("count", sum(counts.values()), first, last))


def responder(port: int, subject: str, ready: Any, stop: Any) -> None:
    sock = _connect(port)
    sock.sendall(b"SUB %s 1\r\n" % subject.encode())
    _ping(sock)
    ready.set()
    sock.settimeout(0.2)
    reply_body = b"r" * 16
    buf = b""
    while not stop.is_set():
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        buf += chunk
        frames = []
        while True:
            nl = buf.find(b"\r\n")
            if nl < 0:
                break
            line = buf[:nl]
            if line.startswith(b"MSG "):
                parts = line.split()
                size = int(parts[-1])
                end = nl + 2 + size + 2
                if len(buf) < end:
                    break
                frames.append(b"PUB %s %d\r\n%s\r\n" % (parts[3], len(reply_body), reply_body))
                buf = buf[end:]
            else:
                if line == b"PING":
                    frames.append(b"PONG\r\n")
                buf = buf[nl + 2 :]
        if frames:
            sock.sendall(b"".join(frames))
    sock.close()


def requester(port: int, subject: str, count: int, seconds: float, out: Any) -> None:
    sock = _connect(port)
    sock.sendall(b"SUB _INBOX.bench 1\r\n")
    _ping(sock)
    frame = b"PUB %s _INBOX.bench 16\r\n%s\r\n" % (subject.encode(), b"q" * 16)
    latencies = []
    deadline = time.monotonic() + seconds
    buf = b""
    for _ in range(count):
        t0 = time.perf_counter()
        sock.sendall(frame)
        while True:
            buf += sock.recv(65536)
            i = buf.find(b"MSG ")
            if i >= 0:
                nl = buf.find(b"\r\n", i)
                if nl > 0:
                    size = int(buf[i:nl].split()[-1])
                    end = nl + 2 + size + 2
                    if len(buf) >= end:
                        buf = buf[end:]
                        break
        latencies.append(time.perf_counter() - t0)
        if time.monotonic() > deadline:
            break
    sock.close()
    out.put(("req", latencies))


def nats_py_requester(port: int, subject: str, count: int, seconds: float, out: Any) -> None:
    """The same round trips from a real client library (nats-py), for comparison."""
    import asyncio

    import nats

    async def run() -> list[float]:
        nc = await nats.connect(f"nats://127.0.0.1:{port}")
        latencies = []
        deadline = time.monotonic() + seconds
        body = b"q" * 16
        for _ in range(count):
            t0 = time.perf_counter()
            await nc.request(subject, body, timeout=5)
            latencies.append(time.perf_counter() - t0)
            if time.monotonic() > deadline:
                break
        await nc.close()
        return latencies

    out.put(("req", asyncio.run(run())))


def spawn(target: Any, *args: Any) -> Any:
    proc = _CTX.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def queue() -> Any:
    return _CTX.Queue()


def event() -> Any:
    return _CTX.Event()


# -- fake servers that show the generator's own ceiling ------------------------------------------

_FAKE_INFO = (
    b'INFO {"server_id":"FAKE","version":"2.15.1","proto":1,"headers":true,"max_payload":1048576} \r\n'
)


def sink_server(listener: socket.socket) -> None:
    """Accepts one connection at a time, discards what it reads, answers the last PING."""
    while True:
        conn, _ = listener.accept()
        conn.sendall(_FAKE_INFO)
        tail = b""
        while True:
            data = conn.recv(RECV_BYTES)
            if not data:
                break
            tail = (tail + data)[-16:]
            if tail.endswith(b"PING\r\n"):
                conn.sendall(b"PONG\r\n")
        conn.close()


def source_server(listener: socket.socket, size: int, seconds: float) -> None:
    """For each connection: answer the subscription handshake, then stream MSG frames for ``seconds``."""
    frame = b"MSG bench 1 %d\r\n%s\r\n" % (size, b"x" * size)
    batch = frame * max(1, BATCH_BYTES // len(frame))
    while True:
        conn, _ = listener.accept()
        conn.sendall(_FAKE_INFO)
        _read_until(conn, b"PING\r\n")
        conn.sendall(b"PONG\r\n")
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                conn.sendall(batch)
        except OSError:
            pass
        conn.close()


def listen() -> tuple[socket.socket, int]:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return listener, listener.getsockname()[1]
