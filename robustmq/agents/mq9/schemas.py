"""JSON Schemas of mq9 request bodies and their precompiled validators.

``decode(command, body)`` is the one entry point: bytes in, a dict out, or ``Mq9Error`` with
the texts of MQ9.md (``invalid <CMD> payload: ...``). Unknown fields are ignored.
"""

from __future__ import annotations

from typing import Any

import orjson

from robustmq.agents import inputs
from robustmq.agents.mq9 import errors

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
I64_MAX = 2**63 - 1


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"type": "null"}, schema]}


_STRING = {"type": "string"}
_U32 = {"type": "integer", "minimum": 0, "maximum": U32_MAX}
_U64 = {"type": "integer", "minimum": 0, "maximum": U64_MAX}

CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": _nullable(_STRING),
        "ttl": _nullable(_U64),
        "desc": _nullable(_STRING),
        "public": _nullable({"type": "boolean"}),
    },
}

DELIVER_POLICIES = ("earliest", "latest", "from_time", "from_id")

FETCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "group_name": _nullable(_STRING),
        "deliver": _nullable({"enum": list(DELIVER_POLICIES)}),
        "from_time": _nullable(_U64),
        "from_id": _nullable(_U64),
        "force_deliver": _nullable({"type": "boolean"}),
        "config": _nullable(
            {
                "type": "object",
                "properties": {"num_msgs": _nullable(_U32), "max_wait_ms": _nullable(_U64)},
            }
        ),
    },
}

ACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "group_name": _STRING,
        "mail_address": _STRING,
        "msg_id": {"type": "integer", "minimum": 0, "maximum": I64_MAX},
    },
    "required": ["group_name", "mail_address", "msg_id"],
}

QUERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "key": _nullable(_STRING),
        "tags": _nullable({"type": "array", "items": _STRING}),
        "since": _nullable(_U64),
        "limit": _nullable(_U32),
    },
}

AGENT_NAME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": _STRING},
    "required": ["name"],
}

REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": _STRING, "report_info": _nullable(_STRING)},
    "required": ["name"],
}

DISCOVER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": _nullable(_STRING),
        "semantic": _nullable(_STRING),
        "limit": _nullable(_U32),
        "page": _nullable(_U32),
    },
}

# REGISTER, second shape: {"name", "payload"} (the first shape is a bare A2A AgentCard)
REGISTER_WRAPPED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": _STRING, "payload": _STRING},
    "required": ["name", "payload"],
}

# The part of an A2A AgentCard the registry relies on; other fields are kept as sent.
AGENT_CARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": _STRING,
        "description": _STRING,
        "skills": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": _STRING,
                    "name": _STRING,
                    "description": _STRING,
                    "tags": {"type": "array", "items": _STRING},
                    "examples": {"type": "array", "items": _STRING},
                },
            },
        },
    },
    "required": ["name", "description", "skills"],
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "MAILBOX.CREATE": CREATE_SCHEMA,
    "MSG.FETCH": FETCH_SCHEMA,
    "MSG.ACK": ACK_SCHEMA,
    "MSG.QUERY": QUERY_SCHEMA,
    "AGENT.UNREGISTER": AGENT_NAME_SCHEMA,
    "AGENT.REPORT": REPORT_SCHEMA,
    "AGENT.DISCOVER": DISCOVER_SCHEMA,
}

# commands whose empty body means "all defaults"
EMPTY_MEANS_DEFAULTS = frozenset({"MAILBOX.CREATE", "MSG.QUERY", "AGENT.DISCOVER"})

# schema name -> schema: the commands' plus the two shapes of AGENT.REGISTER
_ALL_SCHEMAS: dict[str, dict[str, Any]] = {
    **SCHEMAS,
    "AgentCard": AGENT_CARD_SCHEMA,
    "AGENT.REGISTER wrapped": REGISTER_WRAPPED_SCHEMA,
}
_validators: dict[str, Any] = {}
_best_match: Any = None  # jsonschema.exceptions.best_match, once jsonschema is imported


def _validator(name: str) -> Any:
    """The compiled validator of a schema, built on first use: jsonschema takes about 50 ms to
    import, which a broker that never serves an mq9 command should not pay at start-up."""
    global _best_match
    validator = _validators.get(name)
    if validator is None:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import best_match

        _best_match = best_match
        validator = _validators[name] = Draft202012Validator(_ALL_SCHEMAS[name])
    return validator


def _first_error(validator: Any, value: Any) -> str | None:
    """The most relevant problem of ``value`` for ``validator`` (one made by ``_validator``)."""
    error = _best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def parse_json(command: str, body: bytes) -> Any:
    """The JSON value of a request body; too deep a body is refused before it is parsed."""
    if inputs.too_deep(body):
        raise errors.NESTED_TOO_DEEPLY.error(max=inputs.MAX_NESTING_DEPTH)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.invalid_payload(command, str(exc)) from None


def decode(command: str, body: bytes) -> dict[str, Any]:
    """The validated request object of ``command`` (``"MSG.FETCH"``, ...) from its body."""
    if not body.strip() and command in EMPTY_MEANS_DEFAULTS:
        return {}
    value = parse_json(command, body)
    problem = _first_error(_validator(command), value)
    if problem is not None:
        raise errors.invalid_payload(command, problem)
    return value


def is_agent_card(value: Any) -> bool:
    return _validator("AgentCard").is_valid(value)


def wrapped_registration_problem(value: Any) -> str | None:
    return _first_error(_validator("AGENT.REGISTER wrapped"), value)
