"""Where pipelines are kept: definitions in a stream compacted by name, runs as checkpoint records.

A checkpoint is appended and, when it must survive a crash before the run goes on (a step's
output), committed at once; other records ride on the store's group commit. Without a store
(in-process tests) everything stays in memory.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from robustmq.agents.pipelines import limits

log = logging.getLogger("robustmq.agents.pipelines")

REPLAY_BATCH_RECORDS = 4096


class PipelineJournal:
    def __init__(self, store: Any) -> None:
        self.store = store
        self._failed = False
        self.memory: list[tuple[str, dict[str, Any]]] = []  # without a store

    def open(self) -> None:
        if self.store is None:
            return
        from robustmq.store import StreamConfig

        self.store.create_stream(
            StreamConfig(
                name=limits.PIPELINE_STREAM,
                subjects=[],
                compact=True,
                kind="agent_api",
                description="pipeline definitions",
            ),
            exist_ok=True,
        )
        self.store.create_stream(
            StreamConfig(
                name=limits.RUN_STREAM,
                subjects=[],
                max_age_s=limits.RUN_RETENTION_S,
                kind="agent_api",
                description="pipeline run checkpoints",
            ),
            exist_ok=True,
        )

    def definitions(self) -> dict[str, dict[str, Any]]:
        """Every pipeline kept: name -> the record (``spec`` and ``created_ms``)."""
        out: dict[str, dict[str, Any]] = {}
        for rec in self._read(limits.PIPELINE_STREAM):
            name = rec.get("name")
            if not isinstance(name, str):
                continue
            if rec.get("deleted"):
                out.pop(name, None)
            elif isinstance(rec.get("spec"), dict):
                out[name] = rec
        return out

    def run_records(self) -> list[dict[str, Any]]:
        return self._read(limits.RUN_STREAM)

    def put_definition(self, name: str, record: dict[str, Any]) -> None:
        self._append(limits.PIPELINE_STREAM, record, key=name)

    def delete_definition(self, name: str) -> None:
        self._append(limits.PIPELINE_STREAM, {"name": name, "deleted": True}, key=name)

    def checkpoint(self, record: dict[str, Any], commit: bool = False) -> None:
        """Append a run record; ``commit`` writes it out before returning (it survives a crash)."""
        self._append(limits.RUN_STREAM, record)
        if commit and self.store is not None:
            try:
                self.store.commit_now()
            except Exception as exc:
                self._error(exc)

    def _append(self, stream: str, record: dict[str, Any], key: str | None = None) -> None:
        if self.store is None:
            self.memory.append((stream, record))
            return
        try:
            self.store.append(stream, orjson.dumps(record), key=key)
        except Exception as exc:
            self._error(exc)

    def _error(self, exc: Exception) -> None:
        if not self._failed:  # one line, not one per record
            log.error("pipelines: cannot write to the store: %s", exc)
            self._failed = True

    def _read(self, stream: str) -> list[dict[str, Any]]:
        if self.store is None:
            return [rec for s, rec in self.memory if s == stream]
        out: list[dict[str, Any]] = []
        offset = self.store.first_offset(stream)
        while True:
            batch = self.store.read(stream, offset, REPLAY_BATCH_RECORDS)
            if not batch:
                break
            for rec in batch:
                try:
                    value = orjson.loads(rec.payload)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(value, dict):
                    out.append(value)
            offset = batch[-1].offset + 1
        return out
