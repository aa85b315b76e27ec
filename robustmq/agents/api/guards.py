"""Who receives the agent layer's subjects live when users are configured (a ``DeliveryGuards`` source).

Requests to the broker (``$mq9.AI.API.*``, mq9 commands, task events) carry callers' inputs and
reach in-process services only; an owned agent's or tool's serve subjects reach its owner; a task's
update feed reaches its caller and its agent's owner. Mailbox subjects are mq9's own source, asked
before this one.
"""

from __future__ import annotations

from collections.abc import Callable

from robustmq.isolation import ONLY_IN_PROCESS, Guard, only_users

PREFIX = "$mq9.AI."
TASK_UPDATES = "TASK.UPDATES."
TASK_UPDATES_PREFIX = PREFIX + TASK_UPDATES
# legacy mq9 push subjects (MAILBOX.MSG.<address>.<priority>): mq9's mailbox guard decides them
LEGACY_PUSH = "MAILBOX.MSG."


class AgentSubjectGuards:
    """``owner_of(family, name)``: the user an agent (``INVOKE``) or tool (``TOOL``) is bound to.
    ``task_parties(task_id)``: the users entitled to a task's updates, None for an unknown task."""

    def __init__(
        self,
        owner_of: Callable[[str, str], str | None],
        task_parties: Callable[[str], tuple[str | None, ...] | None],
    ) -> None:
        self.owner_of = owner_of
        self.task_parties = task_parties

    def guard_for(self, subject: str) -> Guard | None:
        if not subject.startswith(PREFIX):
            return None
        rest = subject[len(PREFIX) :]
        if rest.startswith(LEGACY_PUSH):
            return None
        if rest.startswith(TASK_UPDATES):
            parties = self.task_parties(rest[len(TASK_UPDATES) :])
            return ONLY_IN_PROCESS if parties is None else only_users(*parties)
        family, _, tail = rest.partition(".")
        if family in ("INVOKE", "TOOL"):
            name = tail.partition(".")[0]
            owner = self.owner_of(family, name) if name else None
            return None if owner is None else only_users(owner)
        return ONLY_IN_PROCESS
