"""A caller: find an agent by meaning, invoke it, follow a task, leave it a message.

Start the translator first (``python -m mq9 run translator:agent``), then ``python caller.py``.
"""

import asyncio
import os

from mq9 import Client, NotFound

SERVERS = os.environ.get("MQ9_SERVERS", "nats://127.0.0.1:4222")


async def main() -> None:
    async with Client(SERVERS) as c:
        found = await c.discover(semantic="turn English into German", limit=3)
        for match in found:
            print(f"found {match.name} score={match.score:.3f} status={match.status} skills={match.skills}")

        out = await c.invoke("translator", {"text": "hello", "target": "de"}, skill="translate", timeout=5)
        print("sync:", out)

        task = await c.invoke("translator", {"text": "thank you", "target": "fr"}, wait=False)
        async for event in task.events():
            print(f"event {event.seq}: {event.type} {event.data}")
        print("async:", await task.result())

        out = await c.invoke_intent("say this in French please", {"text": "hello"}, details=True)
        print(f"intent went to {out.agent}: {out.output}")

        msg_id = await c.send("agent.translator.inbox", b"translate the manual by Friday", priority="urgent")
        print("left message", msg_id)

        try:
            await c.invoke("nobody-home", {})
        except NotFound as exc:
            print("as expected:", exc)


if __name__ == "__main__":
    asyncio.run(main())
