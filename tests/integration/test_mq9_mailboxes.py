"""mq9 mailboxes over NATS with nats-py: CREATE, SEND, FETCH, ACK, QUERY, DELETE and bad input."""

from __future__ import annotations

import asyncio
import itertools
import time

import nats
import orjson
import pytest
from brokerproc import start_broker
from helpers.waits import request_started, wait_for

MAX_BODY_BYTES = 4096
_names = itertools.count()


@pytest.fixture(scope="module")
def mq9_broker(tmp_path_factory):
    b = start_broker(
        tmp_path_factory.mktemp("mq9") / "data",
        "--mqtt-port", "0",
        env={"HF_HUB_OFFLINE": "1", "ROBUSTMQ_MQ9_MAX_BODY_BYTES": str(MAX_BODY_BYTES)},
    )  # fmt: skip
    yield b
    b.stop()


@pytest.fixture
async def nc(mq9_broker):
    client = await nats.connect(mq9_broker.nats_url)
    yield client
    await client.close()


def unique(prefix: str = "box") -> str:
    return f"{prefix}.{next(_names)}.{int(time.time() * 1000) % 100000}"


async def call(nc, subject: str, body: bytes | dict = b"", headers: dict | None = None) -> dict:
    if isinstance(body, dict):
        body = orjson.dumps(body)
    msg = await nc.request(subject, body, timeout=10, headers=headers)
    return orjson.loads(msg.data)


async def create(nc, **fields) -> str:
    reply = await call(nc, "$mq9.AI.MAILBOX.CREATE", fields)
    assert reply["error"] == "", reply
    return reply["mail_address"]


async def send(nc, address: str, payload: bytes, **headers: str) -> int:
    hdrs = {f"mq9-{k.replace('_', '-')}": v for k, v in headers.items()} or None
    reply = await call(nc, f"$mq9.AI.MSG.SEND.{address}", payload, hdrs)
    assert reply["error"] == "", reply
    return reply["msg_id"]


async def fetch(nc, address: str, **request) -> list[dict]:
    request.setdefault("config", {"max_wait_ms": 0})
    reply = await call(nc, f"$mq9.AI.MSG.FETCH.{address}", request)
    assert reply["error"] == "", reply
    return reply["messages"]


def payloads(messages: list[dict]) -> list[str]:
    return [m["payload"] for m in messages]


# -- MAILBOX.CREATE ------------------------------------------------------------------------------


async def test_create_with_a_name_uses_exactly_that_address(nc):
    name = unique("task")
    assert await call(nc, "$mq9.AI.MAILBOX.CREATE", {"name": name}) == {"error": "", "mail_address": name}


async def test_create_without_body_generates_an_address(nc):
    first = await call(nc, "$mq9.AI.MAILBOX.CREATE")
    second = await call(nc, "$mq9.AI.MAILBOX.CREATE", {"ttl": 60, "desc": "x"})
    assert first["error"] == second["error"] == ""
    assert first["mail_address"] and first["mail_address"] != second["mail_address"]


async def test_create_is_not_idempotent(nc):
    name = await create(nc, name=unique())
    assert await call(nc, "$mq9.AI.MAILBOX.CREATE", {"name": name}) == {
        "error": f"mailbox {name} already exists"
    }


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", "prefix must not be empty"),
        ("Upper", "name may only contain lowercase letters, digits, and dots"),
        ("with-dash", "name may only contain lowercase letters, digits, and dots"),
        ("under_score", "name may only contain lowercase letters, digits, and dots"),
        (".leading", "prefix must start and end with a lowercase letter or digit"),
        ("trailing.", "prefix must start and end with a lowercase letter or digit"),
    ],
)
async def test_create_name_rules(nc, name, error):
    assert await call(nc, "$mq9.AI.MAILBOX.CREATE", {"name": name}) == {"error": error}


async def test_expired_mailbox_disappears_with_its_messages(nc):
    name = await create(nc, name=unique(), ttl=1)
    await send(nc, name, b"short-lived")
    gone = f"mailbox {name} does not exist"
    # the TTL counts whole seconds from the create time: it ends within a second; a query changes nothing
    await wait_for(lambda: call(nc, f"$mq9.AI.MSG.QUERY.{name}"), lambda r: r["error"] == gone, interval=0.05)
    assert await call(nc, f"$mq9.AI.MSG.SEND.{name}", b"x") == {"error": gone}
    # the address is free again, and the new mailbox starts empty
    await create(nc, name=name)
    assert await fetch(nc, name, deliver="earliest") == []


