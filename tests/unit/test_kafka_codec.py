"""The Kafka codec, record batches, the group coordinator and producer state, without a network."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.protocol.consumer.fetch import FetchRequest
from kafka.protocol.metadata.metadata import MetadataRequest, MetadataResponse

from robustmq.bridges.kafka import errors as E
from robustmq.bridges.kafka.batches import build_batch, read_batches
from robustmq.bridges.kafka.codec import KafkaDecoder, encode_response
from robustmq.bridges.kafka.coordinator import GroupCoordinator
from robustmq.bridges.kafka.errors import (
    CorruptBatch,
    KafkaCodecError,
    MalformedRequest,
    RequestTooLarge,
    UnsupportedRequest,
)
from robustmq.bridges.kafka.limits import API_VERSIONS
from robustmq.bridges.kafka.producers import ProducerRegistry
from robustmq.bridges.kafka.topics import default_partition


def framed(request, version: int, correlation: int = 7) -> bytes:
    request.with_header(correlation_id=correlation, client_id="t")
    return bytes(request.encode(version=version, header=True, framed=True))


def test_requests_arriving_byte_by_byte_decode_in_order() -> None:
    dec = KafkaDecoder(1 << 20, API_VERSIONS)
    data = framed(MetadataRequest(version=11, topics=None, allow_auto_topic_creation=True), 11, 1)
    data += framed(MetadataRequest(version=1, topics=None), 1, 2)
    got = []
    for i in range(len(data)):
        dec.feed(data[i : i + 1])
        while (req := dec.next_request()) is not None:
            got.append(req)
    assert [(r.api_key, r.api_version, r.correlation_id, r.client_id) for r in got] == [
        (3, 11, 1, "t"),
        (3, 1, 2, "t"),
    ]
    assert got[0].body.allow_auto_topic_creation is True


def test_response_is_framed_with_the_request_correlation_id() -> None:
    dec = KafkaDecoder(1 << 20, API_VERSIONS)
    dec.feed(framed(MetadataRequest(version=9, topics=None), 9, 42))
    req = dec.next_request()
    out = encode_response(
        req, MetadataResponse(version=9, brokers=[], cluster_id="c", controller_id=0, topics=[])
    )
    assert struct.unpack(">i", out[:4])[0] == len(out) - 4
    assert MetadataResponse.decode(out, version=9, header=True, framed=True).header.correlation_id == 42


def test_limits_and_unknown_requests_raise_codec_errors() -> None:
    dec = KafkaDecoder(100, API_VERSIONS)
    dec.feed(struct.pack(">i", 101))
    with pytest.raises(RequestTooLarge):
        dec.next_request()
    dec = KafkaDecoder(100, API_VERSIONS)
    dec.feed(struct.pack(">ihhi", 8, 1, 13, 5))  # Fetch v13 is past our table (Kafka 3.0: 12)
    with pytest.raises(UnsupportedRequest) as info:
        dec.next_request()
    assert (info.value.api_key, info.value.api_version, info.value.correlation_id) == (1, 13, 5)
    assert dec.next_request() is None  # the frame was consumed
    dec.feed(struct.pack(">ihhi", 9, 3, 9, 5) + b"\xff")
    with pytest.raises(MalformedRequest):
        dec.next_request()


def test_fetch_request_round_trips_through_the_decoder() -> None:
    T = FetchRequest.FetchTopic
    P = T.FetchPartition
    req = FetchRequest(version=12, replica_id=-1, max_wait_ms=500, min_bytes=1, max_bytes=1 << 20, isolation_level=0,
                       session_id=0, session_epoch=-1,
                       topics=[T(topic="t", partitions=[P(partition=0, current_leader_epoch=-1, fetch_offset=9,
                                                          last_fetched_epoch=-1, log_start_offset=-1,
                                                          partition_max_bytes=1000)])],
                       forgotten_topics_data=[], rack_id="")  # fmt: skip
    dec = KafkaDecoder(1 << 20, API_VERSIONS)
    dec.feed(framed(req, 12))
    body = dec.next_request().body
    assert body.topics[0].topic == "t" and body.topics[0].partitions[0].fetch_offset == 9


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_codec_errors(data: bytes) -> None:
    dec = KafkaDecoder(1 << 16, API_VERSIONS)
    dec.feed(data)
    try:
        while dec.next_request() is not None:
            pass
    except KafkaCodecError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=60), st.integers(min_value=0, max_value=13), st.binary(max_size=200)
)
def test_valid_headers_with_garbage_bodies_raise_only_codec_errors(
    key: int, version: int, body: bytes
) -> None:
    frame = struct.pack(">hhi", key, version, 1) + b"\x00\x01t" + body
    dec = KafkaDecoder(1 << 16, API_VERSIONS)
    dec.feed(struct.pack(">i", len(frame)) + frame)
    try:
        dec.next_request()
    except KafkaCodecError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_record_bytes_raise_only_corrupt_batch(data: bytes) -> None:
    try:
        read_batches(data)
    except CorruptBatch:
        pass


def test_built_batches_read_back_with_gaps_keys_and_headers() -> None:
    raw = build_batch([(10, 1000, b"k", b"v", [("h", b"1")]), (12, 1001, None, b"w", [])])
    (batch,) = read_batches(raw)
    assert [(r.key, r.value, r.headers) for r in batch.records] == [
        (b"k", b"v", [("h", b"1")]),
        (None, b"w", []),
    ]
    corrupt = bytearray(raw)
    corrupt[-1] ^= 1
    with pytest.raises(CorruptBatch) as info:
        read_batches(bytes(corrupt))
    assert info.value.code == E.CORRUPT_MESSAGE


def test_default_partitioner_matches_kafka_for_keys_and_round_robins_without() -> None:
    import itertools

    from kafka.partitioner.default import murmur2

    assert default_partition(b"a", 3, itertools.count()) == (murmur2(b"a") & 0x7FFFFFFF) % 3
    assert default_partition(b"a", 1, itertools.count()) == 0
    counter = itertools.count()
    assert [default_partition(None, 3, counter) for _ in range(4)] == [0, 1, 2, 0]


def test_idempotent_producer_sequences() -> None:
    reg = ProducerRegistry(first_id=1000)
    pid, epoch = reg.init_producer()
    assert reg.check(pid, epoch, "t", 0, 0, 4) == (E.NONE, None)
    reg.stored(pid, epoch, "t", 0, 0, 4, base=0)
    assert reg.check(pid, epoch, "t", 0, 0, 4) == (E.DUPLICATE_SEQUENCE_NUMBER, 0)  # a retry
    assert reg.check(pid, epoch, "t", 0, 7, 8)[0] == E.OUT_OF_ORDER_SEQUENCE_NUMBER  # a gap
    assert reg.check(pid, epoch, "t", 0, 5, 6) == (E.NONE, None)
    pid2, epoch2 = reg.init_producer(pid, epoch)
    assert (pid2, epoch2) == (pid, epoch + 1)
    assert reg.check(pid, epoch, "t", 0, 5, 6)[0] == E.INVALID_PRODUCER_EPOCH  # fenced


async def test_group_of_two_rebalances_on_join_and_on_session_timeout() -> None:
    coord = GroupCoordinator()
    protocols = [("range", b"meta")]
    first = await coord.join("g", "", None, "consumer", protocols, 1000, 1000, "c1", "h")
    assert first.error == 0 and first.generation == 1 and first.leader == first.member_id
    group = coord.group("g")
    sync = group.sync(first.member_id, 1, {first.member_id: b"all"})
    assert await sync == (0, b"all")
    second_join = asyncio.ensure_future(
        coord.join("g", "", None, "consumer", protocols, 1000, 1000, "c2", "h")
    )
    await asyncio.sleep(0.01)
    assert group.heartbeat(first.member_id, 1) == E.REBALANCE_IN_PROGRESS
    rejoin = await coord.join("g", first.member_id, None, "consumer", protocols, 1000, 1000, "c1", "h")
    second = await second_join
    assert rejoin.generation == second.generation == 2
    assert len(rejoin.members) == 2 and second.members == []  # only the leader gets the member list
    follower_sync = group.sync(second.member_id, 2, {})
    await group.sync(first.member_id, 2, {first.member_id: b"a", second.member_id: b"b"})
    assert await follower_sync == (0, b"b")
    # the follower stops heartbeating: after its session timeout the leader is told to rejoin
    for _ in range(15):
        await asyncio.sleep(0.1)
        group.heartbeat(first.member_id, 2)
    assert second.member_id not in group.members
    assert group.heartbeat(first.member_id, 2) == E.REBALANCE_IN_PROGRESS
    coord.close()
