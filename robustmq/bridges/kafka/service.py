"""The Kafka APIs on top of the store, the router and the group coordinator.

One method per API key: it takes the connection (who is asking) and the decoded request body and
returns the response body (None for a produce with acks=0). No bytes and no sockets here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from robustmq.bridges.kafka import errors as E
from robustmq.bridges.kafka.batches import build_batch, read_batches, record_size_bytes
from robustmq.bridges.kafka.codec import response_class
from robustmq.bridges.kafka.coordinator import GroupCoordinator
from robustmq.bridges.kafka.errors import CorruptBatch
from robustmq.bridges.kafka.limits import (
    API_VERSIONS,
    CLUSTER_ID,
    FETCH_READ_CHUNK_RECORDS,
    MAX_FETCH_WAIT_MS,
    MAX_GROUPS,
    NODE_ID,
    OFFSETS_CONSUMER_PREFIX,
)
from robustmq.bridges.kafka.producers import ProducerRegistry
from robustmq.bridges.kafka.topics import (
    STREAM_KIND,
    TopicIngest,
    block_to_kafka_headers,
    is_valid_topic_name,
    kafka_headers_to_block,
    new_topic_config,
    topic_id,
)
from robustmq.store import (
    PRIORITIES,
    InvalidStreamConfig,
    RecordTooLarge,
    StoreError,
    StreamExists,
    StreamNotFound,
)
from robustmq.subjects import is_valid_subject

if TYPE_CHECKING:
    from robustmq.bridges.kafka.listener import KafkaConnection, KafkaServer

log = logging.getLogger("robustmq.kafka")

RECORD_OVERHEAD_BYTES = 64  # the store's per-record header, rounded up
MAX_KEY_BYTES = 0xFFFF  # the store's key limit
PRIORITY_HEADER = "mq9-priority"
KAFKA_STORAGE_ERROR = 56
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53


def _priority(headers: list[tuple[str, bytes | None]]) -> str | None:
    """The store priority named by an ``mq9-priority`` record header, if any."""
    for key, value in headers:
        if key.lower() == PRIORITY_HEADER and value:
            text = value.decode("utf-8", "replace").strip().lower()
            return text if text in PRIORITIES else None
    return None


def _literal_subject(name: str) -> bool:
    return is_valid_subject(name) and "*" not in name.split(".") and ">" not in name.split(".")


class KafkaService:
    """What each API does. ``handlers`` maps an API key to its coroutine."""

    def __init__(self, server: KafkaServer) -> None:
        self.server = server
        self.store = server.broker.store
        self.router = server.router
        self.settings = server.settings
        self.coordinator = GroupCoordinator()
        self.producers = ProducerRegistry(first_id=int(time.time() * 1000) & 0x3FFFFFFFFFFF)
        self._ingests: dict[str, TopicIngest] = {}
        self.handlers: dict[int, Callable[[KafkaConnection, Any, int], Awaitable[Any]]] = {
            0: self.produce, 1: self.fetch, 2: self.list_offsets, 3: self.metadata,
            8: self.offset_commit, 9: self.offset_fetch, 10: self.find_coordinator,
            11: self.join_group, 12: self.heartbeat, 13: self.leave_group, 14: self.sync_group,
            15: self.describe_groups, 16: self.list_groups, 18: self.api_versions,
            19: self.create_topics, 20: self.delete_topics, 22: self.init_producer_id,
            32: self.describe_configs, 37: self.create_partitions, 42: self.delete_groups,
            60: self.describe_cluster,
        }  # fmt: skip

    def start(self) -> None:
        """Give every stream created over Kafka its ingest (key header and default partitioner)."""
        for cfg in self.store.list_streams():
            if cfg.kind == STREAM_KIND:
                self._attach(cfg.name)

    def close(self) -> None:
        self.coordinator.close()

    def _attach(self, name: str) -> None:
        ingest = self._ingests[name] = TopicIngest(self.store, self.router, name)
        self.store.set_ingest(name, ingest)

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _response(api_key: int, version: int, **fields: Any) -> Any:
        cls = response_class(api_key)
        return cls(version=version, **fields)

    def _topic(self, name: str | None, auto_create: bool, conn: KafkaConnection) -> tuple[int, Any]:
        """(error, stream config) of a topic, creating it when allowed."""
        if not name:
            return E.INVALID_TOPIC_EXCEPTION, None
        if self.store.has_stream(name):
            return E.NONE, self.store.stream_config(name)
        if not (auto_create and self.settings.auto_create_topics):
            return E.UNKNOWN_TOPIC_OR_PARTITION, None
        if not is_valid_topic_name(name):
            return E.INVALID_TOPIC_EXCEPTION, None
        if not conn.may_publish(name):
            return E.TOPIC_AUTHORIZATION_FAILED, None
        return self._create(name, self.settings.default_partitions, {})

    def _create(self, name: str, partitions: int, configs: dict[str, str]) -> tuple[int, Any]:
        try:
            cfg = self.store.create_stream(new_topic_config(name, partitions, configs))
        except StreamExists:
            return E.TOPIC_ALREADY_EXISTS, self.store.stream_config(name)
        except (InvalidStreamConfig, ValueError):
            return E.INVALID_CONFIG, None
        self._attach(name)
        return E.NONE, cfg

    def advertised(self) -> tuple[str, int]:
        return self.server.advertised_address()

    # -- negotiation -----------------------------------------------------------------------------

    async def api_versions(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(18)
        return cls(
            version=version,
            error_code=E.NONE,
            api_keys=[
                cls.ApiVersion(api_key=k, min_version=lo, max_version=hi)
                for k, (lo, hi) in API_VERSIONS.items()
            ],
            throttle_time_ms=0,
        )

    async def metadata(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(3)
        host, port = self.advertised()
        broker = cls.MetadataResponseBroker(node_id=NODE_ID, host=host, port=port, rack=None)
        requested = body.topics
        auto = bool(getattr(body, "allow_auto_topic_creation", True)) if version >= 4 else True
        if requested is None or (version == 0 and not requested):
            names = [c.name for c in self.store.list_streams()]
            auto = False
        else:
            names = []
            for t in requested:
                name = t.name
                if name is None and getattr(t, "topic_id", None) is not None:
                    name = next(
                        (c.name for c in self.store.list_streams() if topic_id(c) == t.topic_id), None
                    )
                names.append(name)
        topics = []
        T = cls.MetadataResponseTopic
        P = T.MetadataResponsePartition
        for name in names:
            code, cfg = self._topic(name, auto, conn)
            if cfg is None:
                topics.append(T(error_code=code, name=name, topic_id=None, is_internal=False, partitions=[]))
                continue
            partitions = [
                P(error_code=0, partition_index=p, leader_id=NODE_ID, leader_epoch=0,
                  replica_nodes=[NODE_ID], isr_nodes=[NODE_ID], offline_replicas=[])
                for p in range(cfg.partitions)
            ]  # fmt: skip
            topics.append(
                T(
                    error_code=0,
                    name=cfg.name,
                    topic_id=topic_id(cfg),
                    is_internal=False,
                    partitions=partitions,
                )
            )
        return cls(
            version=version, throttle_time_ms=0, brokers=[broker], cluster_id=CLUSTER_ID,
            controller_id=NODE_ID, topics=topics,
        )  # fmt: skip

    async def describe_cluster(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(60)
        host, port = self.advertised()
        return cls(
            version=version, throttle_time_ms=0, error_code=0, error_message=None, cluster_id=CLUSTER_ID,
            controller_id=NODE_ID,
            brokers=[cls.DescribeClusterBroker(broker_id=NODE_ID, host=host, port=port, rack=None)],
        )  # fmt: skip

    async def find_coordinator(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(10)
        host, port = self.advertised()
        if version >= 4:
            coordinators = [
                cls.Coordinator(
                    key=k, node_id=NODE_ID, host=host, port=port, error_code=0, error_message=None
                )
                for k in body.coordinator_keys or []
            ]
            return cls(version=version, throttle_time_ms=0, coordinators=coordinators)
        return cls(
            version=version, throttle_time_ms=0, error_code=0, error_message=None,
            node_id=NODE_ID, host=host, port=port,
        )  # fmt: skip

    # -- produce ---------------------------------------------------------------------------------

    async def produce(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(0)
        acks = body.acks
        results: list[tuple[str, list[tuple[int, int, int, list[Any]]]]] = []
        waits: list[Any] = []
        for t in body.topic_data:
            name = t.name
            parts: list[tuple[int, int, int, list[Any]]] = []
            results.append((name, parts))
            if acks not in (0, 1, -1):
                parts.extend((p.index, E.INVALID_REQUIRED_ACKS, -1, []) for p in t.partition_data)
                continue
            if not self.store.has_stream(name) and not conn.may_publish(name):
                code, cfg = E.TOPIC_AUTHORIZATION_FAILED, None
            else:
                code, cfg = self._topic(name, True, conn)
            if cfg is not None and not conn.may_publish(name):
                code, cfg = E.TOPIC_AUTHORIZATION_FAILED, None
            for p in t.partition_data:
                if cfg is None:
                    parts.append((p.index, code, -1, []))
                elif not 0 <= p.index < cfg.partitions:
                    parts.append((p.index, E.UNKNOWN_TOPIC_OR_PARTITION, -1, []))
                else:
                    err, base, acks_pending = self._append(conn, name, p.index, p.records)
                    parts.append((p.index, err, base, acks_pending))
                    waits.extend(acks_pending)
        if acks == 0:
            return None
        failed: set[int] = set()
        if waits:
            done = await asyncio.gather(*waits, return_exceptions=True)
            failed = {id(w) for w, r in zip(waits, done, strict=True) if isinstance(r, BaseException)}
        T = cls.TopicProduceResponse
        P = T.PartitionProduceResponse
        responses = []
        for name, parts in results:
            out = []
            for index, err, base, pending in parts:
                if err == E.NONE and any(id(w) in failed for w in pending):
                    err, base = KAFKA_STORAGE_ERROR, -1
                first = self.store.first_offset(name, index) if err == E.NONE else -1
                out.append(P(index=index, error_code=err, base_offset=base, log_append_time_ms=-1,
                             log_start_offset=first, record_errors=[], error_message=None))  # fmt: skip
            responses.append(T(name=name, partition_responses=out))
        return cls(version=version, responses=responses, throttle_time_ms=0)

    def _append(
        self, conn: KafkaConnection, name: str, partition: int, data: Any
    ) -> tuple[int, int, list[Any]]:
        """Store every batch of one partition's records; (error, base offset, acks to await)."""
        try:
            batches = read_batches(data)
        except CorruptBatch as exc:
            return exc.code, -1, []
        limit = self.store.settings.max_record_bytes - RECORD_OVERHEAD_BYTES - len(name)
        prepared = []
        for batch in batches:
            items = []
            for rec in batch.records:
                stored, live = kafka_headers_to_block(rec.headers, rec.key)
                value = rec.value or b""
                if (rec.key is not None and len(rec.key) > MAX_KEY_BYTES) or (
                    len(value) + len(rec.key or b"") + len(stored or b"") > limit
                ):
                    return E.MESSAGE_TOO_LARGE, -1, []
                item = {"payload": value, "subject": name, "headers": stored, "key": rec.key}
                priority = _priority(rec.headers)
                if priority is not None:
                    item["priority"] = priority  # a record produced into an mq9 mailbox keeps its class
                items.append((item, live))
            prepared.append((batch, items))
        base_offset = -1
        pending: list[Any] = []
        publish = _literal_subject(name)
        for batch, items in prepared:
            if not items:
                continue
            idempotent = batch.producer_id >= 0 and batch.base_sequence >= 0
            if idempotent:
                err, dup_base = self.producers.check(
                    batch.producer_id,
                    batch.producer_epoch,
                    name,
                    partition,
                    batch.base_sequence,
                    batch.last_sequence,
                )
                if err == E.DUPLICATE_SEQUENCE_NUMBER:
                    base_offset = dup_base if base_offset < 0 else base_offset
                    continue  # already stored: answered with its first offset, as Kafka does
                if err != E.NONE:
                    return err, -1, pending
            try:
                ack = self.store.append_batch(name, [i for i, _ in items], partition=partition)
            except RecordTooLarge:
                return E.MESSAGE_TOO_LARGE, -1, pending
            except StreamNotFound:
                return E.UNKNOWN_TOPIC_OR_PARTITION, -1, pending
            except StoreError:
                return KAFKA_STORAGE_ERROR, -1, pending
            if base_offset < 0:
                base_offset = ack.offsets[0]
            if idempotent:
                self.producers.stored(
                    batch.producer_id, batch.producer_epoch, name, partition,
                    batch.base_sequence, batch.last_sequence, ack.offsets[0],
                )  # fmt: skip
            pending.append(ack)
            conn.in_msgs += len(items)
            conn.in_bytes += sum(len(i["payload"]) for i, _ in items)
            if publish:
                self._publish_live(conn, name, items)
        return E.NONE, base_offset, pending

    def _publish_live(
        self, conn: KafkaConnection, name: str, items: list[tuple[dict[str, Any], bytes | None]]
    ) -> None:
        """Deliver the records to live subscribers of subject ``name`` on every protocol (and to the
        other streams bound to it); stream ``name`` itself is skipped, it has them already."""
        router = self.router
        if not router.has_interest(name):
            return
        conn.stored_in = name
        try:
            for item, live in items:
                router.publish(name, item["payload"], headers=live, origin=conn)
        finally:
            conn.stored_in = None

    # -- fetch -----------------------------------------------------------------------------------

    async def fetch(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(1)
        loop = asyncio.get_running_loop()
        wait_ms = min(max(body.max_wait_ms, 0), MAX_FETCH_WAIT_MS)
        deadline = loop.time() + wait_ms / 1000
        min_bytes = max(body.min_bytes, 0)
        max_bytes = body.max_bytes if version >= 3 and body.max_bytes > 0 else 1 << 31
        while True:
            responses, total, watch = self._fill_fetch(conn, body, max_bytes)
            remaining = deadline - loop.time()
            if total >= max(min_bytes, 1) or remaining <= 0 or not watch:
                break
            if not await self._wait_any(watch, remaining):
                responses, total, watch = self._fill_fetch(conn, body, max_bytes)
                break
        return cls(version=version, throttle_time_ms=0, error_code=0, session_id=0, responses=responses)

    def _fill_fetch(
        self, conn: KafkaConnection, body: Any, max_bytes: int
    ) -> tuple[list[Any], int, list[tuple[str, int, int]]]:
        cls = response_class(1)
        T = cls.FetchableTopicResponse
        P = T.PartitionData
        total = 0
        watch: list[tuple[str, int, int]] = []
        responses = []
        for t in body.topics:
            name = t.topic
            cfg = self.store.stream_config(name) if name and self.store.has_stream(name) else None
            allowed = cfg is not None and conn.may_subscribe(name)
            parts = []
            for p in t.partitions:
                index = p.partition
                if cfg is None or not allowed or not 0 <= index < cfg.partitions:
                    code = (
                        E.TOPIC_AUTHORIZATION_FAILED
                        if cfg is not None and not allowed
                        else E.UNKNOWN_TOPIC_OR_PARTITION
                    )
                    parts.append(P(partition_index=index, error_code=code, high_watermark=-1, last_stable_offset=-1,
                                   log_start_offset=-1, aborted_transactions=None, preferred_read_replica=-1,
                                   records=b""))  # fmt: skip
                    continue
                first = self.store.first_offset(name, index)
                end = self.store.end_offset(name, index)
                offset = p.fetch_offset
                if offset < first or offset > end:
                    parts.append(P(partition_index=index, error_code=E.OFFSET_OUT_OF_RANGE, high_watermark=end,
                                   last_stable_offset=end, log_start_offset=first, aborted_transactions=None,
                                   preferred_read_replica=-1, records=b""))  # fmt: skip
                    continue
                records = None
                if offset < end and total < max_bytes:
                    budget = min(p.partition_max_bytes, max_bytes - total)
                    records = self._read(conn, name, index, offset, budget, first_in_response=total == 0)
                    total += len(records) if records else 0
                if not records:
                    watch.append((name, index, offset))
                parts.append(P(partition_index=index, error_code=0, high_watermark=end, last_stable_offset=end,
                               log_start_offset=first, aborted_transactions=None, preferred_read_replica=-1,
                               records=records or b""))  # fmt: skip
            responses.append(T(topic=name, partitions=parts))
        return responses, total, watch

    def _read(
        self,
        conn: KafkaConnection,
        name: str,
        partition: int,
        offset: int,
        budget: int,
        first_in_response: bool,
    ) -> bytes | None:
        """One batch of the records from ``offset`` within ``budget`` bytes (at least one record when
        it is the first data of the response, so a record larger than max_bytes still goes out)."""
        out = []
        size = 0
        while True:
            recs = self.store.read(name, offset, FETCH_READ_CHUNK_RECORDS, partition)
            if not recs:
                break
            for rec in recs:
                headers = block_to_kafka_headers(rec.headers)
                need = record_size_bytes(rec.key, rec.payload, headers)
                if size + need > budget and (out or not first_in_response):
                    return self._batch(conn, out)
                out.append((rec.offset, rec.timestamp_ms, rec.key, rec.payload, headers))
                size += need
            offset = recs[-1].offset + 1
        return self._batch(conn, out)

    @staticmethod
    def _batch(conn: KafkaConnection, records: list[Any]) -> bytes | None:
        if not records:
            return None
        conn.out_msgs += len(records)
        conn.out_bytes += sum(len(r[3]) for r in records)
        return build_batch(records)

    async def _wait_any(self, watch: list[tuple[str, int, int]], timeout_s: float) -> bool:
        tasks = [
            asyncio.ensure_future(self.store.wait_for_data(name, offset, timeout_s, index))
            for name, index, offset in watch
        ]
        try:
            done, _ = await asyncio.wait(tasks, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            return any(not t.cancelled() and t.exception() is None and t.result() for t in done)
        finally:
            for t in tasks:
                t.cancel()

    # -- offsets ---------------------------------------------------------------------------------

    async def list_offsets(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(2)
        T = cls.ListOffsetsTopicResponse
        P = T.ListOffsetsPartitionResponse
        topics = []
        for t in body.topics:
            name = t.name
            exists = bool(name) and self.store.has_stream(name)
            parts = []
            for p in t.partitions:
                index = p.partition_index
                if not exists or not 0 <= index < self.store.stream_config(name).partitions:
                    parts.append(P(partition_index=index, error_code=E.UNKNOWN_TOPIC_OR_PARTITION, timestamp=-1, offset=-1,
                                   old_style_offsets=[]))  # fmt: skip
                    continue
                if not conn.may_subscribe(name):
                    parts.append(P(partition_index=index, error_code=E.TOPIC_AUTHORIZATION_FAILED, timestamp=-1,
                                   offset=-1, old_style_offsets=[]))  # fmt: skip
                    continue
                offset, ts = self._offset_for(name, index, p.timestamp)
                parts.append(P(partition_index=index, error_code=0, timestamp=ts, offset=offset, leader_epoch=0,
                               old_style_offsets=[offset] if offset >= 0 else []))  # fmt: skip
            topics.append(T(name=name, partitions=parts))
        return cls(version=version, throttle_time_ms=0, topics=topics)

    def _offset_for(self, name: str, partition: int, timestamp: int) -> tuple[int, int]:
        first = self.store.first_offset(name, partition)
        end = self.store.end_offset(name, partition)
        if timestamp == -1:  # latest
            return end, -1
        if timestamp == -2:  # earliest
            return first, -1
        if (
            timestamp == -3
        ):  # the record with the largest timestamp: the last one (timestamps are the store's)
            rec = self._last_record(name, partition, first, end)
            return (rec.offset, rec.timestamp_ms) if rec is not None else (end, -1)
        off = self.store.first_offset_at_or_after(name, timestamp, partition)
        if off is None:
            return -1, -1
        rec = self.store.get(name, off, partition)
        return off, rec.timestamp_ms if rec is not None else timestamp

    def _last_record(self, name: str, partition: int, first: int, end: int) -> Any:
        off = end - 1
        while off >= first:
            rec = self.store.get(name, off, partition)
            if rec is not None:
                return rec
            off -= 1
        return None

    @staticmethod
    def _offsets_consumer(group_id: str) -> str:
        return OFFSETS_CONSUMER_PREFIX + group_id

    async def offset_commit(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(8)
        T = cls.OffsetCommitResponseTopic
        P = T.OffsetCommitResponsePartition
        group_id = body.group_id
        group = self.coordinator.group(group_id, create=False)
        generation = body.generation_id_or_member_epoch if version >= 1 else -1
        member_id = body.member_id if version >= 1 else ""
        if group is not None and group.members:
            group_error = group.check_generation(member_id, generation)
        elif generation >= 0 and member_id:
            group_error = E.UNKNOWN_MEMBER_ID
        else:
            group_error = E.NONE
        if not group_id:
            group_error = E.INVALID_GROUP_ID
        writes = []
        topics = []
        for t in body.topics:
            parts = []
            name = t.name
            exists = bool(name) and self.store.has_stream(name)
            for p in t.partitions:
                code = group_error
                if code == E.NONE:
                    if not exists or not 0 <= p.partition_index < self.store.stream_config(name).partitions:
                        code = E.UNKNOWN_TOPIC_OR_PARTITION
                    elif not conn.may_subscribe(name):
                        code = E.TOPIC_AUTHORIZATION_FAILED
                    else:
                        consumer = self.store.consumer(
                            name, self._offsets_consumer(group_id), p.partition_index
                        )
                        writes.append(consumer.commit(max(p.committed_offset, 0)))
                parts.append(P(partition_index=p.partition_index, error_code=code))
            topics.append(T(name=name, partitions=parts))
        if writes:
            await asyncio.gather(*writes)
        return cls(version=version, throttle_time_ms=0, topics=topics)

    async def offset_fetch(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(9)
        if version >= 8:
            G = cls.OffsetFetchResponseGroup
            T = G.OffsetFetchResponseTopics
            P = T.OffsetFetchResponsePartitions
            groups = []
            for g in body.groups:
                wanted = None if g.topics is None else [(t.name, t.partition_indexes) for t in g.topics]
                topics = [
                    T(name=name, partitions=[P(partition_index=i, committed_offset=o, committed_leader_epoch=-1,
                                               metadata="", error_code=c) for i, o, c in parts])
                    for name, parts in self._committed(conn, g.group_id, wanted)
                ]  # fmt: skip
                groups.append(G(group_id=g.group_id, topics=topics, error_code=0))
            return cls(version=version, throttle_time_ms=0, groups=groups)
        T = cls.OffsetFetchResponseTopic
        P = T.OffsetFetchResponsePartition
        wanted = None if body.topics is None else [(t.name, t.partition_indexes) for t in body.topics]
        topics = [
            T(name=name, partitions=[P(partition_index=i, committed_offset=o, committed_leader_epoch=-1, metadata="",
                                       error_code=c) for i, o, c in parts])
            for name, parts in self._committed(conn, body.group_id, wanted)
        ]  # fmt: skip
        return cls(version=version, throttle_time_ms=0, topics=topics, error_code=0)

    def _committed(
        self, conn: KafkaConnection, group_id: str, wanted: list[tuple[str, list[int]]] | None
    ) -> list[tuple[str, list[tuple[int, int, int]]]]:
        """The committed offsets of a group: for the topics asked, or every one it committed to."""
        name_of = self._offsets_consumer(group_id)
        out = []
        if wanted is None:
            for cfg in self.store.list_streams():
                parts = [
                    (p, self.store.consumer(cfg.name, name_of, p, create=False).committed(), 0)
                    for p in range(cfg.partitions)
                    if name_of in self.store.consumers(cfg.name, p)
                ]
                if parts and conn.may_subscribe(cfg.name):
                    out.append((cfg.name, parts))
            return out
        for name, indexes in wanted:
            parts = []
            exists = bool(name) and self.store.has_stream(name)
            for p in indexes:
                if not exists or not 0 <= p < self.store.stream_config(name).partitions:
                    parts.append((p, -1, 0))
                elif not conn.may_subscribe(name):
                    parts.append((p, -1, E.TOPIC_AUTHORIZATION_FAILED))
                elif name_of in self.store.consumers(name, p):
                    parts.append((p, self.store.consumer(name, name_of, p, create=False).committed(), 0))
                else:
                    parts.append((p, -1, 0))
            out.append((name, parts))
        return out

    # -- groups ----------------------------------------------------------------------------------

    async def join_group(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(11)
        if body.group_id not in self.coordinator.groups and len(self.coordinator.groups) >= MAX_GROUPS:
            return cls(version=version, error_code=E.INVALID_GROUP_ID, generation_id=-1, protocol_name=None,
                       leader="", member_id="", members=[])  # fmt: skip
        rebalance_ms = body.rebalance_timeout_ms if version >= 1 else body.session_timeout_ms
        result = await self.coordinator.join(
            body.group_id, body.member_id or "", getattr(body, "group_instance_id", None) if version >= 5 else None,
            body.protocol_type, [(p.name, bytes(p.metadata)) for p in body.protocols],
            body.session_timeout_ms, rebalance_ms, conn.kafka_client_id or "", conn.remote_host,
        )  # fmt: skip
        members = [
            cls.JoinGroupResponseMember(member_id=m, group_instance_id=i, metadata=md)
            for m, i, md in result.members
        ]
        return cls(
            version=version, throttle_time_ms=0, error_code=result.error, generation_id=result.generation,
            protocol_type=result.protocol_type, protocol_name=result.protocol_name, leader=result.leader,
            member_id=result.member_id, members=members,
        )  # fmt: skip

    async def sync_group(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(14)
        group = self.coordinator.group(body.group_id, create=False)
        if group is None:
            got: Any = E.UNKNOWN_MEMBER_ID
        else:
            got = group.sync(
                body.member_id,
                body.generation_id,
                {a.member_id: bytes(a.assignment) for a in body.assignments},
            )
        if isinstance(got, int):
            code, assignment = got, b""
        else:
            code, assignment = await got
        return cls(
            version=version, throttle_time_ms=0, error_code=code, assignment=assignment,
            protocol_type=group.protocol_type if group else None, protocol_name=group.protocol if group else None,
        )  # fmt: skip

    async def heartbeat(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        group = self.coordinator.group(body.group_id, create=False)
        code = E.UNKNOWN_MEMBER_ID if group is None else group.heartbeat(body.member_id, body.generation_id)
        return self._response(12, version, throttle_time_ms=0, error_code=code)

    async def leave_group(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(13)
        group = self.coordinator.group(body.group_id, create=False)
        if version < 3:
            code = E.UNKNOWN_MEMBER_ID if group is None else group.leave(body.member_id)
            return cls(version=version, throttle_time_ms=0, error_code=code)
        members = []
        for m in body.members:
            member_id = m.member_id
            if not member_id and m.group_instance_id is not None and group is not None:
                member_id = group.static.get(m.group_instance_id, "")
            code = E.UNKNOWN_MEMBER_ID if group is None else group.leave(member_id)
            members.append(
                cls.MemberResponse(
                    member_id=m.member_id, group_instance_id=m.group_instance_id, error_code=code
                )
            )
        return cls(version=version, throttle_time_ms=0, error_code=0, members=members)

    def _known_groups(self) -> dict[str, Any]:
        """Groups with members, plus groups known only by their committed offsets (Empty)."""
        found: dict[str, Any] = dict(self.coordinator.groups)
        prefix = OFFSETS_CONSUMER_PREFIX
        for cfg in self.store.list_streams():
            for p in range(cfg.partitions):
                for c in self.store.consumers(cfg.name, p):
                    if c.startswith(prefix):
                        found.setdefault(c[len(prefix) :], None)
        return found

    async def list_groups(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(16)
        states = set(getattr(body, "states_filter", None) or []) if version >= 4 else set()
        groups = []
        for gid, g in self._known_groups().items():
            state = g.state if g is not None else "Empty"
            if states and state not in states:
                continue
            ptype = (g.protocol_type if g is not None else None) or "consumer"
            groups.append(cls.ListedGroup(group_id=gid, protocol_type=ptype, group_state=state))
        return cls(version=version, throttle_time_ms=0, error_code=0, groups=groups)

    async def describe_groups(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(15)
        D = cls.DescribedGroup
        M = D.DescribedGroupMember
        known = self._known_groups()
        out = []
        for gid in body.groups:
            g = known.get(gid)
            if g is None:
                state = "Empty" if gid in known else "Dead"
                out.append(
                    D(
                        error_code=0,
                        group_id=gid,
                        group_state=state,
                        protocol_type="",
                        protocol_data="",
                        members=[],
                    )
                )
                continue
            members = [
                M(member_id=m.member_id, group_instance_id=m.instance_id, client_id=m.client_id, client_host=m.client_host,
                  member_metadata=m.metadata_for(g.protocol or ""), member_assignment=m.assignment)
                for m in g.members.values()
            ]  # fmt: skip
            out.append(D(error_code=0, group_id=gid, group_state=g.state, protocol_type=g.protocol_type or "",
                         protocol_data=g.protocol or "", members=members))  # fmt: skip
        return cls(version=version, throttle_time_ms=0, groups=out)

    async def delete_groups(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(42)
        known = self._known_groups()
        results = []
        for gid in body.groups_names:
            g = known.get(gid)
            if gid not in known:
                code = E.GROUP_ID_NOT_FOUND
            elif g is not None and g.members:
                code = E.NON_EMPTY_GROUP
            else:
                code = E.NONE
                name_of = self._offsets_consumer(gid)
                for cfg in self.store.list_streams():
                    for p in range(cfg.partitions):
                        self.store.delete_consumer(cfg.name, name_of, p)
                self.coordinator.groups.pop(gid, None)
            results.append(cls.DeletableGroupResult(group_id=gid, error_code=code))
        return cls(version=version, throttle_time_ms=0, results=results)

    # -- admin -----------------------------------------------------------------------------------

    async def create_topics(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(19)
        R = cls.CreatableTopicResult
        out = []
        for t in body.topics:
            name = t.name
            partitions = self.settings.default_partitions if t.num_partitions == -1 else t.num_partitions
            configs = {c.name: c.value for c in t.configs or [] if c.value is not None}
            code, message = E.NONE, None
            if not is_valid_topic_name(name):
                code, message = (
                    E.INVALID_TOPIC_EXCEPTION,
                    "topic names are [A-Za-z0-9._-], at most 249 characters",
                )
            elif not conn.may_publish(name):
                code = E.TOPIC_AUTHORIZATION_FAILED
            elif self.store.has_stream(name):
                code, message = E.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists"
            elif not 1 <= partitions <= 1024:
                code, message = E.INVALID_PARTITIONS, "partitions must be between 1 and 1024"
            elif t.replication_factor not in (-1, 1):
                code, message = E.INVALID_REPLICATION_FACTOR, "this cluster has one broker"
            elif any(k not in _TOPIC_CONFIGS for k in configs):
                code, message = E.INVALID_CONFIG, "unsupported topic config"
            elif not body.validate_only:
                code, _cfg = self._create(name, partitions, configs)
            cfg = self.store.stream_config(name) if code == E.NONE and self.store.has_stream(name) else None
            out.append(R(name=name, topic_id=topic_id(cfg) if cfg is not None else None, error_code=code,
                         error_message=message, num_partitions=partitions if code == E.NONE else -1,
                         replication_factor=1 if code == E.NONE else -1, configs=None))  # fmt: skip
        return cls(version=version, throttle_time_ms=0, topics=out)

    async def delete_topics(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(20)
        if version >= 6:
            wanted = [(t.name, t.topic_id) for t in body.topics]
        else:
            wanted = [(n, None) for n in body.topic_names]
        out = []
        for name, tid in wanted:
            if name is None and tid is not None:
                name = next((c.name for c in self.store.list_streams() if topic_id(c) == tid), None)
            code = E.NONE
            if name is None or not self.store.has_stream(name):
                code = E.UNKNOWN_TOPIC_OR_PARTITION if tid is None else E.UNKNOWN_TOPIC_ID
            elif not conn.may_publish(name):
                code = E.TOPIC_AUTHORIZATION_FAILED
            else:
                tid = topic_id(self.store.stream_config(name))
                self.store.delete_stream(name)
                self._ingests.pop(name, None)
            out.append(cls.DeletableTopicResult(name=name, topic_id=tid, error_code=code, error_message=None))
        return cls(version=version, throttle_time_ms=0, responses=out)

    async def create_partitions(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(37)
        out = []
        for t in body.topics:
            code, message = E.NONE, None
            if not self.store.has_stream(t.name):
                code = E.UNKNOWN_TOPIC_OR_PARTITION
            elif not conn.may_publish(t.name):
                code = E.TOPIC_AUTHORIZATION_FAILED
            else:
                cfg = self.store.stream_config(t.name)
                if t.count <= cfg.partitions:
                    code, message = E.INVALID_PARTITIONS, f"topic has {cfg.partitions} partitions already"
                elif not body.validate_only:
                    try:
                        self.store.update_stream({**cfg.model_dump(), "partitions": t.count})
                    except (InvalidStreamConfig, ValueError) as exc:
                        code, message = E.INVALID_PARTITIONS, str(exc)
            out.append(cls.CreatePartitionsTopicResult(name=t.name, error_code=code, error_message=message))
        return cls(version=version, throttle_time_ms=0, results=out)

    async def describe_configs(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        cls = response_class(32)
        R = cls.DescribeConfigsResult
        C = R.DescribeConfigsResourceResult
        out = []
        for res in body.resources:
            if res.resource_type == 2:  # topic
                if not self.store.has_stream(res.resource_name):
                    out.append(R(error_code=E.UNKNOWN_TOPIC_OR_PARTITION, error_message=None, resource_type=2,
                                 resource_name=res.resource_name, configs=[]))  # fmt: skip
                    continue
                values = self._topic_configs(self.store.stream_config(res.resource_name))
            elif res.resource_type == 4:  # broker
                values = {
                    "message.max.bytes": (str(self.store.settings.max_record_bytes), _STATIC_BROKER_CONFIG),
                    "socket.request.max.bytes": (str(self.settings.max_request_bytes), _STATIC_BROKER_CONFIG),
                    "auto.create.topics.enable": (
                        str(self.settings.auto_create_topics).lower(),
                        _STATIC_BROKER_CONFIG,
                    ),
                    "num.partitions": (str(self.settings.default_partitions), _STATIC_BROKER_CONFIG),
                }
            else:
                out.append(R(error_code=E.INVALID_REQUEST, error_message="unsupported resource type",
                             resource_type=res.resource_type, resource_name=res.resource_name, configs=[]))  # fmt: skip
                continue
            keys = res.configuration_keys
            configs = [
                C(name=k, value=v, read_only=source != _DYNAMIC_TOPIC_CONFIG and res.resource_type == 4,
                  config_source=source, is_default=source == _DEFAULT_CONFIG, is_sensitive=False, synonyms=[])
                for k, (v, source) in values.items()
                if keys is None or k in keys
            ]  # fmt: skip
            out.append(R(error_code=0, error_message=None, resource_type=res.resource_type,
                         resource_name=res.resource_name, configs=configs))  # fmt: skip
        return cls(version=version, throttle_time_ms=0, results=out)

    def _topic_configs(self, cfg: Any) -> dict[str, tuple[str, int]]:
        """A topic's configs from its stream definition: (value, config source)."""
        set_, default = _DYNAMIC_TOPIC_CONFIG, _DEFAULT_CONFIG
        return {
            "retention.ms": (str(int(cfg.max_age_s * 1000)), set_) if cfg.max_age_s else ("-1", default),
            "retention.bytes": (str(cfg.max_bytes), set_) if cfg.max_bytes else ("-1", default),
            "cleanup.policy": ("compact", set_) if cfg.compact else ("delete", default),
            "message.timestamp.type": ("LogAppendTime", _STATIC_BROKER_CONFIG),
            "max.message.bytes": (str(self.store.settings.max_record_bytes), _STATIC_BROKER_CONFIG),
        }

    async def init_producer_id(self, conn: KafkaConnection, body: Any, version: int) -> Any:
        if body.transactional_id is not None:
            return self._response(22, version, throttle_time_ms=0, error_code=TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                                  producer_id=-1, producer_epoch=-1)  # fmt: skip
        pid, epoch = self.producers.init_producer(
            body.producer_id if version >= 3 else -1, body.producer_epoch if version >= 3 else -1
        )
        return self._response(
            22, version, throttle_time_ms=0, error_code=0, producer_id=pid, producer_epoch=epoch
        )


_DYNAMIC_TOPIC_CONFIG, _STATIC_BROKER_CONFIG, _DEFAULT_CONFIG = 1, 4, 5  # DescribeConfigs config sources
_TOPIC_CONFIGS = {
    "retention.ms",
    "retention.bytes",
    "cleanup.policy",
    "message.timestamp.type",
    "max.message.bytes",
}
