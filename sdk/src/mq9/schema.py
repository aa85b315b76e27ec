"""A decorated function's JSON Schema, input validation and output encoding, from its type hints.

The input of a skill or tool is an object whose keys are the function's parameters; pydantic
builds the schema and checks the input before the function runs.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

from mq9 import errors
from mq9.context import TaskContext


@functools.cache
def _any_adapter() -> TypeAdapter[Any]:
    return TypeAdapter(Any)


class InputError(errors.BadRequest):
    """The input does not match the function's schema; ``details`` lists each violation."""


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # a hint names something only the caller's scope knows
        out: dict[str, Any] = {}
        for name, value in getattr(fn, "__annotations__", {}).items():
            if isinstance(value, str):
                value = fn.__globals__.get(value, Any) if hasattr(fn, "__globals__") else Any
            out[name] = value
        return out


def _is_context(annotation: Any) -> bool:
    """``TaskContext``, or ``TaskContext | None``."""
    if annotation is TaskContext:
        return True
    return TaskContext in typing.get_args(annotation) and all(
        a in (TaskContext, type(None)) for a in typing.get_args(annotation)
    )


def _is_model(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, BaseModel)


def _details(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"path": "/".join(str(p) for p in e["loc"]) or "/", "message": e["msg"]}
        for e in exc.errors(include_url=False)
    ]


def _summary(details: list[dict[str, str]]) -> str:
    return "; ".join(f"{d['path']}: {d['message']}" for d in details)


def describe(fn: Callable[..., Any]) -> tuple[str, str]:
    """``(summary, description)`` of a function from its docstring."""
    doc = inspect.getdoc(fn) or ""
    summary = doc.strip().split("\n\n", 1)[0].replace("\n", " ").strip()
    return summary, doc.strip()


@dataclass
class FunctionSchema:
    """How to call one function with a JSON input, and what it returns."""

    fn: Callable[..., Any]
    input_model: type[BaseModel]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    context_param: str | None
    # a function whose only parameter is a pydantic model takes the whole input as that model
    whole_input_param: str | None
    is_async: bool

    @classmethod
    def of(cls, fn: Callable[..., Any], name: str | None = None) -> FunctionSchema:
        hints = _hints(fn)
        signature = inspect.signature(fn)
        fields: dict[str, Any] = {}
        context_param = None
        for param in signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"{fn.__name__}: *args and **kwargs cannot be described by a schema")
            annotation = hints.get(param.name, Any)
            if _is_context(annotation):
                context_param = param.name
                continue
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (annotation, default)
        title = name or fn.__name__
        whole = None
        if len(fields) == 1:
            ((only, (annotation, _)),) = fields.items()
            if _is_model(annotation):
                whole = only
        if whole is not None:
            model: type[BaseModel] = fields[whole][0]
        else:
            model = create_model(  # type: ignore[call-overload]
                f"{title}_input", __config__=ConfigDict(extra="forbid"), **fields
            )
        input_schema = model.model_json_schema()
        output_schema = None
        returns = hints.get("return", Any)
        if returns not in (Any, None, type(None), inspect.Signature.empty):
            try:
                output_schema = TypeAdapter(returns).json_schema(mode="serialization")
            except Exception:  # not describable: the output travels without a schema
                output_schema = None
        return cls(
            fn=fn,
            input_model=model,
            input_schema=input_schema,
            output_schema=output_schema,
            context_param=context_param,
            whole_input_param=whole,
            is_async=inspect.iscoroutinefunction(fn),
        )

    def bind(self, data: Any, what: str) -> dict[str, Any]:
        """The keyword arguments for an input object; ``InputError`` when it does not fit."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InputError(errors.INVALID_INPUT.format(what=what, detail=errors.NOT_AN_OBJECT))
        if self.whole_input_param is not None:
            name = self.whole_input_param
            fields = self.input_model.model_fields
            if list(data) == [name] and name not in fields and isinstance(data[name], dict):
                data = data[name]  # also accept {"<param>": {...}}
        try:
            validated = self.input_model.model_validate(data)
        except ValidationError as exc:
            details = _details(exc)
            raise InputError(
                errors.INVALID_INPUT.format(what=what, detail=_summary(details)),
                reply={"details": details},
            ) from None
        if self.whole_input_param is not None:
            return {self.whole_input_param: validated}
        return {name: getattr(validated, name) for name in type(validated).model_fields}

    @staticmethod
    def dump_output(value: Any) -> Any:
        """A return value as JSON-ready data (pydantic models and dataclasses included)."""
        return _any_adapter().dump_python(value, mode="json")
