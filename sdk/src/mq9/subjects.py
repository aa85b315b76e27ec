"""Every subject the SDK speaks, built in one place.

mq9 mailboxes live under ``$mq9.AI.MSG.*``; agents, tasks, tools and pipelines under
``$mq9.AI.API.*``; agent instances are served on ``$mq9.AI.INVOKE.<name>.<instance>``.
"""

from __future__ import annotations

PREFIX = "$mq9.AI"
API = f"{PREFIX}.API"

MAILBOX_CREATE = f"{PREFIX}.MAILBOX.CREATE"
AGENT_REGISTER = f"{API}.AGENT.REGISTER"
AGENT_LIST = f"{API}.AGENT.LIST"
AGENT_DISCOVER = f"{API}.AGENT.DISCOVER"
INVOKE_BY_INTENT = f"{API}.INVOKE"
TOOL_REGISTER = f"{API}.TOOL.REGISTER"
TOOL_LIST = f"{API}.TOOL.LIST"
TOOL_DISCOVER = f"{API}.TOOL.DISCOVER"
PIPELINE_CREATE = f"{API}.PIPELINE.CREATE"
PIPELINE_LIST = f"{API}.PIPELINE.LIST"


def msg_send(address: str) -> str:
    return f"{PREFIX}.MSG.SEND.{address}"


def msg_fetch(address: str) -> str:
    return f"{PREFIX}.MSG.FETCH.{address}"


def msg_ack(address: str) -> str:
    return f"{PREFIX}.MSG.ACK.{address}"


def msg_query(address: str) -> str:
    return f"{PREFIX}.MSG.QUERY.{address}"


def msg_delete(address: str, msg_id: int) -> str:
    return f"{PREFIX}.MSG.DELETE.{address}.{msg_id}"


def agent_op(op: str, name: str) -> str:
    """``DEREGISTER``, ``INFO``, ``INVOKE``, ``HEARTBEAT`` or ``STATUS`` of one agent."""
    return f"{API}.AGENT.{op}.{name}"


def task_op(op: str, task_id: str) -> str:
    """``GET``, ``CANCEL`` or ``EVENTS`` of one task."""
    return f"{API}.TASK.{op}.{task_id}"


def task_event(task_id: str) -> str:
    """Where a working instance publishes progress of a task."""
    return f"{PREFIX}.TASK.EVENT.{task_id}"


def task_updates(task_id: str) -> str:
    """Where the broker republishes every recorded event of a task with its ``seq``."""
    return f"{PREFIX}.TASK.UPDATES.{task_id}"


def tool_op(op: str, name: str) -> str:
    """``INVOKE`` or ``HEARTBEAT`` of one tool."""
    return f"{API}.TOOL.{op}.{name}"


def pipeline_op(op: str, name: str) -> str:
    """``RUN``, ``GET``, ``DELETE`` (by name) or ``STATUS``, ``CANCEL`` (by run id)."""
    return f"{API}.PIPELINE.{op}.{name}"
