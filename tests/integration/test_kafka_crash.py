"""Crash safety over Kafka: a broker with fsync ``always`` is killed with SIGKILL while
confluent-kafka produces with acks=all; after each restart every acknowledged record is at the
offset its acknowledgement named, once, with its bytes."""

from __future__ import annotations

import random
import signal
import time

import pytest
from brokerproc import start_broker
from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition

ROUNDS = 3
TOPIC = "crash-orders"
PARTITIONS = 2


def _produce_until_killed(
    bootstrap: str, broker, round_no: int, rng: random.Random
) -> dict[tuple[int, int], bytes]:
    acked: dict[tuple[int, int], bytes] = {}

    def on_delivery(err, msg) -> None:
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2, "message.timeout.ms": 3000,
                  "retries": 0, "enable.idempotence": False})  # fmt: skip
    deadline = time.monotonic() + rng.uniform(0.5, 1.2)
    i = 0
    while time.monotonic() < deadline:
        for _ in range(50):
            p.produce(TOPIC, key=f"k{i % 7}", value=f"{round_no}:{i}".encode(), on_delivery=on_delivery)
            i += 1
        p.poll(0.005)
    broker.stop(signal.SIGKILL)
    p.flush(5)  # what was in flight now fails: never acknowledged
    return acked


def _read_everything(bootstrap: str) -> dict[tuple[int, int], bytes]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    c.assign(tps)
    c.seek_to_beginning()
    ends = c.end_offsets(tps)
    out: dict[tuple[int, int], bytes] = {}
    deadline = time.monotonic() + 30
    while any(c.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
        for tp, msgs in c.poll(timeout_ms=500, max_records=5000).items():
            for m in msgs:
                out[(tp.partition, m.offset)] = m.value
    c.close()
    return out


@pytest.mark.timeout(180)
def test_every_acknowledged_record_survives_sigkill(tmp_path) -> None:
    rng = random.Random()
    data = tmp_path / "data"
    acked_total: dict[tuple[int, int], bytes] = {}
    for round_no in range(ROUNDS):
        b = start_broker(data, "--http-port", "off", "--fsync", "always")
        if round_no == 0:
            from kafka.admin import KafkaAdminClient, NewTopic

            admin = KafkaAdminClient(bootstrap_servers=b.kafka_bootstrap)
            admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])
            admin.close()
        acked = _produce_until_killed(b.kafka_bootstrap, b, round_no, rng)
        assert not set(acked) & set(acked_total), "an offset was acknowledged twice"
        acked_total.update(acked)
        b = start_broker(data, "--http-port", "off", "--fsync", "always")
        try:
            stored = _read_everything(b.kafka_bootstrap)
        finally:
            b.stop()
        lost = [k for k, v in acked_total.items() if stored.get(k) != v]
        assert not lost, f"acknowledged records lost or changed: {lost[:10]}"
        values = list(stored.values())
        assert len(values) == len(set(values)), "a record was stored twice"
    assert len(acked_total) > 100  # the kills hit a busy producer
