"""The link to mq9: one registry and one discovery engine for both subject families.

Cards registered through the agent API are registered with mq9 too (so mq9 DISCOVER finds them),
mailboxes are created through mq9's own ``MAILBOX.CREATE``, and DISCOVER / intent routing rank
agents with mq9's index (BM25 and embeddings). Without mq9 in the broker, a keyword ranker serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from robustmq.agents.api.registry import AgentRecord, KeywordRanker

if TYPE_CHECKING:
    from robustmq.agents.mq9.registry import AgentRegistry
    from robustmq.agents.mq9.service import Mq9Service
    from robustmq.router import Router

REGISTER_SUBJECT = "$mq9.AI.AGENT.REGISTER"
UNREGISTER_SUBJECT = "$mq9.AI.AGENT.UNREGISTER"
MAILBOX_CREATE_SUBJECT = "$mq9.AI.MAILBOX.CREATE"


class Mq9Link:
    """The agent API's view of ``service`` (None: a broker without mq9, e.g. in unit tests)."""

    def __init__(self, router: Router, service: Mq9Service | None) -> None:
        self.router = router
        self.service = service
        self._fallback = KeywordRanker()

    @property
    def registry(self) -> AgentRegistry | None:
        """mq9's registry once mq9 has started (it is loaded from the journal then)."""
        return self.service.registry if self.service is not None else None

    # -- writes go through mq9's own subjects (no reply wanted) --------------------------------------

    def register(self, name: str, card: dict[str, Any]) -> None:
        if self.service is not None:
            self.router.publish(REGISTER_SUBJECT, orjson.dumps({**card, "name": name}))

    def unregister(self, name: str) -> None:
        if self.service is not None:
            self.router.publish(UNREGISTER_SUBJECT, orjson.dumps({"name": name}))

    def create_mailbox(self, address: str) -> None:
        """Create the mailbox if it is missing (an existing one is left as it is)."""
        if self.service is not None:
            self.router.publish(MAILBOX_CREATE_SUBJECT, orjson.dumps({"name": address, "ttl": 0}))

    # -- reads ---------------------------------------------------------------------------------------

    def cards(self) -> dict[str, tuple[dict[str, Any], int]]:
        """Agents known to mq9 with a parsed AgentCard: name -> (card, created_ms)."""
        registry = self.registry
        if registry is None:
            return {}
        out = {}
        for entry in registry.listing():
            if entry.card is not None:
                out[entry.name] = (entry.card, int(entry.create_time) * 1000)
        return out

    def semantic_pending(self) -> bool:
        """True while cards wait to be embedded (a semantic search would miss them)."""
        service = self.service
        return service is not None and service.registry is not None and service.embedding_pending()

    async def wait_semantic(self) -> None:
        if self.service is not None:
            await self.service.refresh_vectors()

    def rank(self, query: str, records: list[AgentRecord], semantic: bool) -> list[tuple[str, float]]:
        """``records`` ordered by relevance to ``query`` (best first) with scores."""
        registry = self.registry
        if registry is None or not records:
            return self._fallback.rank(query, records)
        wanted = {r.name for r in records}
        limit = max(len(registry), 1)
        try:
            hits = (
                registry.search_semantic(query, limit, 1)
                if semantic
                else registry.search_text(query, limit, 1)
            )
        except Exception:
            return self._fallback.rank(query, records)
        ranked = [(entry.name, round(float(hit.score), 4)) for entry, hit in hits if entry.name in wanted]
        if not ranked:
            return self._fallback.rank(query, records)
        return ranked
