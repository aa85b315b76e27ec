"""``robustmq serve``: the ready line, a taken port, a bad flag value, and a clean stop on signals."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys

import nats
import pytest


def _serve(tmp_path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robustmq", "serve", "--host", "127.0.0.1", "--data-dir", str(tmp_path / "d"),
         "--http-port", "off", "--mqtt-port", "off", "--amqp-port", "off", "--kafka-port", "off", *flags],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_ready_line_names_every_bound_listener(broker_factory):
    b = broker_factory("--http-port", "off", "--mqtt-port", "off", "--kafka-port", "off")
    assert set(b.ports) == {"nats", "amqp"}
    with socket.create_connection(("127.0.0.1", b.ports["nats"]), timeout=5) as s:
        assert s.recv(5) == b"INFO "
    with socket.create_connection(("127.0.0.1", b.ports["amqp"]), timeout=5) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        assert s.recv(11)[:1] == b"\x01"  # a method frame: Connection.Start


def test_a_taken_port_is_a_clear_error_and_a_non_zero_exit(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve(tmp_path, "--nats-port", str(port))
    assert result.returncode != 0
    assert "ready" not in result.stdout
    message = result.stderr.strip().splitlines()[-1]
    assert "nats" in message and "in use" in message and str(port) in message


@pytest.mark.parametrize(
    "flags, setting",
    [
        (("--nats-port", "abc"), "nats.port"),
        (("--nats-port", "70000"), "nats.port"),
        (("--fsync", "sometimes"), "store.fsync"),
    ],
)
def test_a_bad_flag_value_exits_2_naming_the_setting(tmp_path, flags, setting):
    result = _serve(tmp_path, *flags)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and setting in lines[0]


def test_a_bad_environment_value_exits_2_naming_the_setting(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "robustmq", "serve", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60,
        env={**__import__("os").environ, "ROBUSTMQ_NATS_MAX_PAYLOAD_BYTES": "lots"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "nats.max_payload_bytes" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_the_broker_within_5_s_with_exit_0(broker_factory, sig):
    b = broker_factory("--http-port", "off", "--mqtt-port", "off")
    closed = asyncio.Event()

    async def on_closed():
        closed.set()

    nc = await nats.connect(b.nats_url, allow_reconnect=False, closed_cb=on_closed)
    await nc.subscribe("x")
    await nc.flush()
    b.proc.send_signal(sig)
    code = await asyncio.to_thread(b.proc.wait, 5.0)  # the bound: raises if it takes longer
    assert code == 0
    await asyncio.wait_for(closed.wait(), 5)


def test_stop_flushes_what_subscribers_are_owed(broker_factory):
    from helpers.nats_raw import RawClient

    b = broker_factory("--http-port", "off", "--mqtt-port", "off")
    port = b.ports["nats"]
    body = b"f" * 4096
    with RawClient(port) as sub, RawClient(port) as pub:
        sub.send(b"SUB owed 1\r\n")
        assert sub.ping() == b""
        pub.send(b"PUB owed %d\r\n%s\r\n" % (len(body), body) * 1000)  # about 4 MB, not read yet
        assert pub.ping() == b""
        b.proc.send_signal(signal.SIGTERM)
        rest = sub.closed_after()
        assert rest.count(b"MSG owed 1 4096\r\n") == 1000
        assert b.proc.wait(5.0) == 0
