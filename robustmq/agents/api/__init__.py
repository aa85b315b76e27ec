"""The agent API (``$mq9.AI.API.*``): live agents, invocation as tracked tasks, NATS micro discovery.

``AgentApiService`` is the broker component; ``schemas`` holds the request and reply models the
control plane shares.
"""

from robustmq.agents.api.service import AgentApiService

__all__ = ["AgentApiService"]
