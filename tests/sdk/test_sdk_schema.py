"""Unit tests: JSON Schema and input validation from a function's type hints (no broker)."""

from __future__ import annotations

from typing import Literal

import pytest
from mq9 import BadRequest, TaskContext
from mq9.schema import FunctionSchema
from pydantic import BaseModel


class Order(BaseModel):
    item: str
    qty: int = 1


async def translate(text: str, target: str = "fr", ctx: TaskContext | None = None) -> dict:
    """Translate text into the target language.

    Longer notes that stay out of the summary.
    """
    return {"text": text}


def place(order: Order) -> Order:
    return order


def mixed(order: Order, note: str = "") -> str:
    return note


def test_schema_lists_parameters_with_required_and_defaults():
    s = FunctionSchema.of(translate)
    schema = s.input_schema
    assert schema["type"] == "object"
    assert schema["properties"]["text"]["type"] == "string"
    assert schema["properties"]["target"]["default"] == "fr"
    assert schema["required"] == ["text"]
    assert schema["additionalProperties"] is False


def test_optional_task_context_parameter_is_not_part_of_the_input():
    s = FunctionSchema.of(translate)
    assert s.context_param == "ctx"
    assert "ctx" not in s.input_schema["properties"]


async def with_ctx(text: str, ctx: TaskContext) -> str:
    return text


def test_task_context_typed_parameter_is_excluded_from_the_schema():
    s = FunctionSchema.of(with_ctx)
    assert s.context_param == "ctx"
    assert list(s.input_schema["properties"]) == ["text"]


def test_output_schema_comes_from_the_return_hint():
    assert FunctionSchema.of(translate).output_schema == {"type": "object", "additionalProperties": True}
    assert FunctionSchema.of(place).output_schema["properties"]["item"]["type"] == "string"


def test_no_return_hint_means_no_output_schema():
    def anything(x):
        return x

    assert FunctionSchema.of(anything).output_schema is None


def test_bind_validates_and_applies_defaults():
    s = FunctionSchema.of(translate)
    assert s.bind({"text": "hi"}, "skill translate") == {"text": "hi", "target": "fr"}


def test_bind_rejects_wrong_types_with_details_per_field():
    s = FunctionSchema.of(translate)
    with pytest.raises(BadRequest) as info:
        s.bind({"target": 3}, "skill translate")
    paths = {d["path"] for d in info.value.details}
    assert paths == {"text", "target"}
    assert "skill translate" in info.value.text
    assert info.value.code == 400


def test_bind_rejects_unknown_keys():
    with pytest.raises(BadRequest):
        FunctionSchema.of(translate).bind({"text": "a", "colour": "red"}, "skill translate")


def test_bind_rejects_an_input_that_is_not_an_object():
    with pytest.raises(BadRequest, match="JSON object"):
        FunctionSchema.of(translate).bind(["hi"], "skill translate")


def test_sole_model_parameter_takes_the_whole_input_as_the_model():
    s = FunctionSchema.of(place)
    assert s.input_schema["title"] == "Order"
    assert s.bind({"item": "tea"}, "x") == {"order": Order(item="tea", qty=1)}
    # the wrapped form {"order": {...}} is accepted too
    assert s.bind({"order": {"item": "tea", "qty": 2}}, "x") == {"order": Order(item="tea", qty=2)}


def test_model_parameter_among_others_takes_its_key_as_the_model():
    s = FunctionSchema.of(mixed)
    kwargs = s.bind({"order": {"item": "tea"}, "note": "n"}, "x")
    assert kwargs == {"order": Order(item="tea"), "note": "n"}
    with pytest.raises(BadRequest):
        s.bind({"order": {"qty": "many"}}, "x")


def test_literal_and_list_hints_become_enum_and_array():
    def pick(colour: Literal["red", "green"], sizes: list[int]) -> None: ...

    schema = FunctionSchema.of(pick).input_schema
    assert schema["properties"]["colour"]["enum"] == ["red", "green"]
    assert schema["properties"]["sizes"] == {"items": {"type": "integer"}, "title": "Sizes", "type": "array"}


def test_varargs_cannot_be_described():
    def loose(*args, **kwargs): ...

    with pytest.raises(TypeError):
        FunctionSchema.of(loose)


def test_output_of_models_and_containers_becomes_json_data():
    assert FunctionSchema.dump_output(Order(item="a")) == {"item": "a", "qty": 1}
    assert FunctionSchema.dump_output([Order(item="b")]) == [{"item": "b", "qty": 1}]
