"""mq9: the Python SDK for agents on robustmq (skills, tools, mailboxes, tasks, pipelines).

Importing it connects to nothing and starts nothing; ``Agent.start()`` and ``Client.connect()`` do.
"""

from mq9.agent import Agent
from mq9.client import AgentMatch, Client, Invocation
from mq9.context import TaskContext
from mq9.errors import (
    BadRequest,
    Conflict,
    DeadlineExceeded,
    Forbidden,
    Mq9Error,
    NoLiveAgent,
    NotFound,
    TaskCanceled,
    TaskFailed,
)
from mq9.messages import Message
from mq9.task import Task, TaskEvent

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentMatch",
    "BadRequest",
    "Client",
    "Conflict",
    "DeadlineExceeded",
    "Forbidden",
    "Invocation",
    "Message",
    "Mq9Error",
    "NoLiveAgent",
    "NotFound",
    "Task",
    "TaskCanceled",
    "TaskContext",
    "TaskEvent",
    "TaskFailed",
]
