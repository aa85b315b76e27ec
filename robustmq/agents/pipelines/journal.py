"""Where pipelines are kept: definitions in a stream compacted by name, runs as checkpoint records.

A checkpoint is appended and, when it must survive a crash before the run goes on (a step's
output), committed at once; other records ride on the store's group commit. Without a store
(in-process tests) everything stays in memory.
"""

from __future__ import annotations

from typing import Any

from robustmq.agents.journal import StoreJournal
from robustmq.agents.pipelines import limits

DEFINITION_STREAM_CONFIG: dict[str, Any] = {
    "name": limits.PIPELINE_STREAM,
    "subjects": [],
    "compact": True,
    "kind": "agent_api",
    "description": "pipeline definitions",
}
RUN_STREAM_CONFIG: dict[str, Any] = {
    "name": limits.RUN_STREAM,
    "subjects": [],
    "max_age_s": limits.RUN_RETENTION_S,
    "kind": "agent_api",
    "description": "pipeline run checkpoints",
}


class PipelineJournal:
    """The two journals of the pipeline service: definitions by name, and run checkpoints."""

    def __init__(self, store: Any) -> None:
        self.definition_journal = StoreJournal(store, DEFINITION_STREAM_CONFIG)
        self.run_journal = StoreJournal(store, RUN_STREAM_CONFIG)

    def open(self) -> None:
        self.definition_journal.open()
        self.run_journal.open()

    def definitions(self) -> dict[str, dict[str, Any]]:
        """Every pipeline kept: name -> the record (``spec`` and ``created_ms``)."""
        out: dict[str, dict[str, Any]] = {}
        for rec in self.definition_journal.replay():
            name = rec.get("name")
            if not isinstance(name, str):
                continue
            if rec.get("deleted"):
                out.pop(name, None)
            elif isinstance(rec.get("spec"), dict):
                out[name] = rec
        return out

    def run_records(self) -> list[dict[str, Any]]:
        return self.run_journal.replay()

    def put_definition(self, name: str, record: dict[str, Any]) -> None:
        self.definition_journal.write(record, key=name)

    def delete_definition(self, name: str) -> None:
        self.definition_journal.write({"name": name, "deleted": True}, key=name)

    def checkpoint(self, record: dict[str, Any], commit: bool = False) -> None:
        """Append a run record; ``commit`` writes it out before returning (it survives a crash)."""
        self.run_journal.write(record)
        if commit:
            self.run_journal.commit_now()
