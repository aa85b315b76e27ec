"""Error codes and texts of the agent API, in one place.

Every failure reply is ``{"error": "<text>", "code": <code>}`` plus any fields the operation adds.
"""

from __future__ import annotations

BAD_REQUEST = 400
FORBIDDEN = 403
NOT_FOUND = 404
DEADLINE_EXCEEDED = 408
CONFLICT = 409
AGENT_FAILED = 502
NO_LIVE_INSTANCE = 503
UNAVAILABLE = 503
INTERNAL_ERROR = 500


class ApiError(Exception):
    """A request failed with a code and a text; ``extra`` fields go into the reply as well."""

    def __init__(self, code: int, text: str, **extra: object) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.extra = extra

    def reply(self) -> dict[str, object]:
        return {"error": self.text, "code": self.code, **self.extra}


# texts (formatted with str.format where they take arguments)
INVALID_JSON = "invalid request: {detail}"
INVALID_FIELD = "invalid request: {detail}"
INT_TOO_LARGE = "invalid request: {where}: integer beyond 64 bits (send it as a string)"
UNKNOWN_SUBJECT = "unknown agent API subject: {subject}"
MISSING_NAME = "invalid request: the subject must end with a name"
UNKNOWN_AGENT = "agent {name} not found"
UNKNOWN_INSTANCE = "instance {instance_id} of agent {name} not found"
UNKNOWN_TASK = "task {task_id} not found"
STORE_UNAVAILABLE = "the store could not keep the task: not accepted"
AGENT_NAME_TAKEN = "agent {name} belongs to another user"
MAILBOX_TAKEN = "mailbox {address} belongs to another user"
NOT_AUTHORIZED = "not authorized for agent {name}"
NOT_AUTHORIZED_TASK = "not authorized for task {task_id}"
INSTANCE_DOWN = "instance {instance_id} of agent {name} is down; register again"
NO_LIVE = "no live instance of agent {name}"
NO_AGENT_FOR_INTENT = "no live agent matches the intent"
DEADLINE = "deadline exceeded"
INSTANCE_LOST = "instance {instance_id} went down while working on the task"
TASK_FINISHED = "task {task_id} is already {state}"
TASK_CANCELED = "task canceled"
AGENT_ERROR = "agent error: {detail}"
BAD_AGENT_REPLY = "agent sent an invalid reply"
# checked before parsing (robustmq.agents.inputs), for the tool and pipeline subjects too
NESTED_TOO_DEEPLY = "request nested too deeply (max {max})"
SUBJECT_NOT_UTF8 = "invalid subject: not valid UTF-8: {subject}"
AGENT_REPLY_TOO_DEEP = "agent sent an invalid reply: nested too deeply (max {max})"
NOT_STORABLE = "invalid request: it cannot be stored as JSON: {reason}"
UNENCODABLE_REPLY = "internal error: the reply cannot be encoded as JSON: {reason}"
INTERNAL = "internal error"
BROKER_RESTARTED = "deadline passed while the broker was down"
