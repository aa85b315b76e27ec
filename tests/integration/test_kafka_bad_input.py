"""Hostile and broken Kafka input on raw sockets: each bad connection gets Kafka's error code or is
closed, and a well-behaved client on another connection carries on; SASL failures on the wire."""

from __future__ import annotations

import socket
import struct
import uuid

import pytest
from brokerproc import start_broker
from kafka import KafkaConsumer, KafkaProducer
from kafka.protocol.metadata.api_versions import ApiVersionsRequest, ApiVersionsResponse
from kafka.protocol.metadata.metadata import MetadataRequest
from kafka.protocol.producer.produce import ProduceRequest, ProduceResponse
from kafka.protocol.sasl import SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest
from kafka.record.default_records import DefaultRecordBatchBuilder

pytestmark = pytest.mark.timeout(60)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def kbroker(tmp_path_factory):
    b = start_broker(tmp_path_factory.mktemp("kbad"), "--http-port", "off")
    yield b
    b.stop()


class RawKafka:
    """A bare socket speaking framed requests built with kafka.protocol."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.correlation = 0

    def send(self, request, version: int) -> int:
        self.correlation += 1
        req = request.__class__(version=version, **{k: getattr(request, k) for k in request.fields})
        req.with_header(correlation_id=self.correlation, client_id="raw")
        self.sock.sendall(bytes(req.encode(header=True, framed=True)))
        return self.correlation

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_frame(self) -> bytes:
        size = struct.unpack(">i", self._exactly(4))[0]
        return self._exactly(size)

    def _exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def is_closed(self) -> bool:
        try:
            self.sock.settimeout(5)
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def healthy(kbroker) -> None:
    """A real client still produces and consumes."""
    topic = unique("alive")
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap)
    assert p.send(topic, b"ok").get(10).offset == 0
    p.close()
    c = KafkaConsumer(topic, bootstrap_servers=kbroker.kafka_bootstrap, auto_offset_reset="earliest",
                      consumer_timeout_ms=10000)  # fmt: skip
    assert next(iter(c)).value == b"ok"
    c.close()


def test_api_versions_of_a_newer_version_answers_unsupported_version_with_the_table(kbroker) -> None:
    raw = RawKafka(kbroker.ports["kafka"])
    raw.send(ApiVersionsRequest(version=4, client_software_name="raw", client_software_version="1"), 4)
    frame = raw.recv_frame()
    resp = ApiVersionsResponse.decode(frame, version=4, header=True)
    assert resp.error_code == 35
    assert {k.api_key: k.max_version for k in resp.api_keys}[1] == 12  # Fetch, as Kafka 3.0
    raw.send(ApiVersionsRequest(version=3, client_software_name="raw", client_software_version="1"), 3)
    resp = ApiVersionsResponse.decode(raw.recv_frame(), version=3, header=True)
    assert resp.error_code == 0
    raw.close()


@pytest.mark.parametrize(
    "data",
    [
        struct.pack(">i", 2) + b"\x00\x03",  # shorter than a header
        struct.pack(">ihhi", 8, 999, 0, 1),  # unknown api key
        struct.pack(">ihhi", 8, 0, 99, 1),  # unknown version of Produce
        struct.pack(">ihhi", 12, 3, 12, 1) + b"\xff\xff\xff\xff",  # Metadata v12 cut short
        struct.pack(">i", 200 * 1024 * 1024),  # over max_request_bytes (100 MiB)
        struct.pack(">i", -5),  # negative size
    ],
    ids=["short-header", "unknown-key", "unknown-version", "truncated-body", "oversize", "negative-size"],
)
def test_bad_frames_close_the_connection_and_others_carry_on(kbroker, data) -> None:
    raw = RawKafka(kbroker.ports["kafka"])
    raw.send_raw(data)
    assert raw.is_closed()
    raw.close()
    healthy(kbroker)


def test_a_truncated_frame_waits_and_the_broker_serves_others_meanwhile(kbroker) -> None:
    raw = RawKafka(kbroker.ports["kafka"])
    raw.send_raw(struct.pack(">i", 1000) + b"\x00\x03\x00\x01")  # promises 1000 bytes, sends 4
    healthy(kbroker)
    raw.close()


def _produce_request(topic: str, records: bytes) -> ProduceRequest:
    T = ProduceRequest.TopicProduceData
    P = T.PartitionProduceData
    return ProduceRequest(version=9, transactional_id=None, acks=-1, timeout_ms=5000,
                          topic_data=[T(name=topic, partition_data=[P(index=0, records=records)])])  # fmt: skip


def _batch(value: bytes, producer_id: int = -1, sequence: int = -1) -> bytearray:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=producer_id,
                                  producer_epoch=0 if producer_id >= 0 else -1, base_sequence=sequence,
                                  batch_size=1 << 20)  # fmt: skip
    b.append(0, None, None, value, [])
    return b.build()


def test_corrupt_batch_crc_gets_corrupt_message_and_nothing_is_stored(kbroker) -> None:
    topic = unique("crc")
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap)
    p.send(topic, b"good").get(10)
    p.close()
    batch = _batch(b"payload-to-corrupt")
    batch[-3] ^= 0xFF  # flip bytes of the last record: the CRC no longer matches
    raw = RawKafka(kbroker.ports["kafka"])
    raw.send(_produce_request(topic, bytes(batch)), 9)
    resp = ProduceResponse.decode(raw.recv_frame(), version=9, header=True)
    part = resp.responses[0].partition_responses[0]
    assert part.error_code == 2  # CORRUPT_MESSAGE
    raw.send(_produce_request(topic, bytes(_batch(b"fine"))), 9)  # the connection is still usable
    resp = ProduceResponse.decode(raw.recv_frame(), version=9, header=True)
    assert resp.responses[0].partition_responses[0].error_code == 0
    assert resp.responses[0].partition_responses[0].base_offset == 1  # the corrupt batch took no offset
    raw.close()


def test_a_retried_idempotent_batch_is_answered_with_its_first_offset_and_stored_once(kbroker) -> None:
    from kafka.protocol.producer.transaction import InitProducerIdRequest, InitProducerIdResponse

    topic = unique("idem")
    raw = RawKafka(kbroker.ports["kafka"])
    raw.send(InitProducerIdRequest(version=4, transactional_id=None, transaction_timeout_ms=60000,
                                   producer_id=-1, producer_epoch=-1), 4)  # fmt: skip
    init = InitProducerIdResponse.decode(raw.recv_frame(), version=4, header=True)
    assert init.error_code == 0 and init.producer_id >= 0

    def produce(value: bytes, sequence: int):
        raw.send(_produce_request(topic, bytes(_batch(value, init.producer_id, sequence))), 9)
        return (
            ProduceResponse.decode(raw.recv_frame(), version=9, header=True)
            .responses[0]
            .partition_responses[0]
        )

    first = produce(b"once", 0)
    again = produce(b"once", 0)  # the client retried: same producer, epoch and sequence
    assert (first.error_code, again.error_code) == (0, 0)
    assert again.base_offset == first.base_offset == 0
    gap = produce(b"skipped-ahead", 5)
    assert gap.error_code == 45  # OUT_OF_ORDER_SEQUENCE_NUMBER
    nxt = produce(b"next", 1)
    assert (nxt.error_code, nxt.base_offset) == (0, 1)
    raw.close()
    c = KafkaConsumer(topic, bootstrap_servers=kbroker.kafka_bootstrap, auto_offset_reset="earliest",
                      consumer_timeout_ms=3000)  # fmt: skip
    assert [m.value for m in c] == [b"once", b"next"]
    c.close()


def test_magic_v1_message_set_is_refused_with_unsupported_for_message_format(kbroker) -> None:
    topic = unique("v1")
    legacy = struct.pack(">qiib", 0, 20, 0, 1) + b"\x00" * 16  # a MessageSet v1 entry's prefix
    raw = RawKafka(kbroker.ports["kafka"])
    raw.send(_produce_request(topic, legacy), 9)
    resp = ProduceResponse.decode(raw.recv_frame(), version=9, header=True)
    assert resp.responses[0].partition_responses[0].error_code == 43
    raw.close()


SASL_CONFIG = """
[[auth.users]]
user = "pipeline"
password = "p4ss"
"""


@pytest.fixture(scope="module")
def sasl_port(tmp_path_factory):
    d = tmp_path_factory.mktemp("kbadsasl")
    (d / "robustmq.toml").write_text(SASL_CONFIG)
    b = start_broker(d / "data", "--http-port", "off", "--config", str(d / "robustmq.toml"))
    yield b.ports["kafka"]
    b.stop()


def test_request_before_sasl_closes_the_connection(sasl_port) -> None:
    raw = RawKafka(sasl_port)
    raw.send(MetadataRequest(version=9, topics=None, allow_auto_topic_creation=False), 9)
    assert raw.is_closed()
    raw.close()


def test_wrong_password_gets_sasl_authentication_failed_then_close(sasl_port) -> None:
    raw = RawKafka(sasl_port)
    raw.send(SaslHandshakeRequest(version=1, mechanism="PLAIN"), 1)
    raw.recv_frame()
    raw.send(SaslAuthenticateRequest(version=2, auth_bytes=b"\x00pipeline\x00wrong"), 2)
    resp = SaslAuthenticateResponse.decode(raw.recv_frame(), version=2, header=True)
    assert resp.error_code == 58
    assert raw.is_closed()
    raw.close()
    ok = RawKafka(sasl_port)
    ok.send(SaslHandshakeRequest(version=1, mechanism="PLAIN"), 1)
    ok.recv_frame()
    ok.send(SaslAuthenticateRequest(version=2, auth_bytes=b"\x00pipeline\x00p4ss"), 2)
    assert SaslAuthenticateResponse.decode(ok.recv_frame(), version=2, header=True).error_code == 0
    ok.close()
