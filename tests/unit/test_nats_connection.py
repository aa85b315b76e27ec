"""The connection's publish paths without sockets: routing runs at once must equal one by one.

A fake transport records what the server writes; the parser's run merging (PubRun, publish_many,
one join per subscriber) has to produce exactly the bytes of the message-by-message path.
"""

from __future__ import annotations

import types

from hypothesis import given, settings
from hypothesis import strategies as st

from robustmq.config import load_settings
from robustmq.nats.connection import NatsConnection
from robustmq.nats.parser import ClientParser
from robustmq.nats.server import NatsServer
from robustmq.router import Router


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:  # a connection that spent its work budget yields (no-op here)
        pass

    def resume_reading(self) -> None:
        pass


class _NoLoop:
    """Flushes are driven by the test (``server._flush_all``), not by an event loop."""

    def call_soon(self, *args: object) -> None:
        pass

    def call_later(self, *args: object) -> None:
        return None


def _server() -> NatsServer:
    settings = load_settings(environ={}, overrides={"host": "127.0.0.1", "nats": {"port": 0}})
    server = NatsServer(types.SimpleNamespace(settings=settings, router=Router()))  # type: ignore[arg-type]
    server._loop = _NoLoop()  # type: ignore[assignment]
    server._info_base = {"server_id": "TEST"}
    return server


def _connect(server: NatsServer, merge_runs: bool, options: bytes) -> tuple[NatsConnection, FakeTransport]:
    conn = NatsConnection(server)
    parser = conn.parser
    conn.parser = ClientParser(parser.max_payload_bytes, parser.max_control_line_bytes, merge_runs=merge_runs)
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(b"CONNECT " + options + b"\r\n")
    server._flush_all()
    transport.written.clear()
    return conn, transport


def _outputs(chunks: list[bytes], merge_runs: bool, echo: bool) -> list[bytes]:
    server = _server()
    options = b'{"verbose":false,"pedantic":false,"echo":%s}' % (b"true" if echo else b"false")
    watchers = []
    for sub in (
        b"SUB a 1\r\n",
        b"SUB a q 2\r\n",
        b"SUB * 3\r\n",
        b"SUB b 4\r\nUNSUB 4 3\r\n",
        b"SUB a 5\r\nSUB * 6\r\n",
    ):
        conn, written = _connect(server, merge_runs, b'{"verbose":false,"pedantic":false}')
        conn.data_received(sub)
        watchers.append(written)
    client, written = _connect(server, merge_runs, options)
    for chunk in chunks:
        client.data_received(chunk)
        server._flush_all()
    return [bytes(written.written)] + [bytes(w.written) for w in watchers]


_ops = st.sampled_from(
    [
        b"PUB a 2\r\nxy\r\n",
        b"PUB a 2\r\nzw\r\n",
        b"PUB a 3\r\nxyz\r\n",
        b"PUB a r 1\r\nq\r\n",
        b"PUB b 1\r\nb\r\n",
        b"PUB c 0\r\n\r\n",
        b"SUB a 9\r\n",
        b"SUB b 8\r\n",
        b"UNSUB 9 2\r\n",
        b"UNSUB 8\r\n",
        b"PING\r\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ops, max_size=30), st.lists(st.integers(min_value=0), max_size=6), st.booleans())
def test_runs_are_delivered_exactly_like_single_messages(ops, cuts, echo):
    data = b"".join(ops)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, last = [], 0
    for p in points:
        chunks.append(data[last:p])
        last = p
    chunks.append(data[last:])
    merged = _outputs(chunks, merge_runs=True, echo=echo)
    single = _outputs([data], merge_runs=False, echo=echo)
    assert merged == single


def test_run_of_equal_size_messages_is_one_join_per_subscriber():
    server = _server()
    sub, seen = _connect(server, True, b'{"verbose":false}')
    sub.data_received(b"SUB a 1\r\n")
    pub, _ = _connect(server, True, b'{"verbose":false,"pedantic":false}')
    pub.data_received(b"PUB a 2\r\nxy\r\n" * 3)
    assert sub.out == [b"MSG a 1 2\r\n", b"xy\r\nMSG a 1 2\r\nxy\r\nMSG a 1 2\r\nxy", b"\r\n"]
    server._flush_all()
    assert bytes(seen.written) == b"MSG a 1 2\r\nxy\r\n" * 3
    assert (sub.out_msgs, sub.out_bytes, pub.in_msgs, pub.in_bytes) == (3, 6, 3, 6)
