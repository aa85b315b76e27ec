"""``POST /api/v1/query``: read-only SQL over the message index, under the ``http.query_*`` limits.

The store checks the SQL (only its own views), runs it off the loop with memory, time and
result-size caps and hands back the rows already encoded, so this router only frames bytes.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from api.dependencies import BrokerDep, StoreDep
from api.problems import Problem

router = APIRouter(prefix="/query", tags=["query"])


class QueryRequest(BaseModel):
    sql: str = Field(
        min_length=1,
        max_length=100_000,
        description="one SELECT over messages, deletions and archive (sealed segments, with payloads)",
        examples=["SELECT stream, count(*) AS n FROM messages GROUP BY stream ORDER BY n DESC"],
    )
    max_rows: int | None = Field(None, ge=1, description="at most this many rows (capped by the server)")
    timeout_ms: int | None = Field(None, ge=1, description="give up after this long (capped by the server)")


class QueryResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    truncated: bool = Field(description="more rows matched than were returned (row or byte cap)")


@router.post(
    "",
    response_model=QueryResult,
    summary="run a read-only SQL query over the message index",
    responses={
        400: {
            "model": Problem,
            "description": "not a single SELECT over the index's views, or the SQL failed",
        },
        408: {"model": Problem, "description": "the query ran past its time limit"},
        413: {"model": Problem, "description": "the query needed more than its memory limit"},
        429: {"model": Problem, "description": "every query slot is taken; see Retry-After"},
    },
)
async def run_query(body: QueryRequest, store: StoreDep, broker: BrokerDep) -> Response:
    http = broker.settings.http
    max_rows = min(body.max_rows or http.query_max_rows, http.query_max_rows)
    timeout_ms = min(body.timeout_ms or http.query_timeout_ms, http.query_timeout_ms)
    result = await store.sql(
        body.sql, max_rows=max_rows, timeout_s=timeout_ms / 1000,
        max_result_bytes=http.query_max_result_bytes, as_json=True,
    )  # fmt: skip
    content = b"".join((
        b'{"columns":', orjson.dumps(result["columns"]), b',"rows":', result["rows_json"],
        b',"row_count":', str(result["row_count"]).encode(),
        b',"truncated":', b"true" if result["truncated"] else b"false", b"}",
    ))  # fmt: skip
    return Response(content, media_type="application/json")
