"""MQTT state kept in the store, so retained messages and persistent sessions survive a restart.

Three streams: retained messages (compacted, key = topic, an empty payload clears), persistent
sessions (compacted, key = client id, JSON with the subscriptions) and the QoS 1/2 messages owed
to persistent sessions (one record per message, tombstoned once the client acknowledged it).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from robustmq.bridges.mqtt import packets as P
from robustmq.bridges.mqtt.limits import SESSION_EXPIRY_NEVER
from robustmq.bridges.mqtt.message import OutMessage, headers_to_properties, properties_to_headers
from robustmq.bridges.mqtt.retained import RetainedMessage
from robustmq.headers import decode_headers, encode_headers

if TYPE_CHECKING:
    from robustmq.bridges.mqtt.listener import MqttServer
    from robustmq.bridges.mqtt.session import Session

log = logging.getLogger("robustmq.mqtt")

RETAINED_STREAM = "mqtt-retained"
SESSIONS_STREAM = "mqtt-sessions"
OFFLINE_STREAM = "mqtt-offline"
QOS_HEADER = "mqtt-qos"
TOPIC_HEADER = "mqtt-topic"
CLIENT_HEADER = "mqtt-client-id"
RETAIN_HEADER = "mqtt-retain"
READ_BATCH_RECORDS = 1000


def _meta_headers(
    meta: list[tuple[str, str]], props: P.Properties | None, expiry_at: float | None
) -> bytes | None:
    items = list(meta)
    if props or expiry_at is not None:
        merged = dict(props) if props else {}
        merged.pop(P.RESPONSE_TOPIC, None)
        block = properties_to_headers(merged or None)
        items.extend(decode_headers(block))
        if expiry_at is not None:
            items.append(("mqtt-message-expiry-at", str(int(expiry_at * 1000))))
        if props and P.RESPONSE_TOPIC in props:
            items.append(("mqtt-response-topic", props[P.RESPONSE_TOPIC]))
    return encode_headers(items)


def _split_meta(
    headers: bytes | None, names: tuple[str, ...]
) -> tuple[dict[str, str], P.Properties | None, float | None]:
    meta: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    response_topic = None
    for k, v in decode_headers(headers):
        if k in names:
            meta[k] = v
        elif k == "mqtt-response-topic":
            response_topic = v
        else:
            rest.append((k, v))
    props, expiry_at = headers_to_properties(encode_headers(rest))
    if response_topic is not None:
        props = dict(props) if props else {}
        props[P.RESPONSE_TOPIC] = response_topic
    return meta, props, expiry_at


class MqttPersistence:
    """Journals retained messages, persistent sessions and their owed messages in the store."""

    def __init__(self, server: MqttServer, store: Any) -> None:
        self.server = server
        self.store = store

    async def load(self) -> None:
        """Create the streams on first start; rebuild retained messages and sessions."""
        store = self.store
        for name, compact, kind in (
            (RETAINED_STREAM, True, "mqtt_retained"),
            (SESSIONS_STREAM, True, "mqtt_session"),
            (OFFLINE_STREAM, False, "mqtt_offline"),
        ):
            store.create_stream({"name": name, "compact": compact, "kind": kind}, exist_ok=True)
        self._load_retained()
        self._load_sessions()
        self._load_offline()

    async def close(self) -> None:
        await self.store.flush()

    # -- retained ----------------------------------------------------------------------------------

    def _load_retained(self) -> None:
        for key in self.store.keys(RETAINED_STREAM):
            rec = self.store.latest_by_key(RETAINED_STREAM, key)
            if rec is None or not rec.payload:
                continue
            meta, props, expiry_at = _split_meta(rec.headers, (QOS_HEADER,))
            topic = key.decode()
            self.server.retained.set(
                RetainedMessage(topic, rec.payload, int(meta.get(QOS_HEADER, "0")), props, expiry_at)
            )

    def retained_changed(self, message: RetainedMessage) -> None:
        ttl_ms = None
        if message.expiry_at is not None:
            ttl_ms = max(1, int((message.expiry_at - time.time()) * 1000))
        headers = _meta_headers([(QOS_HEADER, str(message.qos))], message.properties, message.expiry_at)
        self.store.append(RETAINED_STREAM, message.payload, key=message.topic, headers=headers, ttl_ms=ttl_ms)

    # -- sessions ----------------------------------------------------------------------------------

    def _session_record(self, session: Session) -> bytes:
        subs = []
        for topic_filter, group in session.subscriptions.items():
            s = group[0]
            subs.append({
                "f": topic_filter, "q": s.qos, "nl": s.no_local, "rap": s.retain_as_published, "id": s.sub_id,
            })  # fmt: skip
        return orjson.dumps({
            "expiry": session.expiry_interval_s, "v5": session.v5, "subs": subs,
            "seen_ms": int(time.time() * 1000), "online": session.connection is not None, "user": session.user,
        })  # fmt: skip

    def subscriptions_changed(self, session: Session) -> None:
        if session.persistent and not session.destroyed:
            self.store.append(SESSIONS_STREAM, self._session_record(session), key=session.client_id)

    def session_detached(self, session: Session) -> None:
        if session.persistent and not session.destroyed:
            self.store.append(SESSIONS_STREAM, self._session_record(session), key=session.client_id)

    def session_ended(self, session: Session) -> None:
        """Forget the session and tombstone what it was owed."""
        if self.store.latest_by_key(SESSIONS_STREAM, session.client_id) is not None:
            self.store.append(SESSIONS_STREAM, b"", key=session.client_id)
        for offset in session.stored_offsets():
            self.store.delete(OFFLINE_STREAM, offset)

    def _load_sessions(self) -> None:
        from robustmq.bridges.mqtt.session import MqttSubscription, Session
        from robustmq.bridges.mqtt.topics import filter_to_subjects, split_shared, starts_with_wildcard

        now = time.time()
        server = self.server
        for key in self.store.keys(SESSIONS_STREAM):
            rec = self.store.latest_by_key(SESSIONS_STREAM, key)
            if rec is None or not rec.payload:
                continue
            try:
                data = orjson.loads(rec.payload)
            except orjson.JSONDecodeError:
                continue
            client_id = key.decode()
            expiry = int(data.get("expiry", 0))
            seen = data.get("seen_ms", 0) / 1000 if not data.get("online") else now
            left = SESSION_EXPIRY_NEVER if expiry == SESSION_EXPIRY_NEVER else expiry - (now - seen)
            if expiry == 0 or left <= 0:
                self.store.append(SESSIONS_STREAM, b"", key=client_id)
                continue
            session = Session(server, client_id)
            session.expiry_interval_s = expiry
            session.v5 = bool(data.get("v5"))
            session.user = data.get("user")
            principal = server.authenticator.principal(session.user) if session.user else None
            perms = principal.permissions if principal is not None else None
            for s in data.get("subs", []):
                request = P.SubscriptionRequest(s["f"], s["q"], s.get("nl", False), s.get("rap", False))
                try:
                    group, topic_filter = split_shared(s["f"])
                except ValueError:
                    continue
                queue = f"$mqtt.share.{group}.{s['f']}" if group is not None else None
                subjects = filter_to_subjects(topic_filter)
                if perms is not None:
                    if not perms.may_subscribe(subjects[0]):
                        continue  # the user's permissions changed since: the subscription is gone
                    subjects = [subjects[0], *(x for x in subjects[1:] if perms.may_subscribe(x))]
                if not server.may_subscribe_agent_subject(session.user, subjects[0]):
                    continue  # an agent of another user claimed the subject since: gone too
                rule = perms.delivery_filter(subjects[0]) if perms is not None else None
                subs = [
                    MqttSubscription(
                        sub,
                        session,
                        s["f"],
                        request,
                        queue,
                        s.get("id"),
                        rule,
                        starts_with_wildcard(topic_filter),
                    )  # fmt: skip
                    for sub in subjects
                ]
                session.add_subscription(s["f"], subs)
            server.sessions[client_id] = session
            session.start_expiry_timer(left)

    # -- messages owed to persistent sessions --------------------------------------------------------

    def message_queued(self, session: Session, msg: OutMessage) -> Any:
        """Store one QoS 1/2 message for a persistent session; returns the store's ack (awaitable)."""
        meta = [(CLIENT_HEADER, session.client_id), (TOPIC_HEADER, msg.topic), (QOS_HEADER, str(msg.qos))]
        if msg.retain:
            meta.append((RETAIN_HEADER, "1"))
        if msg.sub_ids:
            meta.append(("mqtt-subscription-ids", ",".join(map(str, msg.sub_ids))))
        headers = _meta_headers(meta, msg.properties, msg.expiry_at)
        ack = self.store.append(OFFLINE_STREAM, msg.payload, headers=headers)
        msg.store_offset = ack.offset
        return ack

    def message_done(self, msg: OutMessage) -> None:
        if msg.store_offset is not None:
            self.store.delete(OFFLINE_STREAM, msg.store_offset)
            msg.store_offset = None

    def _load_offline(self) -> None:
        store = self.store
        sessions = self.server.sessions
        offset = store.first_offset(OFFLINE_STREAM)
        names = (CLIENT_HEADER, TOPIC_HEADER, QOS_HEADER, RETAIN_HEADER, "mqtt-subscription-ids")
        while True:
            records = store.read(OFFLINE_STREAM, offset, READ_BATCH_RECORDS)
            if not records:
                break
            for rec in records:
                meta, props, expiry_at = _split_meta(rec.headers, names)
                session = sessions.get(meta.get(CLIENT_HEADER, ""))
                if session is None or (expiry_at is not None and expiry_at <= time.time()):
                    store.delete(OFFLINE_STREAM, rec.offset)
                    continue
                ids = meta.get("mqtt-subscription-ids")
                msg = OutMessage(
                    meta.get(TOPIC_HEADER, ""), rec.payload, int(meta.get(QOS_HEADER, "1")),
                    RETAIN_HEADER in meta, props if session.v5 else None, expiry_at,
                    [int(i) for i in ids.split(",")] if ids else None,
                )  # fmt: skip
                msg.store_offset = rec.offset
                session.queue.append(msg)
            offset = records[-1].offset + 1
