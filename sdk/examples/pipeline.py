"""A pipeline: translate, then summarise and extract keywords in parallel, run by the broker.

Needs the translator (``python -m mq9 run translator:agent``); this script runs the summariser.
"""

import asyncio
import os

from mq9 import Agent, Client

SERVERS = os.environ.get("MQ9_SERVERS", "nats://127.0.0.1:4222")

summarizer = Agent("summarizer", servers=SERVERS, description="Summarises text in one line")


@summarizer.skill(tags=["summary"], examples=["summarise this article"])
async def summarize(text: str, target: str = "") -> str:
    """One-line summary."""
    return text[:40]


@summarizer.tool()
async def keywords(text: str) -> list[str]:
    """The longest words of a text."""
    return sorted(set(text.split()), key=len, reverse=True)[:3]


PIPELINE = {
    "name": "translate-and-summarize",
    "steps": [
        {"id": "t", "agent": "translator", "skill": "translate", "input": "$.input"},
        {"id": "s", "agent": "summarizer", "input": "$.steps.t.output", "needs": ["t"]},
        {"id": "k", "tool": "keywords", "input": {"text": "$.steps.t.output.text"}, "needs": ["t"]},
    ],
    "output": {"summary": "$.steps.s.output", "keywords": "$.steps.k.output"},
}


async def main() -> None:
    async with summarizer, Client(SERVERS) as c:
        await c.create_pipeline(PIPELINE, replace=True)
        result = await c.run_pipeline(
            "translate-and-summarize", {"text": "hello", "target": "fr"}, timeout=30
        )
        print(result)


if __name__ == "__main__":
    asyncio.run(main())