# -- MSG.SEND / FETCH ----------------------------------------------------------------------------


async def test_send_to_a_missing_mailbox(nc):
    assert await call(nc, "$mq9.AI.MSG.SEND.nobody.here", b"x") == {
        "error": "mailbox nobody.here does not exist"
    }


async def test_msg_ids_are_offsets_and_fetch_orders_by_priority(nc):
    box = await create(nc, name=unique())
    ids = [
        await send(nc, box, b"n0"),
        await send(nc, box, b"u1", priority="urgent"),
        await send(nc, box, b"c2", priority="critical"),
        await send(nc, box, b"n3", priority="normal"),
        await send(nc, box, b"c4", priority="critical"),
        await send(nc, box, b"x5", priority="bogus"),
    ]
    assert ids == [0, 1, 2, 3, 4, 5]
    messages = await fetch(nc, box, deliver="earliest")
    assert payloads(messages) == ["c2", "c4", "u1", "n0", "n3", "x5"]
    assert [m["priority"] for m in messages] == [
        "critical",
        "critical",
        "urgent",
        "normal",
        "normal",
        "normal",
    ]
    first = messages[0]
    assert first["msg_id"] == 2 and isinstance(first["create_time"], int)
    assert bytes(first["header"]).startswith(b"NATS/1.0\r\n")
    without_headers = await call(nc, f"$mq9.AI.MSG.SEND.{box}", b"plain")
    plain = await fetch(nc, box, deliver="from_id", from_id=without_headers["msg_id"])
    assert plain[0]["header"] is None


async def test_header_names_are_case_insensitive(nc):
    box = await create(nc, name=unique())
    await call(nc, f"$mq9.AI.MSG.SEND.{box}", b"n", {"Mq9-Priority": "normal"})
    await call(nc, f"$mq9.AI.MSG.SEND.{box}", b"c", {"MQ9-PRIORITY": " critical "})
    assert payloads(await fetch(nc, box, deliver="earliest")) == ["c", "n"]


async def test_fetch_caps_the_batch_at_num_msgs_across_priorities(nc):
    box = await create(nc, name=unique())
    for i in range(3):
        await send(nc, box, f"c{i}".encode(), priority="critical")
        await send(nc, box, f"n{i}".encode())
    messages = await fetch(nc, box, deliver="earliest", config={"num_msgs": 4, "max_wait_ms": 0})
    assert payloads(messages) == ["c0", "c1", "c2", "n0"]


async def test_latest_is_the_last_message_inclusive(nc):
    box = await create(nc, name=unique())
    assert await fetch(nc, box) == []  # empty mailbox: starts at the next message
    for i in range(5):
        await send(nc, box, f"m{i}".encode())
    assert payloads(await fetch(nc, box)) == ["m4"]
    assert payloads(await fetch(nc, box, deliver="latest")) == ["m4"]


async def test_latest_on_an_empty_mailbox_returns_the_next_message(nc):
    box = await create(nc, name=unique())
    waiting = await request_started(nc, fetch(nc, box, group_name="g", config={"max_wait_ms": 30000}))
    await send(nc, box, b"first")
    assert payloads(await waiting) == ["first"]


async def test_deliver_from_id_and_from_time(nc):
    box = await create(nc, name=unique())
    for i in range(4):
        await send(nc, box, f"m{i}".encode())
    assert payloads(await fetch(nc, box, deliver="from_id", from_id=2)) == ["m2", "m3"]
    assert payloads(await fetch(nc, box, deliver="from_id", from_id=99)) == []
    assert payloads(await fetch(nc, box, deliver="from_time", from_time=0)) == ["m0", "m1", "m2", "m3"]
    assert payloads(await fetch(nc, box, deliver="from_time", from_time=int(time.time()) + 3600)) == []


