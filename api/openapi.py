"""The OpenAPI document, generated from the routes and adjusted to what the server answers.

Invalid input is a 400 problem (not FastAPI's 422); 401/403/413 are declared where they happen.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.problems import PROBLEM_MEDIA_TYPE, Problem

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_DESCRIPTIONS = {
    "400": "invalid request",
    "401": "missing or unknown credentials",
    "403": "the role does not allow this",
    "413": "request body too large",
    "500": "internal error",
}
_MUTATING = {"post", "put", "patch", "delete"}


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}}}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for defs_name, defs_schema in schemas["Problem"].pop("$defs", {}).items():
        schemas.setdefault(defs_name, defs_schema)
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for operations in doc.get("paths", {}).values():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            secured = bool(operation.get("security"))
            wanted = ["500"]
            if operation.get("parameters") or operation.get("requestBody"):
                wanted.append("400")
            if secured:
                wanted += ["401", "403"]
            if method in _MUTATING or operation.get("requestBody"):
                wanted.append("413")
            for code in wanted:
                responses.setdefault(code, _problem_response(_DESCRIPTIONS[code]))
            for code, response in responses.items():
                # problems a route declares itself (404, 409, ...) are problem documents too
                if code[:1] in "45" and "content" in response:
                    content = response["content"]
                    if "application/json" in content and PROBLEM_MEDIA_TYPE not in content:
                        content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    app.openapi_schema = doc
    return doc
