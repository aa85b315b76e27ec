"""Pipeline definitions and templates without a network: validation, defaults, cycles, resolution."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robustmq.agents.pipelines import templates
from robustmq.agents.pipelines.runs import COMPLETED, RUNNING, Run, replay_runs
from robustmq.agents.pipelines.spec import InvalidPipeline, compile_pipeline, find_cycle


def compile_ok(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return compile_pipeline(body, **kw)


def problems(body: Any, **kw: Any) -> list[dict[str, str]]:
    with pytest.raises(InvalidPipeline) as info:
        compile_pipeline(body, **kw)
    return info.value.details


def test_defaults_fill_ids_inputs_needs_and_output():
    spec = compile_ok({"name": "p", "steps": [{"agent": "a"}, {"agent": "b", "needs": ["1"]}]})
    first, second = spec["steps"]
    assert first == {
        "id": "1", "agent": "a", "needs": [], "input": "$.input", "retries": 0,
        "on_offline": "fail", "on_error": "fail",
    }  # fmt: skip
    assert second["input"] == "$.steps.1.output"
    assert spec["output"] == "$.steps.2.output"


def test_a_reference_is_a_dependency_and_several_sinks_make_an_object_output():
    spec = compile_ok(
        {
            "name": "p",
            "steps": [
                {"id": "a", "agent": "x"},
                {"id": "b", "agent": "x"},
                {"id": "c", "agent": "x", "input": "$.steps.a.output.text"},
            ],
        }
    )
    assert spec["steps"][2]["needs"] == ["a"]
    assert spec["output"] == {"b": "$.steps.b.output", "c": "$.steps.c.output"}


def test_simple_form_runs_in_sequence():
    spec = compile_ok(
        {"name": "p", "steps": [
            {"agent": "a", "task": "t1", "input_from": "user"},
            {"agent": "b", "task": "t2", "input_from": "step.1.output"},
            {"agent": "c", "input_from": "user"},
        ]}
    )  # fmt: skip
    assert [s["needs"] for s in spec["steps"]] == [[], ["1"], ["2"]]
    assert [s["input"] for s in spec["steps"]] == ["$.input", "$.steps.1.output", "$.input"]
    assert spec["steps"][0]["skill"] == "t1"


def test_unknown_agents_and_tools_come_from_the_registries():
    found = problems(
        {"name": "p", "steps": [{"id": "a", "agent": "ghost"}, {"id": "b", "tool": "gone"}]},
        agent_known=lambda n: n == "real",
        tool_known=lambda n: False,
    )
    assert [p["path"] for p in found] == ["$.steps[0].agent", "$.steps[1].tool"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"name": "p"}, "$.steps"),
        ([], "$"),
        ({"name": "p", "steps": [{"id": "a"}]}, "$.steps[0]"),
        ({"name": "p", "steps": [{"id": "a", "agent": "x", "intent": "y"}]}, "$.steps[0]"),
        ({"name": "p", "steps": [{"id": "a", "tool": "t", "skill": "s"}]}, "$.steps[0].skill"),
        ({"name": "p", "steps": [{"id": "a", "agent": "x", "needs": "b"}]}, "$.steps[0].needs"),
        (
            {"name": "p", "steps": [{"id": "a", "agent": "x", "input": "$.steps.a.output"}]},
            "$.steps[0].input",
        ),
        (
            {"name": "p", "steps": [{"id": "a", "agent": "x", "for_each": "$.input", "input": "$.steps"}]},
            "$.steps[0].input",
        ),
        (
            {"name": "p", "steps": [{"id": "a", "agent": "x", "on_error": {"fallback": {}}}]},
            "$.steps[0].on_error",
        ),
        ({"name": "p", "steps": [{"id": "a", "agent": "x", "on_offline": "wait"}]}, "$.steps[0].on_offline"),
        ({"name": "p", "steps": [{"id": "a", "agent": "x", "retries": True}]}, "$.steps[0].retries"),
        ({"name": "p", "steps": [{"id": "a b", "agent": "x"}]}, "$.steps[0].id"),
        (
            {"name": "p", "steps": [{"id": "a", "agent": "x", "input": 1, "input_from": "user"}]},
            "$.steps[0].input_from",
        ),
    ],
)
def test_invalid_definitions_name_the_offending_path(body, path):
    assert path in [p["path"] for p in problems(body)]


def test_cycles_are_found_and_named():
    found = problems(
        {"name": "p", "steps": [
            {"id": "a", "agent": "x", "needs": ["c"]},
            {"id": "b", "agent": "x", "needs": ["a"]},
            {"id": "c", "agent": "x", "needs": ["b"]},
        ]}
    )  # fmt: skip
    assert found == [
        {"path": "$.steps", "message": "the steps wait for each other in a cycle: a -> c -> b -> a"}
    ]


@given(st.lists(st.lists(st.integers(0, 7), max_size=3), min_size=1, max_size=8))
def test_find_cycle_agrees_with_a_topological_sort(edges):
    steps = [
        {"id": str(i), "needs": [str(j) for j in deps if j < len(edges)]} for i, deps in enumerate(edges)
    ]
    needs = {s["id"]: set(s["needs"]) for s in steps}
    done: set[str] = set()
    while True:  # Kahn: peel steps whose needs are done
        ready = [sid for sid, deps in needs.items() if sid not in done and deps <= done]
        if not ready:
            break
        done.update(ready)
    acyclic = len(done) == len(steps)
    cycle = find_cycle(steps)
    assert (cycle is None) == acyclic
    if cycle:
        assert cycle[0] == cycle[-1]
        for here, there in zip(cycle, cycle[1:], strict=False):
            assert there in needs[here]


def test_templates_resolve_references_and_keep_literals():
    context = {"input": {"text": "hi", "items": [1, 2]}, "steps": {"t": {"output": {"words": ["a", "b"]}}}}
    template = {
        "whole": "$.input",
        "first": "$.steps.t.output.words[0]",
        "second": "$.steps.t.output.words.1",
        "missing": "$.steps.t.output.nothing.deeper",
        "literal": "$ not a reference",
        "list": ["$.input.text", 3, None, True],
    }
    assert templates.resolve(template, context) == {
        "whole": context["input"], "first": "a", "second": "b", "missing": None,
        "literal": "$ not a reference", "list": ["hi", 3, None, True],
    }  # fmt: skip


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)


@given(json_values)
def test_a_template_without_references_is_its_own_value(value):
    if not any(True for _ in templates.references(value)):
        assert templates.resolve(value, {"input": 1, "steps": {}}) == value


@given(json_values)
def test_input_is_read_back_whole(value):
    assert templates.resolve("$.input", {"input": value, "steps": {}}) == value


def test_checkpoint_records_replay_to_the_same_run():
    spec = compile_ok({"name": "p", "steps": [{"id": "a", "agent": "x"}, {"id": "b", "agent": "x"}]})
    run = Run("r1", spec, {"v": 1}, created_ms=10, deadline_ms=1000)
    a, b = run.steps["a"], run.steps["b"]
    a.task_ids, a.state, a.output, a.latency_ms = ["t1"], COMPLETED, 5, 1.5
    b.task_ids, b.state = ["t2"], RUNNING
    records = [run.start_record(), run.step_record(a), run.done_record(a), run.step_record(b)]
    again = replay_runs(records)["r1"]
    assert again.resumed and again.state == RUNNING
    assert again.steps["a"].state == COMPLETED and again.steps["a"].output == 5
    assert again.steps["b"].state == RUNNING and again.steps["b"].task_ids == ["t2"]
    assert again.context()["steps"] == {"a": {"output": 5}}
    run.state, run.output = COMPLETED, {"done": True}
    ended = replay_runs([*records, run.done_record(b), run.end_record()])["r1"]
    assert ended.finished and ended.output == {"done": True}


step_values = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["a", "b", "c", "", "a b", 3]),
        "agent": st.sampled_from(["x", "", None, 1]),
        "tool": st.sampled_from(["t", None]),
        "intent": st.sampled_from(["do it", "", None]),
        "needs": st.lists(st.sampled_from(["a", "b", "c", "z", 1]), max_size=3) | json_values,
        "input": json_values | st.sampled_from(["$.steps.a.output", "$.item", "$.nope", "$.input.x"]),
        "for_each": st.sampled_from(["$.input", "$.steps.b.output", "x", 1]),
        "on_error": st.sampled_from(["fail", "skip", "oops", {"fallback": {"agent": "x"}}, {"fallback": 1}]),
        "retries": st.sampled_from([0, 2, -1, "2", True]),
        "timeout_ms": st.sampled_from([1, 0, "1", None]),
        "input_from": st.sampled_from(["user", "step.1.output", "step.x", None]),
    },
)


@given(st.lists(step_values, max_size=5), json_values)
def test_any_body_compiles_or_is_rejected_with_details(steps, output):
    try:
        spec = compile_pipeline({"name": "p", "steps": steps, "output": output})
    except InvalidPipeline as exc:
        assert exc.details and all(set(d) == {"path", "message"} for d in exc.details)
        return
    assert find_cycle(spec["steps"]) is None
    ids = {s["id"] for s in spec["steps"]}
    for s in spec["steps"]:
        assert set(s["needs"]) <= ids and templates.referenced_steps(s["input"]) <= set(s["needs"]) | {
            s["id"]
        }
