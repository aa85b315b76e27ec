"""Where the agent API persists: one stream of the store holding task, event and agent records.

Records are gathered for ``JOURNAL_FLUSH_MS`` and go out as one store record (a JSON array),
appended without waiting (the store's group commit makes them durable); they are read back in
order at start-up. Gathering keeps the store's commits and syncs few however busy the API is.
"""

from __future__ import annotations

from typing import Any

from robustmq.agents.api import limits
from robustmq.agents.journal import StoreJournal

TASK_RETENTION_S = 7 * 24 * 3600.0

TASK_STREAM_CONFIG: dict[str, Any] = {
    "name": limits.TASK_STREAM,
    "subjects": [],
    "max_age_s": TASK_RETENTION_S,
    "kind": "agent_api",
    "description": "agent API tasks, task events and agent registrations",
}


def task_journal(store: Any) -> StoreJournal:
    """The agent API's journal on ``store`` (in memory when it is None), opened."""
    journal = StoreJournal(
        store,
        TASK_STREAM_CONFIG,
        gather_ms=limits.JOURNAL_FLUSH_MS,
        gather_max_records=limits.JOURNAL_FLUSH_MAX_RECORDS,
    )
    journal.open()
    return journal
