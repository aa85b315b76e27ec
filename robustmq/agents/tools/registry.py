"""The tool directory: each tool's description and JSON Schemas, compiled once, persisted, searchable.

A tool is kept by name (the newest registration wins, a deletion marker forgets it) in a compacted
stream of the store, so LIST, DISCOVER and pipeline validation know it after a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from robustmq.agents.discovery import Document, DocumentIndex, Embedder
from robustmq.agents.journal import StoreJournal
from robustmq.agents.tools import limits


def compile_schema(schema: dict[str, Any]) -> Any:
    """A validator for ``schema``; raises ``SchemaError`` when it is not a valid JSON Schema."""
    from jsonschema.validators import validator_for  # imported on first use: ~50 ms at start-up

    cls = validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def violations(validator: Any, value: Any) -> list[dict[str, str]]:
    """Every way ``value`` breaks the schema, as ``[{path, message}]`` (``$`` is the value itself)."""
    found = sorted(validator.iter_errors(value), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [{"path": e.json_path, "message": e.message} for e in found[: limits.MAX_SCHEMA_ERRORS]]


def schema_problem(schema: dict[str, Any]) -> str | None:
    from jsonschema import SchemaError

    try:
        compile_schema(schema)
    except SchemaError as exc:
        return exc.message
    return None


class ToolRecord:
    __slots__ = ("name", "description", "input_schema", "output_schema", "max_concurrency",
                 "heartbeat_interval_ms", "owner", "created_ms", "input_validator", "output_validator")  # fmt: skip

    def __init__(
        self,
        name: str,
        description: str,
        input_schema: dict[str, Any],
        output_schema: dict[str, Any] | None,
        *,
        max_concurrency: int,
        heartbeat_interval_ms: int,
        owner: str | None,
        created_ms: int,
    ) -> None:
        self.name = name
        self.description = description
        self.input_schema = input_schema
        self.output_schema = output_schema
        self.max_concurrency = max_concurrency
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.owner = owner
        self.created_ms = created_ms
        self.input_validator = compile_schema(input_schema)
        self.output_validator = compile_schema(output_schema) if output_schema is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "max_concurrency": self.max_concurrency,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "owner": self.owner,
            "created_ms": self.created_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolRecord:
        return cls(
            data["name"],
            data.get("description") or "",
            data.get("input_schema") or {},
            data.get("output_schema"),
            max_concurrency=data.get("max_concurrency") or limits.DEFAULT_TOOL_CONCURRENCY,
            heartbeat_interval_ms=data.get("heartbeat_interval_ms") or 5000,
            owner=data.get("owner"),
            created_ms=data.get("created_ms") or 0,
        )

    def document(self) -> Document:
        """Searchable text: name, description, and the names and descriptions of the arguments."""
        keywords = [self.name, self.name, self.description]
        passages = [f"{self.name}. {self.description}"]
        props = self.input_schema.get("properties")
        if isinstance(props, dict):
            for arg, spec in props.items():
                keywords.append(str(arg))
                if isinstance(spec, dict) and spec.get("description"):
                    keywords.append(str(spec["description"]))
                    passages.append(str(spec["description"]))
        return Document(self.name, keywords, passages)


class ToolDirectory:
    """Tools by name, their search index, and the store stream they are kept in.

    ``store`` may be None (records stay in memory).
    """

    def __init__(
        self, store: Any, embedder: Embedder | None = None, stream: str = limits.TOOL_STREAM
    ) -> None:
        self.store = store
        self.stream = stream
        config = {"name": stream, "compact": True, "kind": "agent_api", "description": "registered tools"}
        self.journal = StoreJournal(store, config)
        self._records: dict[str, ToolRecord] = {}
        self._embedder = embedder
        self._index: DocumentIndex | None = None

    @property
    def index(self) -> DocumentIndex:
        if self._index is None:
            self._index = DocumentIndex(self._embedder)
            for record in self._records.values():
                self._index.add(record.document())
        return self._index

    def open(self) -> None:
        """Create the stream if missing and load every tool kept in it."""
        if self.store is None:
            return
        self.journal.open()
        for data in self.journal.replay():
            from jsonschema import SchemaError  # only with tools to load: ~2 MiB and 50 ms at start-up

            try:
                if data.get("deleted"):
                    self._records.pop(data["name"], None)
                    continue
                record = ToolRecord.from_dict(data)
            except (KeyError, TypeError, AttributeError, SchemaError):
                continue  # a record from an older version that no longer validates
            self._records[record.name] = record

    def get(self, name: str) -> ToolRecord | None:
        return self._records.get(name)

    def all(self) -> list[ToolRecord]:
        return sorted(self._records.values(), key=lambda r: r.name)

    def put(self, record: ToolRecord) -> None:
        old = self._records.get(record.name)
        self._records[record.name] = record
        if self._index is not None:
            self._index.add(record.document())
        if old is not None and old.to_dict() == record.to_dict():
            return
        if self.store is not None:
            self.journal.write(record.to_dict(), key=record.name)

    def remove(self, name: str) -> ToolRecord | None:
        """Forget a tool; a deletion marker keyed by its name keeps it forgotten after a restart."""
        record = self._records.pop(name, None)
        if record is None:
            return None
        if self._index is not None:
            self._index.remove(name)
        if self.store is not None:
            self.journal.write({"name": name, "deleted": True}, key=name)
        return record

    def rank(
        self, text: str | None, semantic: str | None, names: set[str], limit: int
    ) -> list[tuple[ToolRecord, float]]:
        """Tools among ``names`` by relevance (semantic when asked, else keywords), best first."""
        index = self.index
        if semantic:
            hits = index.search_semantic(semantic, max(limit, len(index)))
        else:
            hits = index.search_text(text or "", max(limit, len(index)))
        out = []
        for hit in hits:
            if hit.doc_id in names:
                out.append((self._records[hit.doc_id], round(hit.score, 4)))
        return out[:limit]

    async def embed_pending(self, run_in_thread: Callable[..., Any]) -> None:
        """Embed new tool documents off the event loop (the model loads on first use)."""
        vectors = self.index.vectors
        load = getattr(vectors.embedder, "load", None)
        if load is not None:
            await run_in_thread(load)
        while vectors.pending_count():
            batch = vectors.take_pending()
            vectors.install(batch, await run_in_thread(vectors.embed_batch, batch))
