"""The Kafka front-end with real clients: kafka-python, aiokafka and confluent-kafka on loopback.

One broker for the module; every test uses its own topics and groups.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from brokerproc import start_broker
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer as CKProducer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

pytestmark = pytest.mark.timeout(120)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def kbroker(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("kafka"), "--http-port", "off")
    yield b
    b.stop()


def consume(
    bootstrap: str, topic: str, count: int, group: str | None = None, timeout_s: float = 15, **kw
) -> list:
    c = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        consumer_timeout_ms=int(timeout_s * 1000), **kw,
    )  # fmt: skip
    out = []
    try:
        for m in c:
            out.append(m)
            if len(out) >= count:
                break
        if group is not None:
            c.commit()
    finally:
        c.close()
    return out


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_kafka_python_round_trip_with_keys_headers_and_every_codec(kbroker, codec) -> None:
    topic = unique("codec")
    p = KafkaProducer(
        bootstrap_servers=kbroker.kafka_bootstrap, acks="all", compression_type=codec, linger_ms=5
    )
    futures = [
        p.send(
            topic,
            key=f"k{i}".encode(),
            value=b"x" * 200 + str(i).encode(),
            headers=[("h", b"1"), ("h", b"2")],
        )
        for i in range(20)
    ]
    offsets = [f.get(timeout=10).offset for f in futures]
    p.close()
    assert offsets == list(range(20))
    got = consume(kbroker.kafka_bootstrap, topic, 20)
    assert [m.offset for m in got] == list(range(20))
    assert [m.key for m in got] == [f"k{i}".encode() for i in range(20)]
    assert got[7].value == b"x" * 200 + b"7"
    assert got[0].headers == [("h", b"1"), ("h", b"2")]  # order and repeats kept


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_every_acks_setting_stores_the_records(kbroker, acks) -> None:
    topic = unique("acks")
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap, acks=acks, enable_idempotence=acks == "all")
    for i in range(10):
        p.send(topic, value=str(i).encode())
    p.flush(10)
    p.close()
    got = consume(kbroker.kafka_bootstrap, topic, 10)
    assert [m.value for m in got] == [str(i).encode() for i in range(10)]


async def test_aiokafka_produce_consume_and_commit(kbroker) -> None:
    topic, group = unique("aio"), unique("g")
    p = AIOKafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap, acks="all", compression_type="gzip")
    await p.start()
    try:
        sent = [
            await p.send_and_wait(topic, f"m{i}".encode(), key=b"k", headers=[("x", b"y")]) for i in range(5)
        ]
    finally:
        await p.stop()
    assert [s.offset for s in sent] == list(range(5))
    c = AIOKafkaConsumer(
        topic, bootstrap_servers=kbroker.kafka_bootstrap, group_id=group, auto_offset_reset="earliest"
    )
    await c.start()
    try:
        got = [await asyncio.wait_for(c.getone(), 15) for _ in range(5)]
        await c.commit()
        assert [m.value for m in got] == [f"m{i}".encode() for i in range(5)]
        assert got[0].headers == (("x", b"y"),)
        committed = await c.committed(TopicPartition(topic, 0))
        assert committed == 5
    finally:
        await c.stop()


def test_confluent_kafka_idempotent_produce_and_group_consume(kbroker) -> None:
    topic, group = unique("ck"), unique("g")
    p = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap, "enable.idempotence": True,
                    "compression.type": "lz4", "linger.ms": 5})  # fmt: skip
    reports: list = []
    for i in range(50):
        p.produce(topic, key=f"k{i}", value=f"v{i}", headers=[("n", str(i))],
                  on_delivery=lambda err, msg: reports.append((err, msg.offset())))  # fmt: skip
    assert p.flush(15) == 0
    assert all(err is None for err, _ in reports)
    assert sorted(o for _, o in reports) == list(range(50))
    c = CKConsumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": group,
                    "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 50 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m)
    c.commit(asynchronous=False)
    c.close()
    assert [m.value() for m in got] == [f"v{i}".encode() for i in range(50)]  # no duplicates, in order
    assert got[3].headers() == [("n", b"3")]


def test_list_offsets_earliest_latest_and_by_timestamp(kbroker) -> None:
    topic = unique("lo")
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap, acks="all")
    for i in range(3):
        p.send(topic, value=b"early%d" % i).get(10)
    time.sleep(0.05)
    middle_ms = int(time.time() * 1000)
    time.sleep(0.05)
    for i in range(2):
        p.send(topic, value=b"late%d" % i).get(10)
    p.close()
    c = KafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap)
    tp = TopicPartition(topic, 0)
    try:
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: 5}
        found = c.offsets_for_times({tp: middle_ms})[tp]
        assert found.offset == 3 and found.timestamp >= middle_ms
        assert c.offsets_for_times({tp: int(time.time() * 1000) + 60_000})[tp] is None
        c.assign([tp])
        c.seek(tp, found.offset)
        values = [m.value for m in c.poll(timeout_ms=5000, max_records=10).get(tp, [])]
        assert values == [b"late0", b"late1"]
    finally:
        c.close()


def test_fetch_waits_for_new_data_then_returns_it(kbroker) -> None:
    topic = unique("poll")
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap, acks=1)
    p.send(topic, value=b"first").get(10)
    c = KafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap, fetch_max_wait_ms=2000)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek(tp, 1)
    try:
        assert c.poll(timeout_ms=300) == {}
        p.send(topic, value=b"second").get(10)
        deadline = time.monotonic() + 10
        got: list = []
        while not got and time.monotonic() < deadline:
            got = c.poll(timeout_ms=1000).get(tp, [])
        assert [m.value for m in got] == [b"second"]
    finally:
        c.close()
        p.close()


def test_an_offset_past_the_end_is_out_of_range_and_the_consumer_resets(kbroker) -> None:
    topic = unique("oor")
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap)
    p.send(topic, b"only").get(10)
    p.close()
    c = KafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap, auto_offset_reset="earliest")
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek(tp, 100)  # OFFSET_OUT_OF_RANGE: the client resets to the earliest offset
    try:
        deadline = time.monotonic() + 10
        got: list = []
        while not got and time.monotonic() < deadline:
            got = c.poll(timeout_ms=500).get(tp, [])
        assert [(m.offset, m.value) for m in got] == [(0, b"only")]
    finally:
        c.close()


def test_records_larger_than_max_partition_fetch_bytes_still_arrive(kbroker) -> None:
    topic = unique("big")
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap, max_request_size=2 * 1024 * 1024)
    for i in range(3):
        p.send(topic, bytes([i]) * 300_000).get(10)
    p.close()
    got = consume(kbroker.kafka_bootstrap, topic, 3, max_partition_fetch_bytes=1024, fetch_max_bytes=2048)
    assert [len(m.value) for m in got] == [300_000] * 3
    assert [m.value[0] for m in got] == [0, 1, 2]


def test_admin_create_describe_delete_topics(kbroker) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap)
    name = unique("adm")
    try:
        admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1,
                                      topic_configs={"retention.ms": "3600000"})])  # fmt: skip
        assert name in admin.list_topics()
        meta = admin.describe_topics([name])[0]
        assert len(meta["partitions"]) == 3
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        text = repr(configs)
        assert "retention.ms" in text and "3600000" in text
        with pytest.raises(Exception, match="TopicAlreadyExists"):
            admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
        admin.delete_topics([name])
        assert name not in admin.list_topics()
    finally:
        admin.close()


class GroupMember(threading.Thread):
    """A kafka-python group member polling in its own thread (as an application would), so a join
    is never cut short by a poll timeout; ``assigned`` is its latest assignment."""

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                      session_timeout_ms=6000, heartbeat_interval_ms=300)  # fmt: skip
        self.assigned: set = set()
        self.stopping = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.consumer.poll(timeout_ms=500)
            self.assigned = set(self.consumer.assignment())
        self.consumer.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(15)


def wait_assigned(members: list[GroupMember], sizes: list[int], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if [len(m.assigned) for m in members] == sizes:
            return
        time.sleep(0.1)
    raise AssertionError([m.assigned for m in members])


def test_two_members_rebalance_on_join_and_leave(kbroker) -> None:
    topic, group = unique("grp"), unique("g")
    admin = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    admin.close()
    a = GroupMember(kbroker.kafka_bootstrap, topic, group)
    b = None
    try:
        wait_assigned([a], [4])
        b = GroupMember(kbroker.kafka_bootstrap, topic, group)
        wait_assigned([a, b], [2, 2])
        assert a.assigned.isdisjoint(b.assigned)
        b.stop()  # LeaveGroup: a gets every partition back
        wait_assigned([a], [4])
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_describe_and_list_groups(kbroker) -> None:
    topic, group = unique("dg"), unique("g")
    KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap).send(topic, b"x").get(10)
    consume(kbroker.kafka_bootstrap, topic, 1, group=group)
    admin = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap)
    try:
        listed = admin.list_groups()
        assert group in [g["group_id"] for g in listed]
        offsets = admin.list_group_offsets({group: None})[group]
        assert offsets[TopicPartition(topic, 0)].offset == 1
        described = admin.describe_groups([group])
        assert group in repr(described)
        assert admin.delete_groups([group])
        assert group not in [g["group_id"] for g in admin.list_groups()]
    finally:
        admin.close()


class ConfluentMember(threading.Thread):
    """A confluent-kafka group member polling in its own thread; ``assigned`` is its assignment."""

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        super().__init__(daemon=True)
        self.assigned: set = set()
        self.seen: list[bytes] = []
        self.consumer = CKConsumer({"bootstrap.servers": bootstrap, "group.id": group,
                                    "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                                    "heartbeat.interval.ms": 300})  # fmt: skip
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.stopping = threading.Event()
        self.start()

    def _on_assign(self, _consumer, partitions) -> None:
        self.assigned = {p.partition for p in partitions}

    def _on_revoke(self, _consumer, _partitions) -> None:
        self.assigned = set()

    def run(self) -> None:
        while not self.stopping.is_set():
            m = self.consumer.poll(0.2)
            if m is not None and not m.error():
                self.seen.append(m.value())
        self.consumer.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(15)


def test_three_confluent_members_share_the_partitions_and_read_everything_once(kbroker) -> None:
    topic, group = unique("ck3"), unique("g")
    admin = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])
    admin.close()
    members = [ConfluentMember(kbroker.kafka_bootstrap, topic, group)]
    try:
        deadline = time.monotonic() + 30
        while len(members[0].assigned) != 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        members += [ConfluentMember(kbroker.kafka_bootstrap, topic, group) for _ in range(2)]
        while sorted(len(m.assigned) for m in members) != [2, 2, 2] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(len(m.assigned) for m in members) == [2, 2, 2], [m.assigned for m in members]
        assert set().union(*(m.assigned for m in members)) == set(range(6))
        p = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap})
        for i in range(60):
            p.produce(topic, key=f"k{i}", value=f"v{i}")
        assert p.flush(10) == 0
        while sum(len(m.seen) for m in members) < 60 and time.monotonic() < deadline + 15:
            time.sleep(0.1)
        seen = sorted(v for m in members for v in m.seen)
        assert seen == sorted(f"v{i}".encode() for i in range(60))
    finally:
        for m in members:
            m.stop()
