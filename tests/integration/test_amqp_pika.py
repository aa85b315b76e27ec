"""AMQP 0-9-1 with pika (blocking) against a real broker: RabbitMQ's semantics for exchanges, queues,
consumers, acknowledgements, confirms, transactions and queue arguments."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pika
import pytest
from brokerproc import BrokerProcess, start_broker
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker, ProbableAuthenticationError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    b = start_broker(tmp_path_factory.mktemp("amqp") / "data", "--http-port", "off")
    yield b
    b.stop()


def _connect(broker: BrokerProcess, user: str = "guest", password: str = "guest") -> pika.BlockingConnection:
    params = pika.ConnectionParameters(
        "127.0.0.1", broker.ports["amqp"], credentials=pika.PlainCredentials(user, password),
        connection_attempts=1,
    )  # fmt: skip
    return pika.BlockingConnection(params)


@pytest.fixture
def conn(broker: BrokerProcess) -> Iterator[pika.BlockingConnection]:
    c = _connect(broker)
    yield c
    if c.is_open:
        c.close()


def _wait(conn: pika.BlockingConnection, done, timeout: float = 5.0) -> None:
    """Process events until ``done()`` holds (the machine may be busy: no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert done()


def _gone(conn: pika.BlockingConnection, queue: str, timeout: float = 5.0) -> bool:
    """Poll until a passive declare of ``queue`` says 404."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn.channel().queue_declare(queue, passive=True)
        except ChannelClosedByBroker as err:
            return err.reply_code == 404
        time.sleep(0.05)
    return False


def _name() -> str:
    return "t-" + uuid.uuid4().hex[:10]


def _drain(ch, queue: str, n: int, timeout: float = 3.0) -> list[tuple]:
    out = []
    for method, props, body in ch.consume(queue, inactivity_timeout=timeout):
        if method is None:
            break
        out.append((method, props, body))
        if len(out) >= n:
            break
    ch.cancel()
    return out


def test_default_exchange_routes_by_queue_name_and_get_returns_properties(conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare(_name()).method.queue
    props = pika.BasicProperties(
        content_type="application/json", headers={"k": "v", "n": 7}, delivery_mode=2, correlation_id="c1",
        message_id="m1", reply_to="r", priority=1, app_id="app", type="t", user_id="guest",
    )  # fmt: skip
    ch.basic_publish("", q, b'{"x":1}', props)
    method, got, body = ch.basic_get(q, auto_ack=True)
    assert body == b'{"x":1}' and method.routing_key == q and method.exchange == ""
    assert got.headers == {"k": "v", "n": 7}
    assert (got.content_type, got.correlation_id, got.message_id, got.reply_to) == (
        "application/json",
        "c1",
        "m1",
        "r",
    )
    assert (got.priority, got.app_id, got.type, got.delivery_mode) == (1, "app", "t", 2)
    assert ch.basic_get(q) == (None, None, None)


def test_server_named_exclusive_queue_and_declare_ok_counts(conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    assert q.startswith("amq.gen-")
    ch.basic_publish("", q, b"1")
    ok = ch.queue_declare(q, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (1, 0)


def test_direct_fanout_topic_and_headers_exchanges(conn) -> None:
    ch = conn.channel()
    qs = [ch.queue_declare("", exclusive=True).method.queue for _ in range(3)]
    ex = {kind: _name() for kind in ("direct", "fanout", "topic", "headers")}
    for kind, name in ex.items():
        ch.exchange_declare(name, kind)
    ch.queue_bind(qs[0], ex["direct"], "red")
    ch.queue_bind(qs[1], ex["direct"], "blue")
    for q in qs:
        ch.queue_bind(q, ex["fanout"])
    ch.queue_bind(qs[0], ex["topic"], "a.*.c")
    ch.queue_bind(qs[1], ex["topic"], "a.#")
    ch.queue_bind(qs[2], ex["headers"], arguments={"x-match": "any", "color": "red", "size": "big"})
    ch.basic_publish(ex["direct"], "red", b"d")
    ch.basic_publish(ex["fanout"], "ignored", b"f")
    ch.basic_publish(ex["topic"], "a", b"t1")  # a.# only
    ch.basic_publish(ex["topic"], "a.b.c", b"t2")  # both
    ch.basic_publish(ex["headers"], "", b"h", pika.BasicProperties(headers={"size": "big"}))
    ch.basic_publish(ex["headers"], "", b"h-miss", pika.BasicProperties(headers={"size": "small"}))

    def bodies(q: str) -> list[bytes]:
        out = []
        while True:
            m, _p, b = ch.basic_get(q, auto_ack=True)
            if m is None:
                return out
            out.append(b)

    assert bodies(qs[0]) == [b"d", b"f", b"t2"]
    assert bodies(qs[1]) == [b"f", b"t1", b"t2"]
    assert bodies(qs[2]) == [b"f", b"h"]


def test_exchange_declare_passive_missing_is_404_and_redeclare_different_is_406(conn) -> None:
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as err:
        ch.exchange_declare(_name(), passive=True)
    assert err.value.reply_code == 404
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as err:
        ch.exchange_declare("amq.direct", "fanout", durable=True)
    assert err.value.reply_code == 406
    assert "inequivalent arg 'type' for exchange 'amq.direct'" in err.value.reply_text
    ch = conn.channel()
    name = _name()
    ch.queue_declare(name, auto_delete=True)
    with pytest.raises(ChannelClosedByBroker) as err:
        ch.queue_declare(name, durable=True)
    assert err.value.reply_code == 406
    assert conn.is_open  # channel errors leave the connection open
    conn.channel().queue_delete(name)


def test_exclusive_queue_is_locked_for_other_connections(broker, conn) -> None:
    q = conn.channel().queue_declare("", exclusive=True).method.queue
    other = _connect(broker)
    try:
        with pytest.raises(ChannelClosedByBroker) as err:
            other.channel().basic_consume(q, lambda *a: None)
        assert err.value.reply_code == 405
    finally:
        other.close()


def test_exclusive_queue_goes_with_its_connection(broker, conn) -> None:
    other = _connect(broker)
    q = other.channel().queue_declare("", exclusive=True).method.queue
    other.close()
    assert _gone(conn, q)


def test_purge_delete_if_empty_and_unbind(conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare(_name()).method.queue
    ch.queue_bind(q, "amq.direct", "k")
    ch.queue_unbind(q, "amq.direct", "k")
    ch.basic_publish("amq.direct", "k", b"lost")  # unbound: routed nowhere
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    assert ch.queue_purge(q).method.message_count == 3
    ch.basic_publish("", q, b"x")
    with pytest.raises(ChannelClosedByBroker) as err:
        ch.queue_delete(q, if_empty=True)
    assert err.value.reply_code == 406
    assert conn.channel().queue_delete(q).method.message_count == 1


def test_prefetch_limits_unacked_deliveries_and_ack_releases_more(conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    ch.basic_qos(prefetch_count=2)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(m))
    _wait(conn, lambda: len(got) >= 2)
    conn.process_data_events(time_limit=0.3)
    assert len(got) == 2  # the prefetch holds the rest back
    ch.basic_ack(got[1].delivery_tag, multiple=True)
    _wait(conn, lambda: len(got) >= 4)
    conn.process_data_events(time_limit=0.2)
    assert len(got) == 4


def test_nack_requeue_redelivers_in_order_with_the_flag(conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    first = _drain(ch, q, 3)
    assert [b for _m, _p, b in first] == [b"0", b"1", b"2"]
    ch.basic_nack(first[-1][0].delivery_tag, multiple=True, requeue=True)
    again = _drain(ch, q, 3)
    assert [(b, m.redelivered) for m, _p, b in again] == [(b"0", True), (b"1", True), (b"2", True)]
    ch.basic_reject(again[0][0].delivery_tag, requeue=False)
    ch.basic_ack(again[2][0].delivery_tag, multiple=True)
    assert ch.basic_get(q) == (None, None, None)


def test_closing_a_channel_requeues_its_unacked_messages(conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"m")
    m, _p, _b = ch.basic_get(q)
    ch.close()
    ch = conn.channel()
    m, _p, b = ch.basic_get(q, auto_ack=True)
    assert b == b"m" and m.redelivered


def test_ack_of_unknown_delivery_tag_closes_the_channel_with_406(conn) -> None:
    ch = conn.channel()
    ch.basic_ack(99)
    with pytest.raises(ChannelClosedByBroker) as err:
        ch.queue_declare("", exclusive=True)
    assert err.value.reply_code == 406 and "unknown delivery tag 99" in err.value.reply_text


def test_mandatory_unroutable_publish_is_returned_and_confirmed(conn) -> None:
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("amq.direct", "nobody-" + _name(), b"x", mandatory=True)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"ok", mandatory=True)  # confirmed, no exception


def test_publish_to_missing_exchange_is_404_on_the_channel(conn) -> None:
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as err:
        ch.basic_publish("missing-" + _name(), "k", b"x")
    assert err.value.reply_code == 404


def test_tx_commit_delivers_and_rollback_discards(conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.tx_select()
    ch.basic_publish("", q, b"rolled back")
    ch.tx_rollback()
    ch.basic_publish("", q, b"committed")
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    ch.tx_commit()
    assert ch.basic_get(q, auto_ack=True)[2] == b"committed"
    assert ch.basic_get(q) == (None, None, None)


def test_message_ttl_dead_letters_with_x_death(conn) -> None:
    ch = conn.channel()
    dead = ch.queue_declare("", exclusive=True).method.queue
    ch.exchange_declare("dlx-" + dead, "fanout", auto_delete=True)
    ch.queue_bind(dead, "dlx-" + dead)
    q = ch.queue_declare("", exclusive=True, arguments={
        "x-message-ttl": 100, "x-dead-letter-exchange": "dlx-" + dead,
    }).method.queue  # fmt: skip
    ch.basic_publish("", q, b"expires")
    ch.basic_publish("", q, b"expires sooner", pika.BasicProperties(expiration="10"))
    deadline = time.monotonic() + 5
    while ch.queue_declare(dead, passive=True).method.message_count < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    m, props, body = ch.basic_get(dead, auto_ack=True)
    assert body == b"expires"
    death = props.headers["x-death"][0]
    assert death["reason"] == "expired" and death["queue"] == q and death["count"] == 1
    assert props.headers["x-first-death-reason"] == "expired"
    assert ch.basic_get(dead, auto_ack=True)[2] == b"expires sooner"


def test_rejected_message_is_dead_lettered_with_its_routing_key(conn) -> None:
    ch = conn.channel()
    dead = ch.queue_declare("", exclusive=True).method.queue
    q = ch.queue_declare("", exclusive=True, arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead,
    }).method.queue  # fmt: skip
    ch.basic_publish("", q, b"bad")
    m, _p, _b = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, props, body = ch.basic_get(dead, auto_ack=True)
    assert body == b"bad" and props.headers["x-death"][0]["reason"] == "rejected"


def test_max_length_drops_the_head_or_rejects_publishes(conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True, arguments={"x-max-length": 2}).method.queue
    for i in range(4):
        ch.basic_publish("", q, str(i).encode())
    assert [ch.basic_get(q, auto_ack=True)[2] for _ in range(2)] == [b"2", b"3"]
    ch.confirm_delivery()
    q2 = ch.queue_declare(
        "", exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    ).method.queue
    ch.basic_publish("", q2, b"fits")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q2, b"refused")
    assert ch.queue_declare(q2, passive=True).method.message_count == 1


def test_priority_queue_delivers_higher_priority_first(conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True, arguments={"x-max-priority": 5}).method.queue
    for body, prio in ((b"low", 1), (b"high", 5), (b"mid", 3), (b"none", 0)):
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    assert [ch.basic_get(q, auto_ack=True)[2] for _ in range(4)] == [b"high", b"mid", b"low", b"none"]


def test_deleting_a_queue_cancels_its_consumers(broker, conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare(_name()).method.queue
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(q, lambda *a: None)
    conn.channel().queue_delete(q)
    _wait(conn, lambda: cancelled == [tag])


def test_wrong_password_and_unknown_vhost_are_refused(broker) -> None:
    with pytest.raises(ProbableAuthenticationError):
        _connect(broker, "guest", "wrong")
    params = pika.ConnectionParameters(
        "127.0.0.1", broker.ports["amqp"], virtual_host="other", connection_attempts=1
    )
    with pytest.raises((ConnectionClosedByBroker, pika.exceptions.ProbableAccessDeniedError)) as err:
        pika.BlockingConnection(params)
    assert "530" in str(err.value) or "NOT_ALLOWED" in str(err.value)


def test_auto_delete_queue_goes_when_its_last_consumer_cancels(conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare(_name(), auto_delete=True).method.queue
    tag = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(tag)
    with pytest.raises(ChannelClosedByBroker) as err:
        conn.channel().queue_declare(q, passive=True)
    assert err.value.reply_code == 404


def test_publishers_are_blocked_past_max_ready_bytes_and_unblocked_when_drained(tmp_path) -> None:
    b = start_broker(tmp_path / "data", "--http-port", "off", env={"ROBUSTMQ_AMQP_MAX_READY_BYTES": "10000"})
    try:
        pub = _connect(b)
        events = []
        pub.add_on_connection_blocked_callback(lambda _c, frame: events.append(frame.method.NAME))
        pub.add_on_connection_unblocked_callback(lambda _c, frame: events.append(frame.method.NAME))
        ch = pub.channel()
        q = ch.queue_declare(_name()).method.queue
        for _ in range(15):
            ch.basic_publish("", q, b"x" * 1000)
        _wait(pub, lambda: events == ["Connection.Blocked"])
        other = _connect(b)
        other.channel().queue_purge(q)
        _wait(pub, lambda: events == ["Connection.Blocked", "Connection.Unblocked"])
        ch.confirm_delivery()
        ch.basic_publish("", q, b"after")  # reading resumed: the publish is taken and confirmed
        ok = other.channel()
        while True:  # what was still in flight when it was blocked arrived first
            m, _p, body = ok.basic_get(q, auto_ack=True)
            assert m is not None
            if body == b"after":
                break
        other.close()
        pub.close()
    finally:
        b.stop()


def test_users_from_the_config_file_replace_guest(tmp_path) -> None:
    config = tmp_path / "robustmq.toml"
    config.write_text(
        '[[auth.users]]\nuser = "alice"\npassword = "s3cret"\n'
        '[auth.users.permissions.publish]\nallow = ["orders.>"]\n'
        '[auth.users.permissions.subscribe]\nallow = ["orders", "orders.>"]\n'
    )
    b = start_broker(tmp_path / "data", "--http-port", "off", "--config", str(config))
    try:
        with pytest.raises(ProbableAuthenticationError):
            _connect(b)  # guest is not a user here
        conn = _connect(b, "alice", "s3cret")
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, "amq.topic", "orders.#")
        ch.basic_publish("amq.topic", "orders.eu", b"ok")
        assert ch.basic_get(q, auto_ack=True)[2] == b"ok"
        with pytest.raises(ChannelClosedByBroker) as err:
            ch.queue_bind(q, "amq.topic", "payroll.*")
        assert err.value.reply_code == 403
        ch = conn.channel()
        ch.basic_publish("amq.topic", "payroll.x", b"no")
        with pytest.raises(ChannelClosedByBroker) as err:
            ch.queue_declare("", exclusive=True)
        assert err.value.reply_code == 403
        conn.close()
    finally:
        b.stop()


def test_exchange_to_exchange_alternate_and_internal_exchanges(conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    lost = ch.queue_declare("", exclusive=True).method.queue
    src, dst, alt = _name(), _name(), _name()
    ch.exchange_declare(alt, "fanout", auto_delete=True)
    ch.queue_bind(lost, alt)
    ch.exchange_declare(src, "direct", auto_delete=True, arguments={"alternate-exchange": alt})
    ch.exchange_declare(dst, "topic", auto_delete=True, internal=True)
    ch.exchange_bind(dst, src, "k")
    ch.queue_bind(q, dst, "#")
    ch.basic_publish(src, "k", b"via e2e")
    ch.basic_publish(src, "other", b"to alternate")
    assert ch.basic_get(q, auto_ack=True)[2] == b"via e2e"
    assert ch.basic_get(lost, auto_ack=True)[2] == b"to alternate"
    ch.basic_publish(dst, "k", b"internal")
    with pytest.raises(ChannelClosedByBroker) as err:
        ch.queue_declare("", exclusive=True)
    assert err.value.reply_code == 403


def test_recover_redelivers_unacked_and_flow_pauses_deliveries(conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"1")
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((b, m.redelivered)))
    _wait(conn, lambda: len(got) == 1)
    ch.basic_recover(requeue=True)
    _wait(conn, lambda: len(got) == 2)
    assert got == [(b"1", False), (b"1", True)]
    ch.flow(False)
    ch.basic_publish("", q, b"2")
    conn.process_data_events(time_limit=0.3)
    assert len(got) == 2
    ch.flow(True)
    _wait(conn, lambda: len(got) == 3)
    assert got[-1] == (b"2", False)


def test_single_active_consumer_gets_everything_until_it_cancels(broker, conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare(_name(), arguments={"x-single-active-consumer": True}).method.queue
    first, second = [], []
    tag = ch.basic_consume(q, lambda c, m, p, b: first.append(b), auto_ack=True)
    other = _connect(broker)
    other.channel().basic_consume(q, lambda c, m, p, b: second.append(b), auto_ack=True)
    for i in range(4):
        ch.basic_publish("", q, str(i).encode())
    _wait(conn, lambda: len(first) == 4)
    other.process_data_events(time_limit=0.1)
    assert second == []
    ch.basic_cancel(tag)
    ch.basic_publish("", q, b"next")
    _wait(other, lambda: second == [b"next"])
    other.close()
    ch.queue_delete(q)


def test_queue_with_x_expires_goes_away_unused(conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare(_name(), arguments={"x-expires": 200}).method.queue
    assert _gone(conn, q)


def test_many_channels_on_one_connection_are_independent(conn) -> None:
    channels = [conn.channel() for _ in range(20)]
    q = channels[0].queue_declare("", exclusive=True).method.queue
    for i, ch in enumerate(channels):
        ch.basic_publish("", q, str(i).encode())
    with pytest.raises(ChannelClosedByBroker):
        channels[3].exchange_declare(_name(), passive=True)  # closes channel 3 only
    assert channels[4].queue_declare(q, passive=True).method.message_count == 20


def test_heartbeats_keep_an_idle_connection_open(broker) -> None:
    params = pika.ConnectionParameters("127.0.0.1", broker.ports["amqp"], heartbeat=1)
    c = pika.BlockingConnection(params)
    c.sleep(3.0)  # pika answers heartbeats while it sleeps
    assert c.is_open
    c.channel().queue_declare("", exclusive=True)
    c.close()


def test_amqp_connections_and_queues_show_on_the_control_plane(tmp_path) -> None:
    import httpx

    b = start_broker(tmp_path / "data")
    try:
        params = pika.ConnectionParameters(
            "127.0.0.1", b.ports["amqp"], client_properties={"connection_name": "billing-svc"}
        )
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        ch.queue_declare("invoices", durable=True)
        ch.basic_publish("", "invoices", b"1", pika.BasicProperties(delivery_mode=2))
        base = f"http://127.0.0.1:{b.ports['http']}"
        items = httpx.get(f"{base}/api/v1/connections", params={"protocol": "amqp"}, timeout=10).json()[
            "items"
        ]
        assert [(c["name"], c["user"], c["lang"]) for c in items] == [("billing-svc", "guest", "amqp")]
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert 'robustmq_connections{protocol="amqp"} 1.0' in metrics
        assert any(
            line.startswith('robustmq_stream_records{stream="amqp-queue-invoices-')
            for line in metrics.splitlines()
        )
        conn.close()
    finally:
        b.stop()


def test_headers_table_field_types_arrive_unchanged(conn) -> None:
    import datetime
    import decimal

    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    headers = {
        "str": "text", "int": 7, "big": 2**40, "neg": -3, "bool": True, "bytes": b"\x00\xff",
        "decimal": decimal.Decimal("3.14"), "time": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "table": {"nested": "yes", "n": 1}, "array": [1, "two", {"three": 3}], "none": None,
    }  # fmt: skip
    props = pika.BasicProperties(headers=headers, timestamp=1_700_000_000, expiration="60000")
    ch.basic_publish("", q, b"typed", props)
    _m, got, _b = ch.basic_get(q, auto_ack=True)
    assert got.headers == headers
    assert (got.timestamp, got.expiration) == (1_700_000_000, "60000")


def test_delete_if_unused_and_exclusive_consumers(conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare(_name()).method.queue
    ex = _name()
    ch.exchange_declare(ex, "fanout")
    ch.queue_bind(q, ex)
    with pytest.raises(ChannelClosedByBroker) as err:
        ch.exchange_delete(ex, if_unused=True)
    assert err.value.reply_code == 406
    ch = conn.channel()
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    other = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as err:
        other.basic_consume(q, lambda *a: None)
    assert err.value.reply_code == 403
    other = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as err:
        other.queue_delete(q, if_unused=True)
    assert err.value.reply_code == 406
    conn.channel().queue_delete(q)
    conn.channel().exchange_delete(ex)


def test_global_prefetch_limits_the_whole_channel(conn) -> None:
    ch = conn.channel()
    qs = [ch.queue_declare("", exclusive=True).method.queue for _ in range(2)]
    for q in qs:
        for i in range(3):
            ch.basic_publish("", q, str(i).encode())
    ch.basic_qos(prefetch_count=3, global_qos=True)
    got = []
    for q in qs:
        ch.basic_consume(q, lambda c, m, p, b: got.append(m))
    _wait(conn, lambda: len(got) >= 3)
    conn.process_data_events(time_limit=0.3)
    assert len(got) == 3  # three across both consumers, not three each


def test_queue_names_may_hold_any_utf8(conn) -> None:
    ch = conn.channel()
    name = "café | 注文 " + _name()
    assert ch.queue_declare(name, auto_delete=True).method.queue == name
    ch.basic_publish("", name, b"ok")
    assert ch.basic_get(name, auto_ack=True)[2] == b"ok"
    ch.queue_delete(name)


def test_a_long_backlog_is_delivered_whole_and_in_order(conn) -> None:
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    n = 5000
    for i in range(n):
        ch.basic_publish("", q, i.to_bytes(4, "big") + b"x" * 1000)  # 5 MB: over one tick's write cap
    assert ch.queue_declare(q, passive=True).method.message_count == n
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(int.from_bytes(b[:4], "big")), auto_ack=True)
    _wait(conn, lambda: len(got) == n, timeout=20)
    assert got == list(range(n))
