"""Pipeline definitions: validating a CREATE body into a normalised spec, and the DAG order.

Pure (the registries are passed in as predicates). Every problem is collected as
``{"path", "message"}`` so one 400 reply lists them all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from robustmq.agents.api import limits as api_limits
from robustmq.agents.api.schemas import AGENT_NAME_PATTERN
from robustmq.agents.pipelines import limits, templates

_NAME = re.compile(AGENT_NAME_PATTERN)
_STEP_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_INPUT_FROM = re.compile(r"^step\.([A-Za-z0-9_-]+)\.output$")
TARGETS = ("agent", "tool", "intent")
STEP_FIELDS = frozenset(
    {"id", "agent", "skill", "tool", "intent", "input", "needs", "timeout_ms", "retries", "on_error",
     "for_each", "on_offline", "task", "input_from", "description"}
)  # fmt: skip


class InvalidPipeline(Exception):
    def __init__(self, details: list[dict[str, str]]) -> None:
        super().__init__(f"{len(details)} problem(s)")
        self.details = details


def compile_pipeline(
    body: Any,
    agent_known: Callable[[str], bool] = lambda _: True,
    tool_known: Callable[[str], bool] = lambda _: True,
) -> dict[str, Any]:
    """The normalised spec of a CREATE body; raises ``InvalidPipeline`` with every problem found.

    Normalised steps always have ``id``, exactly one target, ``input``, ``needs`` (including the
    steps their templates read), ``retries`` and ``on_error``; the spec always has ``output``.
    """
    problems: list[dict[str, str]] = []

    def bad(path: str, message: str) -> None:
        problems.append({"path": path, "message": message})

    if not isinstance(body, dict):
        raise InvalidPipeline([{"path": "$", "message": "the pipeline must be a JSON object"}])
    name = body.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > api_limits.MAX_AGENT_NAME_CHARS:
        bad("$.name", "a name of letters, digits, '_' and '-' is required")
    raw_steps = body.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        bad("$.steps", "a non-empty list of steps is required")
        raise InvalidPipeline(problems)
    if len(raw_steps) > limits.MAX_STEPS:
        bad("$.steps", f"at most {limits.MAX_STEPS} steps")
        raise InvalidPipeline(problems)

    steps: list[dict[str, Any]] = []
    paths: list[str] = []
    for i, raw in enumerate(raw_steps):
        path = f"$.steps[{i}]"
        if not isinstance(raw, dict):
            bad(path, "a step must be a JSON object")
            continue
        step = _normalise_step(raw, i, steps[-1]["id"] if steps else None, path, bad, agent_known, tool_known)
        steps.append(step)
        paths.append(path)

    ids = [s["id"] for s in steps]
    seen: set[str] = set()
    for step, path in zip(steps, paths, strict=True):
        if step["id"] in seen:
            bad(f"{path}.id", f"duplicate step id {step['id']!r}")
        seen.add(step["id"])
    id_set = set(ids)

    for step, path in zip(steps, paths, strict=True):
        for j, need in enumerate(step["needs"]):
            if need not in id_set:
                bad(f"{path}.needs[{j}]", f"unknown step {need!r}")
            elif need == step["id"]:
                bad(f"{path}.needs[{j}]", "a step cannot wait for itself")
        in_for_each = step.get("for_each") is not None
        # an input derived from ``needs`` reads only steps already checked there
        checked = ("input", "for_each") if step.pop("_input_given", True) else ("for_each",)
        for field in checked:
            for where, ref in templates.references(step.get(field)):
                problem = templates.reference_problem(ref, id_set, in_for_each and field == "input")
                if problem:
                    bad(f"{path}.{field}{where}", problem)
        read = templates.referenced_steps(step["input"]) | templates.referenced_steps(step.get("for_each"))
        read.discard(step["id"])
        for sid in sorted(read & id_set):
            if sid not in step["needs"]:
                step["needs"].append(sid)
        if templates.referenced_steps(step["input"]) & {step["id"]}:
            bad(f"{path}.input", "a step cannot read its own output")

    output = body.get("output")
    if output is None:
        sinks = [s["id"] for s in steps if not any(s["id"] in o["needs"] for o in steps)]
        output = (
            f"$.steps.{sinks[0]}.output" if len(sinks) == 1 else {s: f"$.steps.{s}.output" for s in sinks}
        )
    for where, ref in templates.references(output):
        problem = templates.reference_problem(ref, id_set, False)
        if problem:
            bad(f"$.output{where}", problem)

    if not problems:
        cycle = find_cycle(steps)
        if cycle:
            bad("$.steps", "the steps wait for each other in a cycle: " + " -> ".join(cycle))
    if problems:
        raise InvalidPipeline(problems)
    spec: dict[str, Any] = {"name": name, "steps": steps, "output": output}
    if isinstance(body.get("description"), str):
        spec["description"] = body["description"]
    return spec


def _normalise_step(
    raw: dict[str, Any],
    index: int,
    previous: str | None,
    path: str,
    bad: Callable[[str, str], None],
    agent_known: Callable[[str], bool],
    tool_known: Callable[[str], bool],
) -> dict[str, Any]:
    step: dict[str, Any] = {}
    for key in raw:
        if key not in STEP_FIELDS:
            bad(f"{path}.{key}", f"unknown step field {key!r}")
    sid = raw.get("id", str(index + 1))
    if not isinstance(sid, str) or not _STEP_ID.match(sid) or len(sid) > limits.MAX_STEP_ID_CHARS:
        bad(f"{path}.id", "a step id of letters, digits, '_' and '-' is required")
        sid = f"#{index}"
    step["id"] = sid
    targets = [t for t in TARGETS if raw.get(t) is not None]
    if not targets:
        bad(path, "a step needs an agent, a tool or an intent")
    elif len(targets) > 1:
        bad(path, f"a step has one target, not {' and '.join(targets)}")
    for target in targets:
        value = raw[target]
        if target == "intent":
            if not isinstance(value, str) or not value.strip():
                bad(f"{path}.intent", "an intent is a non-empty text")
        elif not isinstance(value, str) or not _NAME.match(value):
            bad(
                f"{path}.{target}",
                f"an {target} name is required" if target == "agent" else "a tool name is required",
            )
        elif target == "agent" and not agent_known(value):
            bad(f"{path}.agent", f"unknown agent {value!r}")
        elif target == "tool" and not tool_known(value):
            bad(f"{path}.tool", f"unknown tool {value!r}")
        step[target] = value
    skill = raw.get("skill", raw.get("task"))
    if skill is not None:
        if not isinstance(skill, str) or not skill:
            bad(f"{path}.skill", "a skill is a non-empty string")
        elif "tool" in step:
            bad(f"{path}.skill", "a tool step has no skill")
        step["skill"] = skill

    needs = raw.get("needs")
    input_from = raw.get("input_from")
    if needs is None:
        needs = [previous] if input_from is not None and previous is not None else []
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        bad(f"{path}.needs", "needs is a list of step ids")
        needs = []
    step["needs"] = list(dict.fromkeys(needs))

    if "input" in raw:
        if input_from is not None:
            bad(f"{path}.input_from", "give input or input_from, not both")
        step["input"] = raw["input"]
    elif input_from is not None:
        if input_from == "user":
            step["input"] = "$.input"
        elif isinstance(input_from, str) and _INPUT_FROM.match(input_from):
            step["input"] = f"$.steps.{_INPUT_FROM.match(input_from).group(1)}.output"  # type: ignore[union-attr]
        else:
            bad(f"{path}.input_from", 'input_from is "user" or "step.<id>.output"')
            step["input"] = None
    else:
        step["input"] = _default_input(step["needs"], raw.get("for_each") is not None)
        step["_input_given"] = False

    for_each = raw.get("for_each")
    if for_each is not None:
        if not templates.is_reference(for_each):
            bad(f"{path}.for_each", "for_each is a reference such as $.input.items")
        step["for_each"] = for_each

    timeout_ms = raw.get("timeout_ms")
    if timeout_ms is not None:
        if not _is_int(timeout_ms) or not 1 <= timeout_ms <= limits.MAX_RUN_TIMEOUT_MS:
            bad(f"{path}.timeout_ms", f"timeout_ms is an integer from 1 to {limits.MAX_RUN_TIMEOUT_MS}")
        step["timeout_ms"] = timeout_ms
    retries = raw.get("retries", 0)
    if not _is_int(retries) or not 0 <= retries <= limits.MAX_STEP_RETRIES:
        bad(f"{path}.retries", f"retries is an integer from 0 to {limits.MAX_STEP_RETRIES}")
        retries = 0
    step["retries"] = retries
    on_offline = raw.get("on_offline", "fail")
    if on_offline not in ("fail", "queue"):
        bad(f"{path}.on_offline", 'on_offline is "fail" or "queue"')
    step["on_offline"] = on_offline
    step["on_error"] = _on_error(raw.get("on_error", "fail"), f"{path}.on_error", bad, agent_known)
    return step


def _default_input(needs: list[str], for_each: bool) -> Any:
    """A step without ``input`` reads its item, the run's input, or what it waits for."""
    if for_each:
        return "$.item"
    if not needs:
        return "$.input"
    if len(needs) == 1:
        return f"$.steps.{needs[0]}.output"
    return {n: f"$.steps.{n}.output" for n in needs}


