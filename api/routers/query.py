"""``POST /api/v1/query``: read-only SQL over the message index, with a row cap and a time limit.

The store refuses all but one SELECT and runs it off the loop; the caps come from ``http.query_*``.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import uuid
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.dependencies import BrokerDep, StoreDep
from api.problems import Problem

router = APIRouter(prefix="/query", tags=["query"])


class QueryRequest(BaseModel):
    sql: str = Field(
        min_length=1,
        max_length=100_000,
        description="one SELECT over messages, deletions, streams (and archive once segments are sealed)",
        examples=["SELECT stream, count(*) AS n FROM messages GROUP BY stream ORDER BY n DESC"],
    )
    max_rows: int | None = Field(None, ge=1, description="at most this many rows (capped by the server)")
    timeout_ms: int | None = Field(None, ge=1, description="give up after this long (capped by the server)")


class QueryResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    truncated: bool = Field(description="more rows matched than were returned")


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


@router.post(
    "",
    response_model=QueryResult,
    summary="run a read-only SQL query over the message index",
    responses={
        400: {"model": Problem, "description": "not a single SELECT, or the SQL failed"},
        408: {"model": Problem, "description": "the query ran past its time limit"},
    },
)
async def run_query(body: QueryRequest, store: StoreDep, broker: BrokerDep) -> QueryResult:
    http = broker.settings.http
    max_rows = min(body.max_rows or http.query_max_rows, http.query_max_rows)
    timeout_ms = min(body.timeout_ms or http.query_timeout_ms, http.query_timeout_ms)
    result = await store.sql(body.sql, max_rows=max_rows, timeout_s=timeout_ms / 1000)
    rows = [[_json_value(v) for v in row] for row in result["rows"]]
    return QueryResult(
        columns=result["columns"], rows=rows, row_count=len(rows), truncated=result["truncated"]
    )
