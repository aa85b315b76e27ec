"""The MQTT state machine without a socket: packets go in, the bytes it writes are decoded back.

A real ``MqttServer`` and ``Router`` (never started) stand behind it; the transport is a recorder.
"""

from __future__ import annotations

from typing import Any

import pytest

from robustmq.bridges.mqtt import packets as P
from robustmq.bridges.mqtt import reason_codes as rc
from robustmq.bridges.mqtt.codec import MqttDecoder
from robustmq.bridges.mqtt.listener import MqttServer
from robustmq.bridges.mqtt.state import ConnectionState
from robustmq.config import Settings
from robustmq.router import Router


class RecordingIO:
    """A transport that keeps what the state machine asked for."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed: bool | None = None  # the linger flag of the close, None while open
        self.keepalive_s: int | None = None  # set when CONNECT was accepted
        self.holds = 0

    def write(self, data: bytes) -> None:
        self.out += data

    def close_transport(self, linger: bool) -> None:
        self.closed = linger

    def hold_reading(self) -> None:
        self.holds += 1

    def release_reading(self) -> None:
        self.holds -= 1

    def connect_accepted(self, keepalive_s: int) -> None:
        self.keepalive_s = keepalive_s


class FakeBroker:
    def __init__(self, **settings: Any) -> None:
        self.settings = Settings(**settings)
        self.router = Router()


class Client:
    """One state machine and its recorder, speaking one protocol version."""

    def __init__(self, server: MqttServer, version: int = P.MQTT_3_1_1) -> None:
        self.io = RecordingIO()
        self.state = ConnectionState(server, self.io)
        self.version = version
        self._decoder = MqttDecoder(version=version)

    def send(self, *packets: P.Packet) -> None:
        self.state.receive(list(packets))

    def connect(self, client_id: str = "c", **fields: Any) -> P.Connack:
        self.send(P.Connect(client_id, protocol_level=self.version, **fields))
        (connack,) = self.received()
        return connack

    def received(self) -> list[P.Packet]:
        """The packets written since the last call."""
        data, self.io.out = bytes(self.io.out), bytearray()
        return self._decoder.receive(data)


class FakeWrite:
    """A durable write that finishes when the test says so."""

    def __init__(self) -> None:
        self._callbacks: list[Any] = []
        self._finished = False
        self._error: Exception | None = None

    def done(self) -> bool:
        return self._finished

    def exception(self) -> Exception | None:
        return self._error

    def add_done_callback(self, fn: Any) -> None:
        self._callbacks.append(fn)

    def finish(self, error: Exception | None = None) -> None:
        self._finished, self._error = True, error
        for fn in self._callbacks:
            fn(self)


@pytest.fixture
def server() -> MqttServer:
    return MqttServer(FakeBroker())  # type: ignore[arg-type]


def _secured_server() -> MqttServer:
    auth = {
        "users": [
            {"user": "ann", "password": "pw", "permissions": {"publish": {"deny": ["secret.>"]}}},
        ]
    }
    return MqttServer(FakeBroker(auth=auth))  # type: ignore[arg-type]


# -- CONNECT negotiation -----------------------------------------------------------------------------


def test_v311_connect_is_accepted_with_a_plain_connack(server: MqttServer) -> None:
    c = Client(server)
    assert c.connect("dev1", keepalive=30) == P.Connack(False, rc.V3_ACCEPTED)
    assert c.state.connected and c.state.name == "dev1"
    assert c.io.keepalive_s == 30
    assert c.io.closed is None


def test_v31_connect_is_accepted_and_answered_in_the_same_framing(server: MqttServer) -> None:
    c = Client(server, P.MQTT_3_1)
    c.send(P.Connect("old", protocol_level=P.MQTT_3_1, protocol_name="MQIsdp"))
    assert c.io.out == b"\x20\x02\x00\x00"
    assert c.state.connected


def test_v5_connack_announces_the_server_limits(server: MqttServer) -> None:
    c = Client(server, P.MQTT_5)
    connack = c.connect("dev5")
    settings = server.settings
    assert connack.reason_code == rc.SUCCESS
    assert connack.properties == {
        P.RECEIVE_MAXIMUM: settings.receive_maximum,
        P.TOPIC_ALIAS_MAXIMUM: settings.topic_alias_maximum,
        P.MAXIMUM_PACKET_SIZE: settings.max_packet_bytes,
    }


def test_v5_empty_client_id_gets_an_assigned_one(server: MqttServer) -> None:
    c = Client(server, P.MQTT_5)
    connack = c.connect("")
    assigned = connack.properties[P.ASSIGNED_CLIENT_IDENTIFIER]
    assert assigned.startswith("auto-") and c.state.name == assigned


def test_v311_empty_client_id_without_clean_session_is_refused(server: MqttServer) -> None:
    c = Client(server)
    assert c.connect("", clean_start=False) == P.Connack(False, rc.V3_IDENTIFIER_REJECTED)
    assert c.io.closed is True and not c.state.connected


def test_v5_keepalive_zero_is_replaced_by_the_server_keepalive() -> None:
    c = Client(MqttServer(FakeBroker(mqtt={"max_keepalive_s": 20})), P.MQTT_5)  # type: ignore[arg-type]
    connack = c.connect("k", keepalive=0)
    assert connack.properties[P.SERVER_KEEP_ALIVE] == 20
    assert c.io.keepalive_s == 20


@pytest.mark.parametrize(
    ("version", "code"),
    [(P.MQTT_3_1_1, rc.V3_BAD_USER_NAME_OR_PASSWORD), (P.MQTT_5, rc.BAD_USER_NAME_OR_PASSWORD)],
)
def test_a_wrong_password_is_refused_in_the_clients_version(version: int, code: int) -> None:
    c = Client(_secured_server(), version)
    assert c.connect("x", username="ann", password=b"nope").reason_code == code
    assert c.io.closed is True


def test_v5_authentication_method_is_refused(server: MqttServer) -> None:
    c = Client(server, P.MQTT_5)
    connack = c.connect("x", properties={P.AUTHENTICATION_METHOD: "SCRAM-SHA-1"})
    assert connack.reason_code == rc.BAD_AUTHENTICATION_METHOD


def test_v5_receive_maximum_zero_closes_without_connack(server: MqttServer) -> None:
    c = Client(server, P.MQTT_5)
    c.send(P.Connect("x", protocol_level=P.MQTT_5, properties={P.RECEIVE_MAXIMUM: 0}))
    assert c.received() == [] and c.io.closed is False


def test_an_unknown_protocol_level_gets_the_v311_refusal(server: MqttServer) -> None:
    c = Client(server)
    c.state.unsupported_version(7)
    assert c.received() == [P.Connack(False, rc.V3_UNACCEPTABLE_PROTOCOL_VERSION)]
    assert c.io.closed is True


def test_a_first_packet_other_than_connect_closes_silently(server: MqttServer) -> None:
    c = Client(server)
    c.send(P.Pingreq())
    assert c.io.out == b"" and c.io.closed is False


def test_a_second_connect_is_a_protocol_error(server: MqttServer) -> None:
    c = Client(server, P.MQTT_5)
    c.connect("x")
    c.send(P.Connect("x", protocol_level=P.MQTT_5))
    (disconnect,) = c.received()
    assert disconnect.reason_code == rc.PROTOCOL_ERROR and c.io.closed is True


def test_a_will_to_a_wildcard_topic_is_refused_in_v5(server: MqttServer) -> None:
    c = Client(server, P.MQTT_5)
    assert c.connect("x", will=P.Will("a/+", b"bye")).reason_code == rc.TOPIC_NAME_INVALID


def test_the_same_client_id_takes_the_session_over_and_publishes_the_will(server: MqttServer) -> None:
    watcher = Client(server)
    watcher.connect("watcher")
    watcher.send(P.Subscribe(1, [P.SubscriptionRequest("wills/#")]))
    watcher.received()
    old = Client(server, P.MQTT_5)
    old.connect("dev", will=P.Will("wills/dev", b"gone"))
    new = Client(server, P.MQTT_5)
    assert new.connect("dev").reason_code == rc.SUCCESS
    (disconnect,) = old.received()
    assert disconnect.reason_code == rc.SESSION_TAKEN_OVER and old.io.closed is True
    assert watcher.received() == [P.Publish("wills/dev", b"gone")]
    assert server.sessions["dev"].connection is new.state


def test_every_connection_takes_its_id_from_the_routers_counter(server: MqttServer) -> None:
    before = server.router.new_client_id()
    ids = [Client(server).state.client_id for _ in range(3)]
    assert ids == [before + 1, before + 2, before + 3]


# -- inbound QoS 2 and acknowledgement order -------------------------------------------------------------


def _subscribed(server: MqttServer, topic_filter: str, qos: int = 0, version: int = P.MQTT_3_1_1) -> Client:
    sub = Client(server, version)
    sub.connect(
        "sub-" + topic_filter, **({"properties": {P.TOPIC_ALIAS_MAXIMUM: 2}} if version == P.MQTT_5 else {})
    )
    sub.send(P.Subscribe(1, [P.SubscriptionRequest(topic_filter, qos)]))
    (suback,) = sub.received()
    assert suback.reason_codes == [qos]
    return sub


def test_qos2_publish_is_delivered_once_and_released_by_pubrel(server: MqttServer) -> None:
    sub = _subscribed(server, "t/q2")
    pub = Client(server)
    pub.connect("pub")
    pub.send(P.Publish("t/q2", b"m", qos=2, packet_id=7))
    assert pub.received() == [P.Pubrec(7)]
    pub.send(P.Publish("t/q2", b"m", qos=2, packet_id=7, dup=True))  # resent before PUBREL
    assert pub.received() == [P.Pubrec(7)]
    assert sub.received() == [P.Publish("t/q2", b"m")]  # one copy
    pub.send(P.Pubrel(7))
    assert pub.received() == [P.Pubcomp(7)]
    pub.send(P.Pubrel(7))  # nothing left to release
    assert pub.received() == [P.Pubcomp(7)]


def test_v5_pubrel_of_an_unknown_packet_id_answers_not_found(server: MqttServer) -> None:
    pub = Client(server, P.MQTT_5)
    pub.connect("pub")
    pub.send(P.Pubrel(9))
    assert pub.received() == [P.Pubcomp(9, rc.PACKET_IDENTIFIER_NOT_FOUND)]


def test_acks_wait_for_durable_writes_and_keep_publish_order(server: MqttServer) -> None:
    writes: list[FakeWrite] = []

    def durable_subscriber(subject: str, reply: Any, headers: Any, payload: bytes) -> FakeWrite:
        writes.append(FakeWrite())
        return writes[-1]

    server.router.subscribe("durable", durable_subscriber)
    pub = Client(server, P.MQTT_5)
    pub.connect("pub")
    pub.send(P.Publish("durable", b"1", qos=1, packet_id=1), P.Publish("durable", b"2", qos=2, packet_id=2))
    assert pub.received() == []
    writes[1].finish()
    assert pub.received() == []  # the second is done, but the first is not acknowledged yet
    writes[0].finish()
    assert pub.received() == [P.Puback(1), P.Pubrec(2)]


def test_a_failed_durable_write_is_a_negative_ack_in_v5_and_a_close_in_v311(server: MqttServer) -> None:
    writes: list[FakeWrite] = []
    server.router.subscribe("durable", lambda *_: writes.append(FakeWrite()) or writes[-1])
    v5 = Client(server, P.MQTT_5)
    v5.connect("v5")
    v5.send(P.Publish("durable", b"x", qos=1, packet_id=3))
    writes[-1].finish(OSError("disk"))
    assert v5.received() == [P.Puback(3, rc.IMPLEMENTATION_SPECIFIC_ERROR)]
    v3 = Client(server)
    v3.connect("v3")
    v3.send(P.Publish("durable", b"x", qos=1, packet_id=4))
    writes[-1].finish(OSError("disk"))
    assert v3.received() == [] and v3.io.closed is False


def test_v5_qos1_without_subscribers_says_so(server: MqttServer) -> None:
    pub = Client(server, P.MQTT_5)
    pub.connect("pub")
    pub.send(P.Publish("nobody", b"x", qos=1, packet_id=5))
    assert pub.received() == [P.Puback(5, rc.NO_MATCHING_SUBSCRIBERS)]


def test_v5_publish_past_the_receive_maximum_is_disconnected() -> None:
    server = MqttServer(FakeBroker(mqtt={"receive_maximum": 2}))  # type: ignore[arg-type]
    pub = Client(server, P.MQTT_5)
    pub.connect("pub")
    pub.send(*(P.Publish("t", b"x", qos=2, packet_id=i) for i in (1, 2, 3)))
    *acks, disconnect = pub.received()
    assert acks == [P.Pubrec(1, rc.NO_MATCHING_SUBSCRIBERS), P.Pubrec(2, rc.NO_MATCHING_SUBSCRIBERS)]
    assert disconnect.reason_code == rc.RECEIVE_MAXIMUM_EXCEEDED


# -- outbound QoS 2 and wrong acks -------------------------------------------------------------------


def test_outbound_qos2_needs_pubrec_then_pubcomp_and_ignores_a_wrong_ack(server: MqttServer) -> None:
    sub = _subscribed(server, "t/out", qos=2, version=P.MQTT_5)
    pub = Client(server)
    pub.connect("pub")
    pub.send(P.Publish("t/out", b"m", qos=2, packet_id=1))
    (delivery,) = sub.received()
    pid = delivery.packet_id
    assert delivery.qos == 2 and pid
    session = server.sessions[sub.state.name]
    sub.send(P.Puback(pid))  # the wrong ack for QoS 2: ignored
    sub.send(P.Pubcomp(pid))  # before PUBREC: ignored
    assert sub.received() == [] and pid in session.inflight
    sub.send(P.Pubrec(pid + 1))  # unknown packet id
    assert sub.received() == [P.Pubrel(pid + 1, rc.PACKET_IDENTIFIER_NOT_FOUND)]
    sub.send(P.Pubrec(pid))
    assert sub.received() == [P.Pubrel(pid)]
    sub.send(P.Pubcomp(pid))
    assert session.inflight == {} and sub.io.closed is None


def test_outbound_qos1_is_released_by_puback_only(server: MqttServer) -> None:
    sub = _subscribed(server, "t/one", qos=1)
    pub = Client(server)
    pub.connect("pub")
    pub.send(P.Publish("t/one", b"m", qos=1, packet_id=1))
    (delivery,) = sub.received()
    session = server.sessions[sub.state.name]
    sub.send(P.Pubcomp(delivery.packet_id))  # a QoS 2 ack for a QoS 1 message: ignored
    assert delivery.packet_id in session.inflight
    sub.send(P.Puback(delivery.packet_id))
    assert session.inflight == {}


def test_a_packet_a_client_must_not_send_is_a_protocol_error(server: MqttServer) -> None:
    c = Client(server, P.MQTT_5)
    c.connect("x")
    c.send(P.Suback(1, [0]))
    (disconnect,) = c.received()
    assert disconnect.reason_code == rc.PROTOCOL_ERROR and c.io.closed is True


# -- topic aliases ---------------------------------------------------------------------------------------


def test_inbound_topic_alias_is_set_then_used(server: MqttServer) -> None:
    sub = _subscribed(server, "a/b")
    pub = Client(server, P.MQTT_5)
    pub.connect("pub")
    pub.send(
        P.Publish("a/b", b"1", properties={P.TOPIC_ALIAS: 1}),
        P.Publish("", b"2", properties={P.TOPIC_ALIAS: 1}),
    )
    assert sub.received() == [P.Publish("a/b", b"1"), P.Publish("a/b", b"2")]
    assert pub.io.closed is None


@pytest.mark.parametrize(
    ("topic", "alias", "code"),
    [("a", 0, rc.TOPIC_ALIAS_INVALID), ("a", 65, rc.TOPIC_ALIAS_INVALID), ("", 3, rc.PROTOCOL_ERROR)],
)
def test_a_bad_inbound_topic_alias_disconnects(server: MqttServer, topic: str, alias: int, code: int) -> None:
    pub = Client(server, P.MQTT_5)
    pub.connect("pub")
    pub.send(P.Publish(topic, b"x", properties={P.TOPIC_ALIAS: alias}))
    (disconnect,) = pub.received()
    assert disconnect.reason_code == code and pub.io.closed is True


def test_outbound_topic_alias_sends_the_topic_once(server: MqttServer) -> None:
    sub = _subscribed(server, "x/#", qos=1, version=P.MQTT_5)
    pub = Client(server)
    pub.connect("pub")
    for topic in ("x/1", "x/1", "x/2", "x/3", "x/3"):
        pub.send(P.Publish(topic, b"m", qos=1, packet_id=1))
    got = [(p.topic, p.properties[P.TOPIC_ALIAS] if p.properties else None) for p in sub.received()]
    # two aliases allowed: x/1 -> 1, x/2 -> 2, x/3 goes by name every time
    assert got == [("x/1", 1), ("", 1), ("x/2", 2), ("x/3", None), ("x/3", None)]


# -- permissions ---------------------------------------------------------------------------------------


def test_a_denied_publish_is_acked_not_authorized_and_not_routed() -> None:
    server = _secured_server()
    delivered: list[bytes] = []
    server.router.subscribe("secret.>", lambda s, r, h, payload: delivered.append(payload))
    pub = Client(server, P.MQTT_5)
    pub.connect("pub", username="ann", password=b"pw")
    pub.send(P.Publish("secret/x", b"m", qos=1, packet_id=2), P.Publish("secret/y", b"m", qos=2, packet_id=3))
    assert pub.received() == [P.Puback(2, rc.NOT_AUTHORIZED), P.Pubrec(3, rc.NOT_AUTHORIZED)]
    assert delivered == []
