"""Mailboxes on a store of their own (no network): names, positions, expiry, legacy priorities."""

from __future__ import annotations

import pytest

from robustmq.agents.mq9.errors import Mq9Error
from robustmq.agents.mq9.mailboxes import MAX_ADDRESS_CHARS, MailboxStore, check_address, legacy_priority
from robustmq.config import StoreSettings
from robustmq.store import Record, Store


@pytest.fixture
async def mailboxes(tmp_path):
    store = Store(StoreSettings(data_dir=tmp_path / "data", fsync="never"), index=False)
    await store.start()
    yield MailboxStore(store)
    await store.stop()


async def put(mailboxes: MailboxStore, address: str, payload: bytes, **options) -> int:
    ack = mailboxes.append(address, payload, **options)
    await ack
    return ack.offset


def test_address_rules():
    for good in ("a", "task.001.callback", "0x9", "a" * MAX_ADDRESS_CHARS):
        check_address(good)
    for bad, text in (
        ("", "prefix must not be empty"),
        ("A", "name may only contain lowercase letters, digits, and dots"),
        ("a b", "name may only contain lowercase letters, digits, and dots"),
        ("a.", "prefix must start and end with a lowercase letter or digit"),
        ("a" * (MAX_ADDRESS_CHARS + 1), f"name must be at most {MAX_ADDRESS_CHARS} characters"),
    ):
        with pytest.raises(Mq9Error, match=f"^{text}$"):
            check_address(bad)


async def test_start_positions(mailboxes):
    mailboxes.create("pos", 0, "")
    assert mailboxes.start_position("pos", "latest", 0, 0) == 0
    for i in range(5):
        await put(mailboxes, "pos", b"m%d" % i)
    assert mailboxes.start_position("pos", "latest", 0, 0) == 4
    assert mailboxes.start_position("pos", "earliest", 0, 0) == 0
    assert mailboxes.start_position("pos", "from_id", 0, 3) == 3
    assert mailboxes.start_position("pos", "from_id", 0, 50) == 5
    assert mailboxes.start_position("pos", "from_time", 0, 0) == 0
    assert mailboxes.start_position("pos", "from_time", 2**40, 0) == 5


async def test_groups_exist_after_their_first_commit(mailboxes):
    mailboxes.create("grp", 0, "")
    for i in range(3):
        await put(mailboxes, "grp", b"m%d" % i)
    assert mailboxes.group_position("grp", "g") is None
    assert mailboxes.fetch_position("grp", "g", "earliest", 0, 0, False) == 0
    assert mailboxes.group_position("grp", "g") is None  # FETCH never commits
    await mailboxes.commit_group("grp", "g", 2)
    assert mailboxes.fetch_position("grp", "g", "earliest", 0, 0, False) == 2
    assert mailboxes.fetch_position("grp", "g", "earliest", 0, 0, True) == 0
    assert mailboxes.group_position("grp", "g") == 0  # force_deliver commits


async def test_an_expired_mailbox_is_gone_and_its_stream_deleted(mailboxes):
    box = mailboxes.create("old", 10, "")
    await put(mailboxes, "old", b"x")
    assert mailboxes.get("old") is box
    box.create_time -= 10
    assert mailboxes.get("old") is None
    assert [b.address for b in mailboxes.expired()] == ["old"]
    mailboxes.drop("old")
    assert not mailboxes.store.has_stream("old")
    fresh = mailboxes.create("old", 0, "")
    assert mailboxes.store.end_offset("old") == 0 and fresh.ttl == 0


async def test_mailboxes_are_found_again_after_reopening(tmp_path):
    settings = StoreSettings(data_dir=tmp_path / "data", fsync="never")
    store = Store(settings, index=False)
    await store.start()
    MailboxStore(store).create("kept", 3600, "desc", legacy_public=True)
    await store.stop()
    store = Store(settings, index=False)
    await store.start()
    try:
        (box,) = MailboxStore(store).open()
        assert (box.address, box.ttl, box.desc, box.legacy_public) == ("kept", 3600, "desc", True)
    finally:
        await store.stop()


def test_legacy_priority_comes_from_the_send_subject_or_the_level():
    legacy = Record(0, 0, b"", subject="$mq9.AI.MAILBOX.MSG.box.low", priority="normal")
    assert legacy_priority(legacy) == "low"
    assert legacy_priority(Record(0, 0, b"", subject="box", priority="critical")) == "high"
    assert legacy_priority(Record(0, 0, b"", subject="box", priority="urgent")) == "high"
    assert legacy_priority(Record(0, 0, b"", subject="box", priority="normal")) == "normal"


async def test_query_precedence(mailboxes):
    mailboxes.create("q", 0, "")
    await put(mailboxes, "q", b"a", tags=("t",))
    await put(mailboxes, "q", b"b", key="k")
    assert [r.payload for r in mailboxes.query("q", "k", ["t"], None, 100)] == [b"b"]
    assert [r.payload for r in mailboxes.query("q", None, ["t"], None, 100)] == [b"a"]
    assert [r.payload for r in mailboxes.query("q", None, None, None, 1)] == [b"a"]
