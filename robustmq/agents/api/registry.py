"""The agent API's view of the agent registry: cards plus what the API adds (owner, mailbox, limits).

One registry serves mq9 and the agent API: cards are mirrored into the mq9 registry when it is
present, so mq9 DISCOVER sees agents registered here, and agents registered through mq9 show up
here (without instances). The API's own fields are journalled with the tasks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

_WORD = re.compile(r"[a-z0-9]+")


class AgentRecord:
    __slots__ = ("name", "card", "mailbox", "metadata", "max_concurrency", "heartbeat_interval_ms",
                 "owner", "created_ms")  # fmt: skip

    def __init__(
        self,
        name: str,
        card: dict[str, Any],
        *,
        created_ms: int,
        mailbox: str | None = None,
        metadata: dict[str, Any] | None = None,
        max_concurrency: int = 1,
        heartbeat_interval_ms: int = 5000,
        owner: str | None = None,
    ) -> None:
        self.name = name
        self.card = card
        self.mailbox = mailbox
        self.metadata = metadata or {}
        self.max_concurrency = max_concurrency
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.owner = owner
        self.created_ms = created_ms

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentRecord:
        return cls(
            data["name"],
            data.get("card") or {"name": data["name"]},
            created_ms=data.get("created_ms") or 0,
            mailbox=data.get("mailbox"),
            metadata=data.get("metadata"),
            max_concurrency=data.get("max_concurrency") or 1,
            heartbeat_interval_ms=data.get("heartbeat_interval_ms") or 5000,
            owner=data.get("owner"),
        )

    def skill_matches(self, capability: str) -> bool:
        for skill in self.card.get("skills") or ():
            if not isinstance(skill, dict):
                continue
            if skill.get("id") == capability or capability in (skill.get("tags") or ()):
                return True
        return False

    def tags(self) -> set[str]:
        out: set[str] = set()
        for skill in self.card.get("skills") or ():
            if isinstance(skill, dict):
                out.update(t for t in skill.get("tags") or () if isinstance(t, str))
        return out


def card_text(card: dict[str, Any]) -> str:
    """The searchable text of a card: name, description, and each skill's fields."""
    parts = [str(card.get("name", "")), str(card.get("description", ""))]
    for skill in card.get("skills") or ():
        if isinstance(skill, dict):
            parts.append(str(skill.get("name", "")))
            parts.append(str(skill.get("description", "")))
            parts.extend(str(t) for t in skill.get("tags") or ())
            parts.extend(str(e) for e in skill.get("examples") or ())
    return " ".join(parts)


def _stem(word: str) -> str:
    for suffix in ("ing", "ies", "es", "ed", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _terms(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower())]


class KeywordRanker:
    """A small BM25 over cards: the fallback ranker when the shared discovery engine is absent."""

    def rank(self, query: str, records: list[AgentRecord]) -> list[tuple[str, float]]:
        q = set(_terms(query))
        if not q or not records:
            return []
        docs = [(r.name, _terms(card_text(r.card))) for r in records]
        n = len(docs)
        avg_len = sum(len(d) for _, d in docs) / n or 1.0
        df: dict[str, int] = {}
        for _, terms in docs:
            for t in set(terms) & q:
                df[t] = df.get(t, 0) + 1
        scored = []
        for name, terms in docs:
            score = 0.0
            length = len(terms) or 1
            for t in q:
                tf = terms.count(t)
                if not tf:
                    continue
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / avg_len))
            if score > 0:
                scored.append((name, round(score, 4)))
        scored.sort(key=lambda item: -item[1])
        return scored


class AgentDirectory:
    """Agent records by name; ``ranker(query, records)`` ranks them for DISCOVER and intents.

    ``journal(record)`` persists a change; ``on_mailbox_change(address)``, when given, hears of every
    put or removal touching an agent's mailbox (its owner may have changed).
    """

    def __init__(
        self,
        journal: Callable[[dict[str, Any]], None],
        ranker: Any = None,
        on_mailbox_change: Callable[[str], None] | None = None,
    ) -> None:
        self._records: dict[str, AgentRecord] = {}
        self._mailbox_of: dict[str, str] = {}  # agent name -> its mailbox address
        self._agents_of_mailbox: dict[str, set[str]] = {}  # mailbox address -> agent names
        self._journal = journal
        self.ranker = ranker or KeywordRanker()
        self.on_mailbox_change = on_mailbox_change
        self.version = 0  # bumped on every change: readers rebuild their views when it moves

    def get(self, name: str) -> AgentRecord | None:
        return self._records.get(name)

    def put(self, record: AgentRecord) -> None:
        self._records[record.name] = record
        self.version += 1
        self._index_mailbox(record.name, record.mailbox)
        self._journal({"k": "agent", **record.to_dict()})

    def remove(self, name: str) -> AgentRecord | None:
        record = self._records.pop(name, None)
        if record is not None:
            self.version += 1
            self._index_mailbox(name, None)
            self._journal({"k": "agent-del", "name": name})
        return record

    def with_mailbox(self, address: str) -> list[AgentRecord]:
        """The agents whose mailbox is ``address`` (usually one)."""
        names = self._agents_of_mailbox.get(address)
        return [self._records[n] for n in names] if names else []

    def _index_mailbox(self, name: str, address: str | None) -> None:
        previous = self._mailbox_of.pop(name, None)
        if previous is not None:
            names = self._agents_of_mailbox[previous]
            names.discard(name)
            if not names:
                del self._agents_of_mailbox[previous]
        if address:
            self._mailbox_of[name] = address
            self._agents_of_mailbox.setdefault(address, set()).add(name)
        notify = self.on_mailbox_change
        if notify is not None:
            for changed in {previous, address}:
                if changed:
                    notify(changed)

    def all(self) -> list[AgentRecord]:
        return list(self._records.values())

    def recover(self, rec: dict[str, Any]) -> None:
        self.version += 1
        if rec.get("k") == "agent":
            record = AgentRecord.from_dict(rec)
            self._records[record.name] = record
            self._index_mailbox(record.name, record.mailbox)
        elif rec.get("k") == "agent-del":
            if self._records.pop(rec.get("name", ""), None) is not None:
                self._index_mailbox(rec["name"], None)

    def rank(self, query: str, records: list[AgentRecord], semantic: bool = False) -> list[tuple[str, float]]:
        return self.ranker.rank(query, records)
