"""The read-only SQL guard: one SELECT that reads only the index's own relations.

DuckDB parses the text (its JSON parse tree); the tree is walked here so no table function,
file path, other schema or size-amplifying function reaches the engine. Fails closed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from robustmq.store.errors import (
    SQL_FAILED,
    SQL_FUNCTION_REFUSED,
    SQL_NOT_READ_ONLY,
    SQL_RELATION_REFUSED,
    QueryError,
)

if TYPE_CHECKING:
    import duckdb

# What a query may name in FROM: the views the index defines for it (see index.QUERY_VIEWS).
ALLOWED_RELATIONS = frozenset({"messages", "deletions", "archive"})
# Table functions that generate rows and touch no file, catalog or setting.
ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
# Scalar functions whose output size is set by an argument, not by their input: one call can
# allocate gigabytes outside DuckDB's memory limit before an interrupt is seen; and functions
# that read the environment or the settings (paths of the data directory).
REFUSED_FUNCTIONS = frozenset({
    "repeat", "list_resize", "array_resize", "lpad", "rpad", "printf", "format", "range",
    "generate_series", "bitstring", "bar", "to_base", "equi_width_bins", "getenv", "current_setting",
})  # fmt: skip
# Parse-tree node types of a FROM item that are safe by themselves (their children are walked).
SAFE_TABLE_REFS = frozenset({"JOIN", "SUBQUERY", "EMPTY", "EXPRESSION_LIST"})


def check_read_only(text: str) -> None:
    """Exactly one SELECT statement (WITH ... SELECT included); anything else is refused.

    DuckDB's parser decides; it is imported here, off the event loop (see index.py)."""
    import duckdb

    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as exc:
        raise QueryError(SQL_FAILED.format(reason=exc)) from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise QueryError(SQL_NOT_READ_ONLY)


def check_query(cur: duckdb.DuckDBPyConnection, text: str) -> None:
    """Refuse ``text`` unless it is one SELECT over the allowed relations and functions."""
    check_read_only(text)
    raw = cur.execute("SELECT json_serialize_sql(?)", [text]).fetchall()[0][0]
    tree = orjson.loads(raw)
    if tree.get("error"):
        reason = tree.get("error_message") or SQL_NOT_READ_ONLY
        raise QueryError(SQL_FAILED.format(reason=reason))
    check_tree(tree.get("statements") or [], frozenset())


def check_tree(node: Any, ctes: frozenset[str]) -> None:
    """Walk a parse tree; ``ctes`` are the common table expressions in scope here."""
    if isinstance(node, list):
        for item in node:
            check_tree(item, ctes)
        return
    if not isinstance(node, dict):
        return
    cte_map = node.get("cte_map")
    if isinstance(cte_map, dict):
        ctes = ctes | set(_cte_names(cte_map.get("map") or []))
    skip = None
    if _is_table_ref(node):
        _check_table_ref(node, ctes)
        skip = "function" if node["type"] == "TABLE_FUNCTION" else None
    elif node.get("class") == "FUNCTION" or node.get("type") == "FUNCTION":
        name = str(node.get("function_name", "")).lower()
        if name in REFUSED_FUNCTIONS:
            raise QueryError(SQL_FUNCTION_REFUSED.format(name=name))
    for key, value in node.items():
        if key != skip and isinstance(value, dict | list):
            check_tree(value, ctes)


def _is_table_ref(node: dict[str, Any]) -> bool:
    """A FROM item: expressions have a class, query nodes (SELECT_NODE, ...) end in _NODE."""
    kind = node.get("type")
    return isinstance(kind, str) and "sample" in node and "class" not in node and not kind.endswith("_NODE")


def _cte_names(entries: Iterable[Any]) -> Iterable[str]:
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            yield entry["key"].lower()


def _check_table_ref(node: dict[str, Any], ctes: frozenset[str]) -> None:
    kind = node["type"]
    if kind == "BASE_TABLE":
        name = str(node.get("table_name", ""))
        qualified = node.get("schema_name") or node.get("catalog_name")
        if qualified or node.get("at_clause") or name.lower() not in ALLOWED_RELATIONS | ctes:
            raise QueryError(SQL_RELATION_REFUSED.format(name=name))
    elif kind == "TABLE_FUNCTION":
        fn = node.get("function") or {}
        name = str(fn.get("function_name", "")).lower()
        if fn.get("schema") or fn.get("catalog") or name not in ALLOWED_TABLE_FUNCTIONS:
            raise QueryError(SQL_FUNCTION_REFUSED.format(name=name or "?"))
        for arg in fn.get("arguments") or []:  # range(...) arguments are expressions: walk them
            check_tree(arg, ctes)
    elif kind not in SAFE_TABLE_REFS:
        raise QueryError(SQL_RELATION_REFUSED.format(name=kind.lower()))
