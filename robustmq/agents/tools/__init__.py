"""Tools in the broker: a registry of JSON-Schema-typed tools with live instances, and checked calls.

``ToolService`` adds the ``$mq9.AI.API.TOOL.*`` subjects to the agent API and reuses its tasks.
"""

from robustmq.agents.tools.service import ToolService

__all__ = ["ToolService"]