def _on_error(
    value: Any, path: str, bad: Callable[[str, str], None], agent_known: Callable[[str], bool]
) -> Any:
    if value in ("fail", "skip"):
        return value
    fallback = value.get("fallback") if isinstance(value, dict) and len(value) == 1 else None
    if not isinstance(fallback, dict) or len(fallback) != 1 or not ({"agent", "intent"} & set(fallback)):
        bad(path, 'on_error is "fail", "skip" or {"fallback": {"agent": <name>} | {"intent": <text>}}')
        return "fail"
    if "agent" in fallback:
        agent = fallback["agent"]
        if not isinstance(agent, str) or not _NAME.match(agent):
            bad(f"{path}.fallback.agent", "an agent name is required")
        elif not agent_known(agent):
            bad(f"{path}.fallback.agent", f"unknown agent {agent!r}")
    elif not isinstance(fallback["intent"], str) or not fallback["intent"].strip():
        bad(f"{path}.fallback.intent", "an intent is a non-empty text")
    return {"fallback": dict(fallback)}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def find_cycle(steps: list[dict[str, Any]]) -> list[str] | None:
    """A cycle of step ids through ``needs`` (first id repeated at the end), or None."""
    needs = {s["id"]: s["needs"] for s in steps}
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(sid: str) -> list[str] | None:
        state[sid] = 1
        stack.append(sid)
        for dep in needs.get(sid, ()):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep in needs and state.get(dep) is None:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[sid] = 2
        return None

    for sid in needs:
        if state.get(sid) is None:
            found = visit(sid)
            if found:
                return found
    return None
