"""A translator agent: two skills, a tool and a mailbox, in one file.

Run it with ``python -m mq9 run translator:agent`` (from this folder) or ``python translator.py``.
"""

import asyncio
import os

from mq9 import Agent, Message, TaskContext

WORDS = {
    ("hello", "fr"): "bonjour",
    ("hello", "de"): "hallo",
    ("thank you", "fr"): "merci",
    ("thank you", "de"): "danke",
}

agent = Agent(
    "translator",
    servers=os.environ.get("MQ9_SERVERS", "nats://127.0.0.1:4222"),
    description="Translates text between languages",
    version="1.0.0",
    mailbox="agent.translator.inbox",
    max_concurrency=4,
)


@agent.skill(
    tags=["translate", "language"], examples=["translate hello to French", "say thank you in German"]
)
async def translate(text: str, target: str = "fr", ctx: TaskContext | None = None) -> dict:
    """Translate text into the target language."""
    if ctx is not None:
        await ctx.progress({"stage": "looking up", "target": target})
    await asyncio.sleep(0.01)  # a real agent would call a model here
    return {"text": WORDS.get((text.lower(), target), text), "target": target}


@agent.skill(tags=["language", "detect"], examples=["which language is this"])
async def detect(text: str) -> str:
    """Guess the language of a text."""
    return "fr" if text.lower() in {"bonjour", "merci"} else "en"


@agent.tool()
async def word_count(text: str) -> int:
    """Count the words of a text."""
    return len(text.split())


@agent.on_message()
async def inbox(msg: Message) -> None:
    """Requests left in the mailbox while nobody was listening, most urgent first."""
    print(f"mailbox message {msg.msg_id} ({msg.priority}): {msg.text()}")


if __name__ == "__main__":
    agent.run()
