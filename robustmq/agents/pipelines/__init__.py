"""Pipelines in the broker: validated DAGs of agent, tool and intent steps, run durably as tasks.

``PipelineService`` adds the ``$mq9.AI.API.PIPELINE.*`` subjects to the agent API.
"""

from robustmq.agents.pipelines.service import PipelineService

__all__ = ["PipelineService"]
