"""Durable AMQP state in the store: definitions in one compacted stream, messages in one stream per queue.

Definitions (durable exchanges, queues and bindings) are records keyed ``e/<name>``, ``q/<name>``
and ``b/<identity>`` holding JSON; an empty payload deletes one. A durable queue is a stream
(``kind = amqp_queue``) with one consumer, ``amqp``: persistent messages are appended, acks go to
the consumer, and at start-up every record at or above its floor that is not acked is put back in
the queue, flagged redelivered when it had been handed out before (``Consumer.delivered_below``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from typing import TYPE_CHECKING, Any

import orjson

from robustmq.bridges.amqp.codec import decode_properties, short_string
from robustmq.bridges.amqp.limits import NEVER_MS
from robustmq.bridges.amqp.queues import AmqpQueue, Content, QueuedMessage, now_ms
from robustmq.bridges.amqp.routing import Binding, Exchange
from robustmq.headers import decode_headers, encode_headers

if TYPE_CHECKING:
    from robustmq.store import Store
    from robustmq.store.consumers import Consumer

log = logging.getLogger("robustmq.amqp")

DEFINITIONS_STREAM = "amqp-definitions"
QUEUE_STREAM_PREFIX = "amqp-queue-"
CONSUMER_NAME = "amqp"
ENVELOPE_HEADER = "amqp-envelope"
READ_BATCH_RECORDS = 1000


def queue_stream_name(queue: str) -> str:
    """A stream name for any queue name (queue names may hold characters stream names may not)."""
    digest = hashlib.sha1(queue.encode()).hexdigest()[:16]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in queue)[:80]
    return f"{QUEUE_STREAM_PREFIX}{safe}-{digest}"


def _jsonable(args: dict[str, Any]) -> dict[str, Any]:
    """Arguments tables as JSON (bytes and decimals become text: only simple values are expected)."""
    out: dict[str, Any] = {}
    for k, v in args.items():
        if isinstance(v, bytes | bytearray):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, dict):
            v = _jsonable(v)
        elif not isinstance(v, str | int | float | bool | list) and v is not None:
            v = str(v)
        out[k] = v
    return out


_last_envelope: tuple[str, str, bytes, bytes | None] = ("", "", b"\xff", None)


def _envelope(content: Content) -> bytes | None:
    """The header that keeps a stored message's exchange, routing key and properties (the last
    one is reused: runs of messages usually share all three)."""
    global _last_envelope
    ex, rk, raw_props, block = _last_envelope
    if content.raw_properties == raw_props and content.routing_key == rk and content.exchange == ex:
        return block
    raw = short_string(content.exchange) + short_string(content.routing_key) + content.raw_properties
    block = encode_headers([(ENVELOPE_HEADER, base64.b64encode(raw).decode())])
    _last_envelope = (content.exchange, content.routing_key, content.raw_properties, block)
    return block


def _open_envelope(headers: bytes | None, body: bytes) -> Content | None:
    for k, v in decode_headers(headers):
        if k == ENVELOPE_HEADER:
            raw = base64.b64decode(v)
            n = raw[0]
            exchange = raw[1 : 1 + n].decode()
            pos = 1 + n
            m = raw[pos]
            routing_key = raw[pos + 1 : pos + 1 + m].decode()
            props_raw = raw[pos + 1 + m :]
            return Content(exchange, routing_key, decode_properties(props_raw), props_raw, body)
    return None


class QueueLog:
    """The stored copy of one durable queue's persistent messages."""

    def __init__(self, store: Store, stream: str, consumer: Consumer) -> None:
        self.store = store
        self.stream = stream
        self.consumer = consumer
        self._delivered = consumer.delivered_below - 1
        self._note_scheduled = False

    def append(self, message: QueuedMessage) -> Any:
        ttl_ms = None
        if message.expires_at_ms:
            ttl_ms = max(1, message.expires_at_ms - now_ms())
        ack = self.store.append(
            self.stream, message.content.body, headers=_envelope(message.content), ttl_ms=ttl_ms
        )
        message.offset = ack.offset
        return ack

    def ack(self, offsets: list[int]) -> None:
        if not self.consumer.deleted:
            self.consumer.ack_many(offsets)

    def note_delivered(self, offset: int) -> None:
        """Journalled once per loop tick, however many deliveries the tick made."""
        if offset > self._delivered:
            self._delivered = offset
            if not self._note_scheduled:
                self._note_scheduled = True
                asyncio.get_running_loop().call_soon(self._write_note)

    def _write_note(self) -> None:
        self._note_scheduled = False
        if not self.consumer.deleted:
            self.consumer.note_delivered(self._delivered)

    def drop(self) -> None:
        if self.store.has_stream(self.stream):
            self.store.delete_stream(self.stream)


