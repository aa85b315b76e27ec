"""Topic = stream: a publish its front-end already stored is not appended twice, and publishes from
other protocols into a Kafka topic get their key and Kafka's partition."""

from __future__ import annotations

from types import SimpleNamespace

from kafka.partitioner.default import murmur2

from robustmq.bridges.kafka.topics import TopicIngest, new_topic_config
from robustmq.config import StoreSettings
from robustmq.headers import decode_headers, encode_headers
from robustmq.router import Router
from robustmq.store import Store


async def test_a_publish_whose_origin_stored_it_is_not_appended_again(tmp_path) -> None:
    router = Router()
    store = Store(StoreSettings(data_dir=tmp_path), router=router, index=False)
    await store.start()
    try:
        store.create_stream(new_topic_config("t", 1, {}))
        store.create_stream({"name": "audit", "subjects": ["t"]})  # another stream bound to subject t
        stored = SimpleNamespace(stored_in="t")
        _count, pending = router.publish_durable("t", b"from-kafka", origin=stored)
        for ack in pending:
            await ack
        _count, pending = router.publish_durable("t", b"from-nats")
        for ack in pending:
            await ack
        assert [r.payload for r in store.read("t", 0)] == [b"from-nats"]
        assert [r.payload for r in store.read("audit", 0)] == [b"from-kafka", b"from-nats"]
    finally:
        await store.stop()


async def test_topic_ingest_takes_the_key_header_and_kafkas_partition(tmp_path) -> None:
    router = Router()
    store = Store(StoreSettings(data_dir=tmp_path), router=router, index=False)
    await store.start()
    try:
        store.create_stream(new_topic_config("multi", 3, {}))
        store.set_ingest("multi", TopicIngest(store, router, "multi"))
        headers = encode_headers([("kafka-key", "device-9"), ("unit", "C")])
        _count, pending = router.publish_durable("multi", b"21.5", headers=headers)
        for ack in pending:
            await ack
        partition = (murmur2(b"device-9") & 0x7FFFFFFF) % 3
        (rec,) = store.read("multi", 0, partition=partition)
        assert rec.key == b"device-9"
        assert decode_headers(rec.headers) == [("unit", "C")]  # the key is not kept twice
    finally:
        await store.stop()
