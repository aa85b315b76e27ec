"""The mq9 agent registry: registered AgentCards by name, their search index and last reports.

Agents are kept in memory and indexed for discovery; every change is handed to a journal so
the registry comes back after a restart (``RegistryJournal``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from robustmq.agents.discovery import DocumentIndex, Embedder, Hit, agent_card_document
from robustmq.agents.journal import StoreJournal

DEFAULT_TENANT = "default"
DISCOVER_DEFAULT_LIMIT = 20


@dataclass
class AgentEntry:
    name: str
    agent_info: str  # the stored info, a JSON string (usually the AgentCard)
    create_time: int
    card: dict[str, Any] | None = None  # the parsed AgentCard when the info is one
    report_info: str | None = None
    report_time: int | None = None

    @property
    def description(self) -> str:
        return str((self.card or {}).get("description") or "")

    def agent_id(self, tenant: str = DEFAULT_TENANT) -> str:
        return f"{tenant}\u0000{self.name}"


class AgentJournal(Protocol):
    def load(self) -> list[dict[str, Any]]: ...

    def append(self, entry: dict[str, Any]) -> Any:
        """Record one change; returns an awaitable that completes once it is durable, or None."""
        ...


class NullJournal:
    """Keeps nothing (tests and in-memory registries)."""

    def load(self) -> list[dict[str, Any]]:
        return []

    def append(self, entry: dict[str, Any]) -> None:
        return None


class RegistryJournal:
    """The registry on two journals of the store: cards compacted by agent name, reports by name.

    Unregistering appends a deletion marker under the name, which hides the card on reload.
    """

    AGENTS_STREAM = "$mq9.agents"
    REPORTS_STREAM = "$mq9.agent_reports"

    def __init__(self, store: Any) -> None:
        self.agents = StoreJournal(store, _stream_config(self.AGENTS_STREAM))
        self.reports = StoreJournal(store, _stream_config(self.REPORTS_STREAM))
        self.agents.open()
        self.reports.open()

    def load(self) -> list[dict[str, Any]]:
        """The newest entry of every name (both streams are compacted: reads skip older ones)."""
        return self.agents.replay() + self.reports.replay()

    def append(self, entry: dict[str, Any]) -> Any:
        """Returns the store's ack: the reply waits for the commit that holds the change."""
        if entry["op"] == "report":
            return self.reports.append(entry, key=entry["name"])
        return self.agents.append(None if entry["op"] == "unregister" else entry, key=entry["name"])


def _stream_config(name: str) -> dict[str, Any]:
    return {"name": name, "kind": "mq9_registry", "compact": True}


class AgentRegistry:
    """Agents by name plus their discovery index."""

    def __init__(self, journal: AgentJournal | None = None, embedder: Embedder | None = None) -> None:
        self.agents: dict[str, AgentEntry] = {}
        self.index = DocumentIndex(embedder)
        self.journal = journal or NullJournal()
        self.version = 0  # bumped whenever an agent is added, replaced or dropped

    def __len__(self) -> int:
        return len(self.agents)

    def load(self) -> None:
        for op in self.journal.load():
            if not isinstance(op.get("name"), str):
                continue  # decodes, but is no registry change
            kind = op.get("op")
            if kind == "register":
                self._put(op["name"], op["agent_info"], op.get("create_time", 0))
            elif kind == "unregister":
                self._drop(op["name"])
            elif kind == "report":
                entry = self.agents.get(op["name"])
                if entry is not None:
                    entry.report_info = op.get("report_info")
                    entry.report_time = op.get("report_time")

    def register(self, name: str, agent_info: str, card: dict[str, Any] | None = None) -> Any:
        """Add or replace an agent (a re-registration updates the card and its index).

        Like ``unregister`` and ``report``, returns the journal's durability awaitable (or None).
        """
        entry = self._put(name, agent_info, int(time.time()), card)
        return self.journal.append(
            {"op": "register", "name": name, "agent_info": agent_info, "create_time": entry.create_time}
        )

    def unregister(self, name: str) -> Any:
        if self._drop(name):
            return self.journal.append({"op": "unregister", "name": name})
        return None

    def report(self, name: str, report_info: str | None) -> Any:
        now = int(time.time())
        entry = self.agents.get(name)
        if entry is not None:
            entry.report_info = report_info
            entry.report_time = now
        return self.journal.append(
            {"op": "report", "name": name, "report_info": report_info, "report_time": now}
        )

    def listing(self) -> list[AgentEntry]:
        return list(self.agents.values())

    def search_text(self, text: str, limit: int, page: int) -> list[tuple[AgentEntry, Hit]]:
        return self._entries(self.index.search_text(text, limit, (page - 1) * limit))

    def search_semantic(self, text: str, limit: int, page: int) -> list[tuple[AgentEntry, Hit]]:
        return self._entries(self.index.search_semantic(text, limit, (page - 1) * limit))

    # -- internals -------------------------------------------------------------------------------

    def _entries(self, hits: list[Hit]) -> list[tuple[AgentEntry, Hit]]:
        return [(self.agents[h.doc_id], h) for h in hits if h.doc_id in self.agents]

    def _put(
        self, name: str, agent_info: str, create_time: int, card: dict[str, Any] | None = None
    ) -> AgentEntry:
        if card is None:
            card = parse_card(agent_info)
        previous = self.agents.get(name)
        entry = AgentEntry(name, agent_info, previous.create_time if previous else create_time, card)
        self.agents[name] = entry
        self.version += 1
        if card is not None:
            self.index.add(agent_card_document(name, card))
        else:
            self.index.remove(name)
        return entry

    def _drop(self, name: str) -> bool:
        if self.agents.pop(name, None) is None:
            return False
        self.version += 1
        self.index.remove(name)
        return True


def parse_card(agent_info: str) -> dict[str, Any] | None:
    """The AgentCard inside a stored info string, or ``None`` when it is not one."""
    from robustmq.agents.mq9.schemas import is_agent_card

    try:
        value = orjson.loads(agent_info)
    except orjson.JSONDecodeError:
        return None
    return value if is_agent_card(value) else None
