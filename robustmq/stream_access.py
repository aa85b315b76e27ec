"""Which streams a user may read whole, over any protocol that reads streams (REST, Kafka).

What its user could receive over NATS: a stream is readable only when a subscription of the user
to every subject of the stream would be accepted (its subscribe permissions and the agent layer's
ownership of mailbox and serve subjects). Broker-internal streams (``$...``, or without subjects:
task journals, sessions, AMQP queues) are for admins only. With no users configured, all is open.
"""

from __future__ import annotations

from typing import Any

INTERNAL_PREFIX = "$"


def may_read_stream(
    name: str, subjects: list[str], user: str | None, permissions: Any, is_admin: bool, agent_api: Any
) -> bool:
    """``permissions``: the user's ``robustmq.auth.Permissions`` or None; ``agent_api``: the
    agent API service (its ``may_subscribe(user, subject)``), or None when it is not running."""
    if is_admin:
        return True
    if name.startswith(INTERNAL_PREFIX) or not subjects:
        return False
    for subject in subjects:
        if permissions is not None and not permissions.may_subscribe(subject):
            return False
        if agent_api is not None and not agent_api.may_subscribe(user, subject):
            return False
    return True
