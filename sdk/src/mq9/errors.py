"""The exceptions the SDK raises, one class per broker error code.

Every failure the broker reports becomes an ``Mq9Error`` subclass chosen from its ``code``
(agent API replies) or from its text (mq9 mailbox replies, which carry no code).
"""

from __future__ import annotations

from typing import Any

BAD_REQUEST = 400
FORBIDDEN = 403
NOT_FOUND = 404
DEADLINE_EXCEEDED = 408
CONFLICT = 409
AGENT_FAILED = 502
UNAVAILABLE = 503


class Mq9Error(Exception):
    """A request failed. ``code`` is the broker's code, ``reply`` the whole error reply."""

    default_code = 0

    def __init__(self, text: str, code: int | None = None, reply: dict[str, Any] | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = self.default_code if code is None else code
        self.reply: dict[str, Any] = reply or {}

    @property
    def task_id(self) -> str | None:
        """The task the failure belongs to, when the broker named one."""
        value = self.reply.get("task_id")
        return str(value) if value else None

    @property
    def details(self) -> list[dict[str, Any]]:
        """Validation details (``[{"path", "message"}]``) of a 400, when the broker gave them."""
        return list(self.reply.get("details") or [])

    def __str__(self) -> str:
        return f"{self.text} (code {self.code})" if self.code else self.text


class BadRequest(Mq9Error):
    """400: the request (or a skill's input) does not match its schema."""

    default_code = BAD_REQUEST


class Forbidden(Mq9Error):
    """403: the authenticated user may not do this (another user's agent or mailbox)."""

    default_code = FORBIDDEN


class NotFound(Mq9Error):
    """404: no such agent, task, tool, pipeline or mailbox."""

    default_code = NOT_FOUND


class DeadlineExceeded(Mq9Error):
    """408: the deadline passed before the work finished."""

    default_code = DEADLINE_EXCEEDED


class Conflict(Mq9Error):
    """409: the thing exists already, or the task is already finished."""

    default_code = CONFLICT


class TaskFailed(Mq9Error):
    """502: the agent (or tool, or pipeline step) ran and reported an error."""

    default_code = AGENT_FAILED


class TaskCanceled(Mq9Error):
    """The task was cancelled before it finished."""


class NoLiveAgent(Mq9Error):
    """503: no live instance can take the call (and the call was not queued)."""

    default_code = UNAVAILABLE


_BY_CODE: dict[int, type[Mq9Error]] = {
    BAD_REQUEST: BadRequest,
    FORBIDDEN: Forbidden,
    NOT_FOUND: NotFound,
    DEADLINE_EXCEEDED: DeadlineExceeded,
    CONFLICT: Conflict,
    AGENT_FAILED: TaskFailed,
    UNAVAILABLE: NoLiveAgent,
}

# mq9 mailbox replies are {"error": "<text>"} without a code: the class comes from the text
_BY_TEXT: tuple[tuple[str, type[Mq9Error]], ...] = (
    ("does not exist", NotFound),
    ("not found", NotFound),
    ("already exists", Conflict),
    ("not authorized", Forbidden),
    ("permissions violation", Forbidden),
)


def error_class(code: int | None, text: str) -> type[Mq9Error]:
    """The exception class for a broker error: by code first, then by the words of the text."""
    if code in _BY_CODE:
        return _BY_CODE[code]
    lowered = text.lower()
    for words, cls in _BY_TEXT:
        if words in lowered:
            return cls
    return BadRequest if not code else Mq9Error


def error_from_reply(reply: dict[str, Any]) -> Mq9Error:
    """The exception for a reply whose ``error`` is not empty."""
    text = str(reply.get("error") or "unknown error")
    raw_code = reply.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    cls = error_class(code, text)
    return cls(text, code=code if code is not None else cls.default_code, reply=reply)


# texts of errors the SDK itself raises, in one place
CANNOT_CONNECT = "cannot connect to {servers}: {detail}"
NO_RESPONDERS = "no responders on {subject}: is the broker running with the agent layer?"
REQUEST_TIMEOUT = "no reply on {subject} within {timeout_s:g} s"
NOT_JSON = "the reply on {subject} is not a JSON object"
NOT_CONNECTED = "the client is not connected; use `async with Client(...)` or `await client.connect()`"
UNKNOWN_SKILL = "unknown skill {skill!r} of agent {agent}"
INVALID_INPUT = "invalid input for {what}: {detail}"
NOT_AN_OBJECT = "the input must be a JSON object"
TASK_CANCELED = "task canceled"
NO_SKILLS = "agent {agent} has no skills"