class AmqpPersistence:
    """Loads and saves durable definitions and opens the streams of durable queues."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def load(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """The saved exchanges, queues and bindings (each a JSON dict), creating the stream first."""
        store = self.store
        store.create_stream(
            {"name": DEFINITIONS_STREAM, "compact": True, "kind": "amqp_definitions"}, exist_ok=True
        )
        exchanges, queues, bindings = [], [], []
        for key in store.keys(DEFINITIONS_STREAM):
            rec = store.latest_by_key(DEFINITIONS_STREAM, key)
            if rec is None or not rec.payload:
                continue
            try:
                data = orjson.loads(rec.payload)
            except orjson.JSONDecodeError:
                continue
            kind = key[:2]
            if kind == b"e/":
                exchanges.append(data)
            elif kind == b"q/":
                queues.append(data)
            elif kind == b"b/":
                bindings.append(data)
        return exchanges, queues, bindings

    async def close(self) -> None:
        await self.store.flush()

    # -- definitions -------------------------------------------------------------------------------

    def _put(self, key: str, data: dict[str, Any] | None) -> Any:
        payload = b"" if data is None else orjson.dumps(data)
        return self.store.append(DEFINITIONS_STREAM, payload, key=key)

    def exchange_saved(self, ex: Exchange) -> Any:
        return self._put(f"e/{ex.name}", {
            "name": ex.name, "type": ex.type, "auto_delete": ex.auto_delete, "internal": ex.internal,
            "arguments": _jsonable(ex.arguments),
        })  # fmt: skip

    def exchange_deleted(self, name: str) -> Any:
        return self._put(f"e/{name}", None)

    def queue_saved(self, q: AmqpQueue) -> Any:
        return self._put(f"q/{q.name}", {
            "name": q.name, "auto_delete": q.auto_delete, "arguments": _jsonable(q.arguments),
            "stream": queue_stream_name(q.name),
        })  # fmt: skip

    def queue_deleted(self, name: str) -> Any:
        return self._put(f"q/{name}", None)

    @staticmethod
    def _binding_key(b: Binding) -> str:
        ident = orjson.dumps([b.source, b.destination[0], b.destination[1], b.key, _jsonable(b.arguments)])
        return "b/" + hashlib.sha1(ident).hexdigest()

    def binding_saved(self, b: Binding) -> Any:
        return self._put(self._binding_key(b), {
            "source": b.source, "kind": b.destination[0], "destination": b.destination[1], "key": b.key,
            "arguments": _jsonable(b.arguments),
        })  # fmt: skip

    def binding_deleted(self, b: Binding) -> Any:
        return self._put(self._binding_key(b), None)

    # -- queue messages ----------------------------------------------------------------------------

    def open_queue(self, q: AmqpQueue) -> QueueLog:
        """The stream and consumer of a durable queue (created on first use)."""
        stream = queue_stream_name(q.name)
        self.store.create_stream(
            {
                "name": stream,
                "kind": "amqp_queue",
                "drop_consumed": True,
                "metadata": {"queue": q.name[:200]},
            },
            exist_ok=True,
        )
        consumer = self.store.consumer(stream, CONSUMER_NAME, config={"ack_wait_ms": NEVER_MS})
        q.log = QueueLog(self.store, stream, consumer)
        return q.log

    def recover_messages(self, q: AmqpQueue) -> int:
        """Put a durable queue's stored, unacknowledged messages back into it, in order."""
        qlog = q.log
        assert qlog is not None
        store = self.store
        consumer = qlog.consumer
        offset = max(consumer.floor, store.first_offset(qlog.stream))
        delivered_below = consumer.delivered_below
        count = 0
        now = now_ms()
        while True:
            records = store.read(qlog.stream, offset, READ_BATCH_RECORDS)
            if not records:
                break
            for rec in records:
                if rec.offset in consumer.acked:
                    continue
                content = _open_envelope(rec.headers, rec.payload)
                if content is None:
                    continue
                msg = QueuedMessage(content, rec.expires_at_ms or 0)
                if q.max_priority:
                    msg.priority = min(int(content.properties.priority or 0), q.max_priority)
                msg.offset = rec.offset
                msg.redelivered = rec.offset < delivered_below
                if msg.expires_at_ms and msg.expires_at_ms <= now:
                    qlog.ack([rec.offset])
                    continue
                q.restore(msg)
                count += 1
            offset = records[-1].offset + 1
        return count
