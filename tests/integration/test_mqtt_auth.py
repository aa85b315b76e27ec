"""MQTT authentication with the users of the shared configuration, and their permissions on subjects."""

from __future__ import annotations

import pytest
from brokerproc import start_broker
from helpers.mqtt_clients import RawClient, unique

from robustmq.bridges.mqtt import packets as P

CONFIG = """
[[auth.users]]
user = "device"
password = "s3cret"
permissions = { publish = { allow = ["sensors.>"] }, subscribe = { allow = ["cmd.>"], deny = ["cmd.secret"] } }

[[auth.users]]
user = "admin"
password = "root"
"""


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    d = tmp_path_factory.mktemp("mqtt")
    (d / "robustmq.toml").write_text(CONFIG)
    b = start_broker(d / "data", "--http-port", "off", "--config", str(d / "robustmq.toml"))
    yield b.ports["mqtt"]
    b.stop()


@pytest.mark.parametrize("version, code", [(P.MQTT_3_1_1, 0x04), (P.MQTT_5, 0x86)])
def test_wrong_password_is_refused(port: int, version: int, code: int) -> None:
    c = RawClient(port, version)
    assert c.connect(unique("c"), username="device", password=b"nope").reason_code == code
    c.closed()


@pytest.mark.parametrize("version, code", [(P.MQTT_3_1_1, 0x04), (P.MQTT_5, 0x86)])
def test_anonymous_client_is_refused_when_users_are_configured(port: int, version: int, code: int) -> None:
    c = RawClient(port, version)
    assert c.connect(unique("c")).reason_code == code
    c.closed()


def test_publish_permissions_apply_to_the_mapped_subject(port: int) -> None:
    watcher = RawClient(port, P.MQTT_5)
    watcher.connect(unique("w"), username="admin", password=b"root")
    watcher.subscribe("#")
    c = RawClient(port, P.MQTT_5)
    assert c.connect(unique("c"), username="device", password=b"s3cret").reason_code == 0
    assert c.publish("sensors/t1", b"ok", 1).reason_code in (0x00, 0x10)
    assert c.publish("actuators/t1", b"no", 1, pid=2).reason_code == 0x87
    seen = []
    while True:
        try:
            seen.append(watcher.recv(0.5).topic)
        except TimeoutError:
            break
    assert "sensors/t1" in seen and "actuators/t1" not in seen
    watcher.disconnect()
    c.disconnect()


@pytest.mark.parametrize("version, refused", [(P.MQTT_3_1_1, 0x80), (P.MQTT_5, 0x87)])
def test_subscribe_permissions_apply_to_the_mapped_filter(port: int, version: int, refused: int) -> None:
    c = RawClient(port, version)
    c.connect(unique("c"), username="device", password=b"s3cret")
    c.send(P.Subscribe(1, [P.SubscriptionRequest("cmd/+", 1), P.SubscriptionRequest("other/#", 1)]))
    assert c.recv_type(P.Suback).reason_codes == [1, refused]
    admin = RawClient(port)
    admin.connect(unique("a"), username="admin", password=b"root")
    admin.publish("cmd/secret", b"hidden", 1)  # denied for the device: filtered on delivery
    admin.publish("cmd/open", b"visible", 1, pid=2)
    m = c.recv_type(P.Publish)
    assert (m.topic, m.payload) == ("cmd/open", b"visible")
    c.send(P.Puback(m.packet_id))
    assert c.nothing()
    admin.disconnect()
    c.disconnect()


def test_will_to_a_forbidden_topic_is_refused(port: int) -> None:
    c = RawClient(port, P.MQTT_5)
    connack = c.connect(unique("c"), username="device", password=b"s3cret", will=P.Will("actuators/x", b"w"))
    assert connack.reason_code == 0x87
    c.closed()


def test_permissions_still_apply_to_a_session_restored_after_restart(tmp_path) -> None:
    (tmp_path / "robustmq.toml").write_text(CONFIG)
    args = ("--http-port", "off", "--config", str(tmp_path / "robustmq.toml"))
    cid = unique("keep")
    b = start_broker(tmp_path / "data", *args)
    try:
        c = RawClient(b.ports["mqtt"])
        c.connect(cid, clean=False, username="device", password=b"s3cret")
        c.subscribe("cmd/#", qos=1)
        c.disconnect()
    finally:
        b.stop()
    b = start_broker(tmp_path / "data", *args)
    try:
        admin = RawClient(b.ports["mqtt"])
        admin.connect(unique("a"), username="admin", password=b"root")
        admin.publish("cmd/secret", b"hidden", 1)
        admin.publish("cmd/open", b"visible", 1, pid=2)
        c = RawClient(b.ports["mqtt"])
        assert c.connect(cid, clean=False, username="device", password=b"s3cret").session_present
        m = c.recv_type(P.Publish)
        assert (m.topic, m.payload) == ("cmd/open", b"visible")
        c.send(P.Puback(m.packet_id))
        assert c.nothing()
        c.disconnect()
        admin.disconnect()
    finally:
        b.stop()
