"""Unit tests: the mailbox worker against a model of mq9's FETCH/ACK semantics (no broker).

The model follows the wire reference: a FETCH returns critical, then urgent, then normal messages
from the group's position, each level in msg_id order, capped at ``num``; ACK moves the position
of every level to ``msg_id + 1``. Whatever the mix of priorities, batch size and handler failures,
the worker handles every message, never skips one, and always makes progress.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from mq9 import Message
from mq9.defaults import PRIORITIES
from mq9.worker import MailboxWorker


class ModelMailbox:
    def __init__(self, priorities: list[str]) -> None:
        self.messages = [Message(msg_id=i, payload=b"", priority=p) for i, p in enumerate(priorities)]
        self.position = 0
        self.fetches = 0

    async def fetch(self, mailbox, *, group, num, deliver, max_wait_ms):
        self.fetches += 1
        out: list[Message] = []
        for level in PRIORITIES:
            for m in self.messages:
                if m.priority == level and m.msg_id >= self.position and len(out) < num:
                    out.append(m)
        return out

    async def ack(self, mailbox, *, group, msg_id):
        self.position = max(self.position, msg_id + 1)


def drive(
    priorities: list[str], batch: int, failing: set[int], max_batch: int
) -> tuple[ModelMailbox, list[int]]:
    mailbox = ModelMailbox(priorities)
    done: list[int] = []
    failed_once: set[int] = set()

    async def handler(msg: Message) -> None:
        if msg.msg_id in failing and msg.msg_id not in failed_once:
            failed_once.add(msg.msg_id)
            raise RuntimeError("once")
        done.append(msg.msg_id)

    async def run() -> None:
        worker = MailboxWorker(mailbox, "box", "g", handler, batch=batch, max_attempts=3, max_batch=max_batch)
        for _ in range(10_000):
            if await worker.step() == "empty":
                return
        raise AssertionError("the worker made no progress")

    asyncio.run(run())
    return mailbox, done


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(PRIORITIES), max_size=40),
    st.integers(min_value=1, max_value=8),
    st.sets(st.integers(min_value=0, max_value=39), max_size=6),
)
def test_every_message_is_handled_exactly_once_and_acked(priorities, batch, failing):
    mailbox, done = drive(priorities, batch, failing, max_batch=1000)
    assert sorted(done) == list(range(len(priorities)))
    assert mailbox.position == len(priorities)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(PRIORITIES), min_size=1, max_size=40), st.integers(min_value=1, max_value=8))
def test_each_level_is_handled_in_msg_id_order(priorities, batch):
    _, done = drive(priorities, batch, set(), max_batch=1000)
    for level in PRIORITIES:
        ids = [i for i in done if priorities[i] == level]
        assert ids == sorted(ids)


def test_a_backlog_of_critical_messages_larger_than_the_biggest_batch_still_moves():
    # 30 critical messages above one normal message, batches of at most 4: the worker cannot see
    # below the backlog without acking, so it moves on (logging that lower messages may be skipped)
    priorities = ["normal"] + ["critical"] * 30
    mailbox, done = drive(priorities, batch=2, failing=set(), max_batch=4)
    assert set(range(1, 31)) <= set(done)
    assert mailbox.position == 31