async def test_fetch_waits_for_a_message_and_returns_as_soon_as_one_arrives(nc):
    box = await create(nc, name=unique())
    await send(nc, box, b"old")
    # a 30 s wait that must end well before the 10 s request timeout, because a message arrives
    waiting = await request_started(
        nc, fetch(nc, box, deliver="from_id", from_id=1, config={"max_wait_ms": 30000})
    )
    assert not waiting.done()
    await send(nc, box, b"new")
    assert payloads(await waiting) == ["new"]


async def test_fetch_with_nothing_to_return_replies_empty_after_max_wait(nc):
    box = await create(nc, name=unique())
    assert await fetch(nc, box, deliver="earliest", config={"max_wait_ms": 100}) == []


async def test_fetch_never_commits_and_ack_moves_the_group(nc):
    box = await create(nc, name=unique())
    for i in range(4):
        await send(nc, box, f"m{i}".encode())
    first = await fetch(nc, box, group_name="workers", deliver="earliest")
    again = await fetch(nc, box, group_name="workers", deliver="earliest")
    assert payloads(first) == payloads(again) == ["m0", "m1", "m2", "m3"]
    ack = {"group_name": "workers", "mail_address": box, "msg_id": 1}
    assert await call(nc, f"$mq9.AI.MSG.ACK.{box}", ack) == {"error": ""}
    assert payloads(await fetch(nc, box, group_name="workers", deliver="earliest")) == ["m2", "m3"]
    # deliver is ignored for an existing group
    assert payloads(await fetch(nc, box, group_name="workers", deliver="latest")) == ["m2", "m3"]
    # groups are independent
    assert payloads(await fetch(nc, box, group_name="others", deliver="earliest")) == ["m0", "m1", "m2", "m3"]


async def test_ack_is_cumulative_across_priorities(nc):
    box = await create(nc, name=unique())
    await send(nc, box, b"n0")
    await send(nc, box, b"n1")
    await send(nc, box, b"c2", priority="critical")
    await send(nc, box, b"n3")
    batch = await fetch(nc, box, group_name="g", deliver="earliest", config={"num_msgs": 1, "max_wait_ms": 0})
    assert payloads(batch) == ["c2"]
    await call(nc, f"$mq9.AI.MSG.ACK.{box}", {"group_name": "g", "mail_address": box, "msg_id": 2})
    assert payloads(await fetch(nc, box, group_name="g")) == ["n3"]


async def test_force_deliver_resets_and_commits_the_group(nc):
    box = await create(nc, name=unique())
    for i in range(3):
        await send(nc, box, f"m{i}".encode())
    await call(nc, f"$mq9.AI.MSG.ACK.{box}", {"group_name": "g", "mail_address": box, "msg_id": 2})
    assert await fetch(nc, box, group_name="g") == []
    reset = await fetch(nc, box, group_name="g", deliver="earliest", force_deliver=True)
    assert payloads(reset) == ["m0", "m1", "m2"]
    assert payloads(await fetch(nc, box, group_name="g")) == ["m0", "m1", "m2"]


async def test_ack_takes_the_address_from_the_body(nc):
    box = await create(nc, name=unique())
    reply = await call(
        nc, f"$mq9.AI.MSG.ACK.{box}", {"group_name": "g", "mail_address": "no.such", "msg_id": 0}
    )
    assert reply == {"error": "mailbox not found: no.such"}


async def test_stateless_fetch_commits_nothing(nc):
    box = await create(nc, name=unique())
    await send(nc, box, b"a")
    await send(nc, box, b"b")
    assert payloads(await fetch(nc, box, deliver="earliest")) == ["a", "b"]
    assert payloads(await fetch(nc, box, deliver="earliest")) == ["a", "b"]


# -- keys, TTL, delay, tags ------------------------------------------------------------------------


async def test_key_compaction_keeps_only_the_newest(nc):
    box = await create(nc, name=unique())
    await send(nc, box, b"v1", key="status")
    await send(nc, box, b"other")
    newest = await send(nc, box, b"v2", key="status")
    assert payloads(await fetch(nc, box, deliver="earliest")) == ["other", "v2"]
    by_key = await call(nc, f"$mq9.AI.MSG.QUERY.{box}", {"key": "status"})
    assert [m["msg_id"] for m in by_key["messages"]] == [newest]
    assert (await call(nc, f"$mq9.AI.MSG.QUERY.{box}", {"key": "none"}))["messages"] == []


