"""NATS authentication (token, users with passwords) and per-user publish/subscribe permissions."""

from __future__ import annotations

import asyncio

import nats
import pytest
from helpers.nats_raw import RawClient
from nats.errors import NoServersError

from robustmq.nats import errors

USERS_TOML = """
[auth]
users = [
  { user = "admin", password = "adminpw" },
  { user = "worker", password = "workerpw", permissions = { publish = { allow = ["jobs.>", "_INBOX.>"], deny = ["jobs.secret"] }, subscribe = { allow = ["jobs.>", "_INBOX.>"], deny = ["jobs.hidden"] } } },
]
"""


def err(text: str) -> bytes:
    return f"-ERR '{text}'\r\n".encode()


@pytest.fixture
def token_broker(broker_factory):
    return broker_factory("--http-port", "off", "--mqtt-port", "off", env={"ROBUSTMQ_AUTH_TOKEN": "s3cret"})


@pytest.fixture
def users_broker(broker_factory, tmp_path):
    path = tmp_path / "auth.toml"
    path.write_text(USERS_TOML)
    return broker_factory("--config", str(path), "--http-port", "off", "--mqtt-port", "off")


async def test_token_auth(token_broker):
    port = token_broker.ports["nats"]
    nc = await nats.connect(token_broker.nats_url, token="s3cret")
    await nc.flush()
    await nc.close()
    with pytest.raises((NoServersError, nats.errors.Error)):
        await nats.connect(
            token_broker.nats_url, token="wrong", allow_reconnect=False, max_reconnect_attempts=0
        )
    with RawClient(port, connect=None) as c:
        assert c.info["auth_required"] is True
        c.send(b'CONNECT {"verbose":false}\r\n')
        assert c.closed_after() == err(errors.AUTHORIZATION_VIOLATION)
    with RawClient(port, connect=None) as c:
        c.send(b"PING\r\n")
        assert c.closed_after() == err(errors.AUTHORIZATION_VIOLATION)


def test_authentication_timeout(broker_factory):
    b = broker_factory(
        "--http-port", "off", "--mqtt-port", "off",
        env={"ROBUSTMQ_AUTH_TOKEN": "s3cret", "ROBUSTMQ_NATS_AUTH_TIMEOUT_S": "0.3"},
    )  # fmt: skip
    with RawClient(b.ports["nats"], connect=None) as c:
        assert c.closed_after() == err(errors.AUTHENTICATION_TIMEOUT)


async def test_users_with_passwords(users_broker):
    nc = await nats.connect(f"nats://admin:adminpw@127.0.0.1:{users_broker.ports['nats']}")
    await nc.flush()
    await nc.close()
    with RawClient(users_broker.ports["nats"], connect=None) as c:
        c.send(b'CONNECT {"verbose":false,"user":"admin","pass":"nope"}\r\n')
        assert c.closed_after() == err(errors.AUTHORIZATION_VIOLATION)


def test_publish_permissions(users_broker):
    port = users_broker.ports["nats"]
    creds = {"verbose": False, "pedantic": False, "user": "worker", "pass": "workerpw"}
    with (
        RawClient(port, connect={"verbose": False, "user": "admin", "pass": "adminpw"}) as admin,
        RawClient(port, connect=creds) as w,
    ):
        admin.send(b"SUB > 1\r\n")
        assert admin.ping() == b""
        w.send(b"PUB billing.x 1\r\nx\r\nPUB jobs.secret 1\r\ns\r\nPUB jobs.new 1\r\nj\r\n")
        assert w.ping() == (
            err(errors.publish_violation("billing.x")) + err(errors.publish_violation("jobs.secret"))
        )
        f = admin.read_frame()
        assert (f.subject, f.payload) == ("jobs.new", b"j")
        assert admin.ping() == b""


def test_subscribe_permissions_and_filtered_wildcards(users_broker):
    port = users_broker.ports["nats"]
    creds = {"verbose": False, "pedantic": False, "user": "worker", "pass": "workerpw"}
    with (
        RawClient(port, connect={"verbose": False, "user": "admin", "pass": "adminpw"}) as admin,
        RawClient(port, connect=creds) as w,
    ):
        w.send(b"SUB billing.> 1\r\nSUB jobs.hidden 2\r\nSUB jobs.* 3\r\n")
        assert w.ping() == err(errors.subscribe_violation("billing.>")) + err(
            errors.subscribe_violation("jobs.hidden")
        )
        admin.send(b"PUB jobs.hidden 1\r\nh\r\nPUB jobs.open 1\r\no\r\n")
        assert admin.ping() == b""
        f = w.read_frame()
        assert (f.subject, f.sid, f.payload) == ("jobs.open", "3", b"o")
        assert w.ping() == b""


async def test_nats_py_reports_permission_violations_without_closing(users_broker):
    errs: list = []
    seen = asyncio.Event()

    async def on_error(e):
        errs.append(e)
        seen.set()

    url = f"nats://worker:workerpw@127.0.0.1:{users_broker.ports['nats']}"
    nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False)
    await nc.publish("billing.x", b"x")
    await asyncio.wait_for(seen.wait(), 5)
    assert "permissions violation" in str(errs[0]).lower()
    got = asyncio.Event()

    async def cb(msg):
        got.set()

    await nc.subscribe("jobs.ok", cb=cb)
    await nc.publish("jobs.ok", b"fine")
    await asyncio.wait_for(got.wait(), 5)
    assert nc.is_connected
    await nc.close()
