"""The mailbox worker behind ``@agent.on_message``: fetch in priority order, handle, then ACK safely.

mq9's ACK is cumulative across priorities, so the worker acks only up to an offset below which
every message is known to be handled; a handler that raises gets the message again later.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mq9 import defaults
from mq9.logs import logger
from mq9.messages import Message

log = logger.getChild("worker")

Handler = Callable[[Message], Awaitable[Any] | Any]
_RANK = {p: i for i, p in enumerate(defaults.PRIORITIES)}


def safe_ack_id(batch: Sequence[Message], handled: set[int], full: bool) -> int | None:
    """The highest msg_id that can be acked without skipping an unhandled message, or None.

    A batch that is not full holds every visible message from the group's position. A full one
    ends inside some priority level: every message of the levels above is in it, and of its last
    level those up to the last one returned; lower levels are unknown. When that last level is
    ``normal`` (the lowest) everything up to its last offset is known, otherwise nothing is.
    """
    if not batch:
        return None
    ids = [m.msg_id for m in batch]
    if full:
        lowest = max(batch, key=lambda m: _RANK.get(m.priority, len(_RANK)))
        if _RANK.get(lowest.priority, len(_RANK)) != len(_RANK) - 1:
            return None
        bound = max(m.msg_id for m in batch if m.priority == lowest.priority)
        ids = [i for i in ids if i <= bound]
    best = None
    for msg_id in sorted(ids):
        if msg_id not in handled:
            break
        best = msg_id
    return best


class MailboxWorker:
    """Runs one handler over one mailbox for one consumer group, until ``stop()``."""

    def __init__(
        self,
        client: Any,
        mailbox: str,
        group: str,
        handler: Handler,
        *,
        batch: int = defaults.FETCH_BATCH,
        deliver: str = "earliest",
        max_attempts: int = defaults.MAX_DELIVERY_ATTEMPTS,
        max_batch: int = defaults.FETCH_MAX_BATCH,
        name: str = "",
    ) -> None:
        self.client = client
        self.mailbox = mailbox
        self.group = group
        self.handler = handler
        self.batch = batch
        self.deliver = deliver
        self.max_attempts = max_attempts
        self.max_batch = max(batch, max_batch)
        self.name = name
        self.handled_count = 0
        self.failed_count = 0
        self._handled: set[int] = set()
        self._attempts: dict[int, int] = {}
        self._acked = -1
        self._num = batch
        self._stopping = False
        self._busy = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mq9-mailbox-{self.mailbox}")

    async def stop(self) -> None:
        """Finish the message in hand, ack what is handled, and return."""
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        if not self._busy:
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def _call(self, msg: Message) -> None:
        if inspect.iscoroutinefunction(self.handler):
            await self.handler(msg)
        else:
            result = await asyncio.to_thread(self.handler, msg)
            if inspect.isawaitable(result):
                await result

    async def _run(self) -> None:
        while not self._stopping:
            try:
                outcome = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker restarting, connection lost: try again
                log.debug("fetch failed: %s", exc, extra={"mailbox": self.mailbox})
                await asyncio.sleep(defaults.RETRY_AFTER_ERROR_S)
                continue
            if outcome == "failed" and not self._stopping:
                await asyncio.sleep(defaults.REDELIVERY_BACKOFF_S)

    async def step(self) -> str:
        """One round: fetch, handle, ack. ``"empty"``, ``"handled"``, or ``"failed"`` (a handler raised)."""
        num = self._num
        messages = await self.client.fetch(
            self.mailbox, group=self.group, num=num, deliver=self.deliver, max_wait_ms=defaults.FETCH_WAIT_MS
        )
        if not messages:
            return "empty"
        self._busy = True
        try:
            failed = await self._handle(messages)
            await self._ack(messages, full=len(messages) >= num)
        finally:
            self._busy = False
        return "failed" if failed else "handled"

    async def _handle(self, messages: list[Message]) -> bool:
        """Handle the batch in order; stop at the first failure (it comes first again next fetch)."""
        for msg in messages:
            if msg.msg_id in self._handled:
                continue
            if self._stopping:
                return False
            try:
                await self._call(msg)
            except Exception:
                attempts = self._attempts.get(msg.msg_id, 0) + 1
                self._attempts[msg.msg_id] = attempts
                self.failed_count += 1
                if attempts < self.max_attempts:
                    log.warning(
                        "mailbox handler raised; the message will be delivered again",
                        exc_info=True,
                        extra={"mailbox": self.mailbox, "msg_id": msg.msg_id, "attempt": attempts},
                    )
                    return True
                log.error(
                    "mailbox handler raised %d times; message dropped", attempts, exc_info=True,
                    extra={"mailbox": self.mailbox, "msg_id": msg.msg_id},
                )  # fmt: skip
            self._handled.add(msg.msg_id)
            self.handled_count += 1
        return False

    async def _ack(self, messages: list[Message], full: bool) -> None:
        ack_id = safe_ack_id(messages, self._handled, full)
        if ack_id is not None and ack_id > self._acked:
            await self._commit(ack_id)
        elif full and all(m.msg_id in self._handled for m in messages):
            if self._num < self.max_batch:
                # a full batch of higher priorities, all handled: look further for an ackable point
                self._num = min(self._num * 2, self.max_batch)
                return
            # A backlog of higher priorities larger than the biggest batch: mq9 cannot show what
            # lies below it without an ACK, so move on, past lower-priority messages if any.
            forced = safe_ack_id(messages, self._handled, full=False)
            if forced is not None and forced > self._acked:
                log.warning(
                    "higher-priority backlog exceeds %d messages; acking past it may skip lower-priority "
                    "messages below msg_id %d", self.max_batch, forced,
                    extra={"mailbox": self.mailbox, "msg_id": forced},
                )  # fmt: skip
                await self._commit(forced)

    async def _commit(self, ack_id: int) -> None:
        try:
            await self.client.ack(self.mailbox, group=self.group, msg_id=ack_id)
        except Exception as exc:  # the group stays where it was: the batch comes again
            log.warning("ack failed: %s", exc, extra={"mailbox": self.mailbox, "msg_id": ack_id})
            return
        self._acked = ack_id
        self._handled = {i for i in self._handled if i > ack_id}
        self._attempts = {i: n for i, n in self._attempts.items() if i > ack_id}
        self._num = self.batch