async def test_message_ttl_hides_expired_messages(nc):
    box = await create(nc, name=unique())
    await send(nc, box, b"brief", ttl="1")
    await send(nc, box, b"lasting", ttl="3600")
    await send(nc, box, b"bad-ttl-ignored", ttl="soon")
    assert payloads(await fetch(nc, box, deliver="earliest")) == ["brief", "lasting", "bad-ttl-ignored"]
    await wait_for(
        lambda: fetch(nc, box, deliver="earliest"),
        lambda got: payloads(got) == ["lasting", "bad-ttl-ignored"],
        interval=0.05,
    )
    assert payloads((await call(nc, f"$mq9.AI.MSG.QUERY.{box}"))["messages"]) == [
        "lasting",
        "bad-ttl-ignored",
    ]


async def test_delayed_send_replies_minus_one_and_appears_later_with_its_offset(nc):
    box = await create(nc, name=unique())
    assert await send(nc, box, b"now") == 0
    assert await send(nc, box, b"later", delay="1") == -1
    assert await send(nc, box, b"now2") == 1
    assert payloads(await fetch(nc, box, deliver="earliest")) == ["now", "now2"]
    released = await fetch(nc, box, deliver="from_id", from_id=2, config={"max_wait_ms": 5000})
    assert [(m["payload"], m["msg_id"]) for m in released] == [("later", 2)]


async def test_query_by_tags_since_and_all(nc):
    box = await create(nc, name=unique())
    await send(nc, box, b"t-billing", tags="billing, vip")
    await send(nc, box, b"untagged")
    await send(nc, box, b"t-ops", tags="ops,, ")
    await send(nc, box, b"t-vip", tags=" vip")

    async def query(body):
        reply = await call(nc, f"$mq9.AI.MSG.QUERY.{box}", body)
        assert reply["error"] == ""
        return payloads(reply["messages"])

    assert await query({"tags": ["vip"]}) == ["t-billing", "t-vip"]
    assert await query({"tags": ["ops", "billing"]}) == ["t-billing", "t-ops"]
    assert await query({"tags": []}) == ["t-billing", "untagged", "t-ops", "t-vip"]
    assert await query({}) == ["t-billing", "untagged", "t-ops", "t-vip"]
    assert await query({"limit": 2}) == ["t-billing", "untagged"]
    assert await query({"since": int(time.time()) + 3600}) == []
    assert await query({"since": 1}) == ["t-billing", "untagged", "t-ops", "t-vip"]
    # key wins over tags
    assert await query({"key": "nothing", "tags": ["vip"]}) == []


async def test_query_limit_is_capped_at_100(nc):
    box = await create(nc, name=unique())
    await asyncio.gather(*(send(nc, box, b"m") for _ in range(105)))
    reply = await call(nc, f"$mq9.AI.MSG.QUERY.{box}", {"limit": 1000})
    assert len(reply["messages"]) == 100


# -- MSG.DELETE ----------------------------------------------------------------------------------


async def test_delete_removes_one_message(nc):
    box = await create(nc, name=unique())
    for i in range(3):
        await send(nc, box, f"m{i}".encode())
    assert await call(nc, f"$mq9.AI.MSG.DELETE.{box}.1") == {"error": "", "deleted": True}
    assert payloads(await fetch(nc, box, deliver="earliest")) == ["m0", "m2"]
    # absent offsets and absent mailboxes are not errors
    assert await call(nc, f"$mq9.AI.MSG.DELETE.{box}.77") == {"error": "", "deleted": True}
    assert await call(nc, "$mq9.AI.MSG.DELETE.no.such.box.1") == {"error": "", "deleted": True}


async def test_delete_with_a_non_numeric_id(nc):
    box = await create(nc, name=unique())
    assert await call(nc, f"$mq9.AI.MSG.DELETE.{box}.abc") == {"error": "invalid msg_id: abc"}


# -- any protocol lands in the mailbox -----------------------------------------------------------


async def test_a_plain_publish_on_the_address_lands_in_the_mailbox(nc):
    box = await create(nc, name=unique("agent.inbox"))
    await nc.publish(box, b"via-plain-nats", headers={"mq9-priority": "critical"})
    await nc.flush()
    await send(nc, box, b"via-mq9")
    messages = await fetch(nc, box, deliver="earliest")
    assert payloads(messages) == ["via-plain-nats", "via-mq9"]
    assert messages[0]["priority"] == "critical"


