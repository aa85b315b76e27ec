"""The mq9 service in process (router + store, no network): subjects it must leave alone,
exactly one reply per request whatever the body, and legacy shapes chosen per client."""

from __future__ import annotations

import json
import os

import orjson
import pytest
from helpers.waits import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustmq.agents.mq9.service import LEGACY_CLIENT_NAME, Mq9Service, SendOptions
from robustmq.config import Settings, StoreSettings
from robustmq.headers import encode_headers
from robustmq.router import Router
from robustmq.store import Store

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class FakeBroker:
    def __init__(self, data_dir) -> None:
        self.settings = Settings()
        self.router = Router()
        self.store = Store(StoreSettings(data_dir=data_dir, fsync="never"), router=self.router, index=False)


class Client:
    """A stand-in for a connection: what the router exposes as ``current_origin``."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name


@pytest.fixture
async def service(tmp_path):
    broker = FakeBroker(tmp_path / "data")
    await broker.store.start()
    svc = Mq9Service(broker.router, broker.store, broker.settings.mq9)
    await svc.start()
    yield svc
    await svc.stop()
    await broker.store.stop()


async def request(svc, subject: str, body: bytes = b"", headers: bytes | None = None, origin=None) -> dict:
    router = svc.router
    replies: list[bytes] = []
    inbox = router.new_inbox()
    sub = router.subscribe(inbox, lambda s, r, h, p: replies.append(p))
    try:
        router.publish(subject, body, inbox, headers, origin=origin)

        async def replied() -> bool:
            if not replies:
                await svc.store.flush()
            return bool(replies)

        # a FETCH may wait up to its max_wait_ms (500 ms by default)
        await wait_until(replied, timeout=2, interval=0.005)
        assert len(replies) == 1, replies
        return orjson.loads(replies[0])
    finally:
        router.unsubscribe(sub)


async def test_foreign_subjects_get_no_reply_from_mq9(service):
    router = service.router
    seen: list[bytes] = []
    inbox = router.new_inbox()
    router.subscribe(inbox, lambda s, r, h, p: seen.append(p))
    for subject in (
        "$mq9.AI.API.AGENT.LIST",
        "$mq9.AI.INVOKE.a.b",
        "$mq9.AI.TOOL.t.1",
        "$mq9.AI.TASK.EVENT.1",
    ):
        router.publish(subject, b"{}", inbox)
    await service.store.flush()
    assert seen == []


async def test_unknown_subject_gets_a_json_error(service):
    assert await request(service, "$mq9.AI.NOPE", b"{}") == {
        "error": "unrecognized mq9 subject: $mq9.AI.NOPE"
    }


async def test_legacy_shape_is_chosen_by_the_client_name(service):
    legacy = await request(
        service, "$mq9.AI.MAILBOX.CREATE", b'{"ttl": 5}', origin=Client(LEGACY_CLIENT_NAME)
    )
    assert set(legacy) == {"mail_id", "is_new"}
    current = await request(service, "$mq9.AI.MAILBOX.CREATE", b'{"ttl": 5}', origin=Client("someone"))
    assert set(current) == {"error", "mail_address"}


async def test_a_public_create_makes_the_client_legacy(service):
    client = Client()
    first = await request(
        service, "$mq9.AI.MAILBOX.CREATE", b'{"ttl": 5, "public": true, "name": "p.one"}', origin=client
    )
    assert first == {"mail_id": "p.one", "is_new": True}
    later = await request(service, "$mq9.AI.AGENT.DISCOVER", b"", origin=client)
    assert later == {"agents": []}
    other = await request(service, "$mq9.AI.AGENT.DISCOVER", b"", origin=Client())
    assert other == {"error": "", "agents": []}


def test_send_options_parse_every_header():
    block = encode_headers(
        [
            ("MQ9-Priority", " urgent "),
            ("mq9-key", " k "),
            ("mq9-ttl", "30"),
            ("mq9-delay", "x"),
            ("mq9-tags", "a, ,b"),
        ]
    )
    options = SendOptions(block)
    assert (options.priority, options.key, options.ttl, options.delay, options.tags) == (
        "urgent",
        "k",
        30,
        None,
        ("a", "b"),
    )
    assert SendOptions(encode_headers([("mq9-priority", "loud")])).priority == "normal"
    assert SendOptions(None).priority == "normal"


SUBJECTS = [
    "$mq9.AI.MAILBOX.CREATE",
    "$mq9.AI.MSG.SEND.fuzz.box",
    "$mq9.AI.MSG.FETCH.fuzz.box",
    "$mq9.AI.MSG.ACK.fuzz.box",
    "$mq9.AI.MSG.QUERY.fuzz.box",
    "$mq9.AI.MSG.DELETE.fuzz.box.0",
    "$mq9.AI.AGENT.REGISTER",
    "$mq9.AI.AGENT.UNREGISTER",
    "$mq9.AI.AGENT.REPORT",
    "$mq9.AI.AGENT.DISCOVER",
]
JSONISH = st.one_of(
    st.binary(max_size=40),
    st.recursive(
        st.none() | st.booleans() | st.integers(-3, 2**70) | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
            st.sampled_from(["name", "ttl", "group_name", "msg_id", "mail_address", "config", "num_msgs",
                             "deliver", "tags", "key", "limit", "page", "text", "semantic", "payload"]),
            inner, max_size=4),
        max_leaves=8,
    ).map(lambda v: json.dumps(v).encode()),
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=st.sampled_from(SUBJECTS), body=JSONISH)
async def test_every_request_gets_exactly_one_json_reply_with_error(service, subject, body):
    if service.mailboxes.get("fuzz.box") is None:
        service.mailboxes.create("fuzz.box", 0, "")
    reply = await request(service, subject, body)
    assert isinstance(reply, dict) and isinstance(reply["error"], str)
    if reply["error"]:
        assert list(reply) == ["error"]
        assert not reply["error"].startswith("internal error"), reply
