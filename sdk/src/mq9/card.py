"""The skills and tools an agent declares, and the A2A AgentCard built from them.

A skill's id, name and description come from the decorated function and its docstring; its
input and output schemas from its type hints (``mq9.schema``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mq9.defaults import CONTENT_TYPE_JSON
from mq9.schema import FunctionSchema, describe

A2A_PROTOCOL_VERSION = "0.2.5"
# a name that is also a subject token: no dots, spaces or wildcards
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def check_name(name: str, what: str) -> str:
    if not _TOKEN.match(name):
        raise ValueError(f"{what} name {name!r} may only contain letters, digits, '-' and '_'")
    return name


def human_name(identifier: str) -> str:
    """``translate_text`` -> ``Translate text``."""
    words = identifier.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


@dataclass
class Skill:
    """One skill: what the card says about it, and how to call it."""

    id: str
    name: str
    description: str
    tags: list[str]
    examples: list[str]
    schema: FunctionSchema

    @classmethod
    def of(
        cls,
        fn: Callable[..., Any],
        *,
        id: str | None = None,
        name: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        examples: list[str] | None = None,
    ) -> Skill:
        skill_id = check_name(id or fn.__name__, "skill")
        summary, _ = describe(fn)
        return cls(
            id=skill_id,
            name=name or human_name(skill_id),
            description=description if description is not None else summary,
            tags=list(tags or []),
            examples=list(examples or []),
            schema=FunctionSchema.of(fn, skill_id),
        )

    def card_entry(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "tags": self.tags,
            "examples": self.examples,
            "inputModes": [CONTENT_TYPE_JSON],
            "outputModes": [CONTENT_TYPE_JSON],
        }


@dataclass
class Tool:
    """One tool: its registration body and how to call it."""

    name: str
    description: str
    schema: FunctionSchema
    max_concurrency: int | None = None
    instance_id: str = ""
    serve_subject: str = ""
    subscription: Any = field(default=None, repr=False)

    @classmethod
    def of(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        max_concurrency: int | None = None,
    ) -> Tool:
        tool_name = check_name(name or fn.__name__, "tool")
        summary, _ = describe(fn)
        return cls(
            name=tool_name,
            description=description if description is not None else summary,
            schema=FunctionSchema.of(fn, tool_name),
            max_concurrency=max_concurrency,
        )

    def registration(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "input_schema": self.schema.input_schema,
        }
        if self.schema.output_schema is not None:
            body["output_schema"] = self.schema.output_schema
        if self.max_concurrency is not None:
            body["max_concurrency"] = self.max_concurrency
        return body


def build_card(
    name: str,
    description: str,
    version: str,
    skills: list[Skill],
    *,
    url: str | None = None,
    provider: dict[str, str] | None = None,
    documentation_url: str | None = None,
) -> dict[str, Any]:
    """An A2A AgentCard for the agent's skills (JSON in and out, progress events streamed)."""
    card: dict[str, Any] = {
        "name": name,
        "description": description,
        "url": url or f"nats://$mq9.AI.API.AGENT.INVOKE.{name}",
        "version": version,
        "protocolVersion": A2A_PROTOCOL_VERSION,
        "capabilities": {"streaming": True, "pushNotifications": False, "stateTransitionHistory": True},
        "defaultInputModes": [CONTENT_TYPE_JSON],
        "defaultOutputModes": [CONTENT_TYPE_JSON],
        "skills": [s.card_entry() for s in skills],
    }
    if provider:
        card["provider"] = provider
    if documentation_url:
        card["documentationUrl"] = documentation_url
    return card


def skill_schemas(skills: list[Skill]) -> dict[str, Any]:
    """``{skill_id: {"input": schema, "output": schema}}``, kept in the registration's metadata."""
    out: dict[str, Any] = {}
    for s in skills:
        entry: dict[str, Any] = {"input": s.schema.input_schema}
        if s.schema.output_schema is not None:
            entry["output"] = s.schema.output_schema
        out[s.id] = entry
    return out
