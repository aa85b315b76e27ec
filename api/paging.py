"""Cursor paging: list endpoints take ``limit`` and ``cursor`` and return ``next_cursor``.

A cursor is the last item's sort key, encoded, so pages stay correct while items come and go.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel, Field

from api.limits import CURSOR_MAX_CHARS, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX
from api.problems import BAD_CURSOR, ProblemError

T = TypeVar("T")

Limit = Annotated[
    int, Query(ge=1, le=PAGE_LIMIT_MAX, description=f"page size (default {PAGE_LIMIT_DEFAULT})")
]
CursorParam = Annotated[
    str | None, Query(max_length=CURSOR_MAX_CHARS, description="next_cursor of the previous page")
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="pass as cursor for the next page; null at the end")


def encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        raise ProblemError(400, BAD_CURSOR) from None


def _comparable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def paginate(
    items: Iterable[T], key: Callable[[T], Any], limit: int, cursor: str | None
) -> tuple[list[T], str | None]:
    """Sort by ``key``, keep what comes after the cursor, cut at ``limit``."""

    def sort_key(item: T) -> Any:
        return _comparable(key(item))

    ordered = sorted(items, key=sort_key)
    if cursor:
        after = _comparable(decode_cursor(cursor))
        try:
            ordered = [item for item in ordered if sort_key(item) > after]
        except TypeError:
            raise ProblemError(400, BAD_CURSOR) from None
    page = ordered[:limit]
    more = len(ordered) > limit
    next_cursor = encode_cursor(key(page[-1])) if more and page else None
    return page, next_cursor