async def test_an_mqtt_publish_lands_in_the_mailbox(nc, mq9_broker):
    import paho.mqtt.client as mqtt

    box = await create(nc, name=unique("device.inbox"))
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"mq9-{box}")
    client.connect("127.0.0.1", mq9_broker.ports["mqtt"])
    client.loop_start()
    try:
        info = client.publish(box.replace(".", "/"), b"from-mqtt", qos=1)
        await asyncio.get_running_loop().run_in_executor(None, info.wait_for_publish, 10)
    finally:
        client.loop_stop()
        client.disconnect()
    messages = await fetch(nc, box, deliver="earliest", config={"max_wait_ms": 5000})
    assert payloads(messages) == ["from-mqtt"]


# -- bad input -----------------------------------------------------------------------------------


async def test_bad_requests_get_json_errors_and_the_connection_carries_on(nc):
    box = await create(nc, name=unique())
    bad_json = await call(nc, f"$mq9.AI.MSG.FETCH.{box}", b"{not json")
    assert bad_json["error"].startswith("invalid MSG.FETCH payload: ")
    empty = await call(nc, f"$mq9.AI.MSG.FETCH.{box}", b"")
    assert empty["error"].startswith("invalid MSG.FETCH payload: ")
    wrong_type = await call(nc, f"$mq9.AI.MSG.FETCH.{box}", {"config": {"num_msgs": "ten"}})
    assert wrong_type["error"].startswith("invalid MSG.FETCH payload: config.num_msgs")
    bad_query = await call(nc, f"$mq9.AI.MSG.QUERY.{box}", b"[1,")
    assert bad_query["error"].startswith("invalid query request: ")
    bad_ack = await call(nc, f"$mq9.AI.MSG.ACK.{box}", {"group_name": "g"})
    assert bad_ack["error"].startswith("invalid MSG.ACK payload: ")
    bad_create = await call(nc, "$mq9.AI.MAILBOX.CREATE", {"ttl": "long"})
    assert bad_create["error"].startswith("invalid MAILBOX.CREATE payload: ")
    assert list(bad_json) == ["error"]
    # still connected and served
    assert await send(nc, box, b"after") == 0
    assert nc.is_connected


@pytest.mark.parametrize(
    "subject",
    [
        "$mq9.AI.UNKNOWN.FOO",
        "$mq9.AI.MSG.SEND",
        "$mq9.AI.MSG.UNKNOWN.x",
        "$mq9.AI.AGENT.UNKNOWN",
        "$mq9.AI.MAILBOX.CREATE.extra",
    ],
)
async def test_unknown_subjects_get_a_json_error_not_a_protocol_error(nc, subject):
    assert await call(nc, subject, b"{}") == {"error": f"unrecognized mq9 subject: {subject}"}
    assert nc.is_connected
    assert nc.last_error is None


async def test_oversize_bodies_are_refused(nc):
    box = await create(nc, name=unique())
    reply = await call(nc, f"$mq9.AI.MSG.SEND.{box}", b"x" * (MAX_BODY_BYTES + 1))
    assert reply == {
        "error": f"message body too large: {MAX_BODY_BYTES + 1} bytes (max {MAX_BODY_BYTES} bytes)"
    }
    assert await fetch(nc, box, deliver="earliest") == []


async def test_other_clients_are_unaffected_by_a_bad_client(nc, mq9_broker):
    box = await create(nc, name=unique())
    other = await nats.connect(mq9_broker.nats_url)
    try:
        await asyncio.gather(*(call(nc, "$mq9.AI.MSG.FETCH." + box, b"\xff\xfe") for _ in range(20)))
        assert (await call(other, f"$mq9.AI.MSG.SEND.{box}", b"fine"))["msg_id"] == 0
    finally:
        await other.close()


async def test_send_without_reply_still_stores(nc):
    box = await create(nc, name=unique())
    await nc.publish(f"$mq9.AI.MSG.SEND.{box}", b"fire-and-forget")
    await nc.flush()
    messages = await fetch(nc, box, deliver="earliest", config={"max_wait_ms": 5000})
    assert payloads(messages) == ["fire-and-forget"]
