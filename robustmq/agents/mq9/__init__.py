"""mq9: RobustMQ's mailbox-and-agent protocol as NATS request/reply under ``$mq9.AI``.

``service.Mq9Service`` is the broker component; the other modules are pure and testable alone.
"""

from robustmq.agents.mq9.service import Mq9Service

__all__ = ["Mq9Service"]
