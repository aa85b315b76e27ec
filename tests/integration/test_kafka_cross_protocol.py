"""One copy, every view: MQTT and NATS publishes read over Kafka, Kafka produces seen live on NATS,
group commits surviving a broker restart, and SASL users with their subject permissions."""

from __future__ import annotations

import asyncio
import uuid

import nats
import paho.mqtt.client as paho
import pytest
from brokerproc import start_broker
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import TopicAuthorizationFailedError

pytestmark = pytest.mark.timeout(120)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def kbroker(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("kx"), "--http-port", "off")
    yield b
    b.stop()


def read_all(bootstrap: str, topic: str, count: int, timeout_s: float = 15) -> list:
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                      consumer_timeout_ms=int(timeout_s * 1000))  # fmt: skip
    out = []
    try:
        for m in c:
            out.append(m)
            if len(out) >= count:
                break
    finally:
        c.close()
    return out


def test_mqtt_publishes_are_consumed_over_kafka_in_order(kbroker) -> None:
    topic = unique("sensors")
    # the topic exists first (created over Kafka), so its stream is bound to subject `topic`
    KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap).send(topic, b"start", key=b"k").get(10)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=unique("dev"))
    client.connect("127.0.0.1", kbroker.ports["mqtt"])
    client.loop_start()
    try:
        infos = [client.publish(topic, f"r{i}".encode(), qos=1) for i in range(20)]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()
    got = read_all(kbroker.kafka_bootstrap, topic, 21)
    assert [m.value for m in got] == [b"start"] + [f"r{i}".encode() for i in range(20)]
    assert [m.offset for m in got] == list(range(21))


async def test_kafka_produce_reaches_nats_live_with_key_and_headers_and_is_stored_once(kbroker) -> None:
    topic = unique("orders")
    producer = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap)
    await asyncio.to_thread(lambda: producer.send(topic, b"warmup").get(10))  # creates the topic
    nc = await nats.connect(kbroker.nats_url)
    try:
        sub = await nc.subscribe(topic)
        await nc.flush()
        await asyncio.to_thread(
            lambda: producer.send(topic, b"hello", key=b"order-7", headers=[("unit", b"EUR")]).get(10)
        )
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"hello"
        assert msg.headers["kafka-key"] == "order-7"
        assert msg.headers["unit"] == "EUR"
        # a NATS publish with a kafka-key header is stored with that key
        await nc.publish(topic, b"from-nats", headers={"kafka-key": "k-nats", "src": "nats"})
        await nc.flush()
    finally:
        await nc.close()
        producer.close()
    got = await asyncio.to_thread(read_all, kbroker.kafka_bootstrap, topic, 3)
    assert [m.value for m in got] == [b"warmup", b"hello", b"from-nats"]  # one copy each, no echo
    assert got[1].key == b"order-7" and got[1].headers == [("unit", b"EUR")]
    assert got[2].key == b"k-nats" and ("src", b"nats") in got[2].headers


def test_committed_offsets_survive_a_broker_restart(tmp_path) -> None:
    b = start_broker(tmp_path / "data", "--http-port", "off")
    topic, group = unique("restart"), unique("g")
    try:
        p = KafkaProducer(bootstrap_servers=b.kafka_bootstrap, acks="all")
        for i in range(10):
            p.send(topic, str(i).encode())
        p.flush(10)
        p.close()
        c = KafkaConsumer(topic, bootstrap_servers=b.kafka_bootstrap, group_id=group, auto_offset_reset="earliest",
                          enable_auto_commit=False, consumer_timeout_ms=10000, max_poll_records=6)  # fmt: skip
        got = []
        for m in c:
            got.append(m.value)
            if len(got) == 6:
                break
        c.commit({TopicPartition(topic, 0): OffsetAndMetadata(6, "", -1)})
        c.close()
    finally:
        b.stop()
    b = start_broker(tmp_path / "data", "--http-port", "off")
    try:
        c = KafkaConsumer(topic, bootstrap_servers=b.kafka_bootstrap, group_id=group, auto_offset_reset="earliest",
                          consumer_timeout_ms=10000)  # fmt: skip
        rest = []
        for m in c:
            rest.append(m.value)
            if len(rest) == 4:
                break
        c.close()
        assert rest == [b"6", b"7", b"8", b"9"]
    finally:
        b.stop()


SASL_CONFIG = """
[[auth.users]]
user = "pipeline"
password = "p4ss"
permissions = { publish = { allow = ["metrics.>"] }, subscribe = { allow = ["metrics.>"] } }

[[auth.users]]
user = "admin"
password = "root"
"""


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    d = tmp_path_factory.mktemp("ksasl")
    (d / "robustmq.toml").write_text(SASL_CONFIG)
    b = start_broker(d / "data", "--http-port", "off", "--config", str(d / "robustmq.toml"))
    yield b
    b.stop()


def sasl(mechanism: str, user: str, password: str) -> dict:
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism,
            "sasl_plain_username": user, "sasl_plain_password": password}  # fmt: skip


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_user_produces_and_consumes_within_its_permissions(sasl_broker, mechanism) -> None:
    topic = "metrics." + unique("cpu")
    p = KafkaProducer(bootstrap_servers=sasl_broker.kafka_bootstrap, **sasl(mechanism, "pipeline", "p4ss"))
    assert p.send(topic, b"42").get(10).offset == 0
    with pytest.raises(TopicAuthorizationFailedError):
        p.send("secrets." + unique("x"), b"no").get(10)
    p.close()
    c = KafkaConsumer(topic, bootstrap_servers=sasl_broker.kafka_bootstrap, auto_offset_reset="earliest",
                      consumer_timeout_ms=10000, **sasl(mechanism, "pipeline", "p4ss"))  # fmt: skip
    values = []
    for m in c:
        values.append(m.value)
        break
    c.close()
    assert values == [b"42"]


async def test_kafka_produce_into_an_mq9_mailbox_keeps_key_priority_and_offsets(kbroker) -> None:
    import orjson

    nc = await nats.connect(kbroker.nats_url)
    try:
        name = f"kbox.{uuid.uuid4().hex[:8]}"
        msg = await nc.request("$mq9.AI.MAILBOX.CREATE", orjson.dumps({"name": name}), timeout=10)
        created = orjson.loads(msg.data)
        assert created["error"] == "", created
        producer = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap, acks="all")

        def produce_two() -> list[int]:
            normal = producer.send(name, b"routine", key=b"k1").get(10).offset
            urgent = (
                producer.send(name, b"alarm", key=b"k2", headers=[("mq9-priority", b"critical")])
                .get(10)
                .offset
            )
            return [normal, urgent]

        offsets = await asyncio.to_thread(produce_two)
        producer.close()
        request = {"deliver": "earliest", "config": {"max_wait_ms": 0, "num_msgs": 10}}
        reply = await nc.request(f"$mq9.AI.MSG.FETCH.{name}", orjson.dumps(request), timeout=10)
        messages = orjson.loads(reply.data)["messages"]
    finally:
        await nc.close()
    assert [m["payload"] for m in messages] == ["alarm", "routine"]  # critical first
    assert [m["msg_id"] for m in messages] == [offsets[1], offsets[0]]  # one copy: msg_id is the offset
    assert messages[0]["priority"] == "critical"
