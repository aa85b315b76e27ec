"""A mailbox worker: messages are handled most urgent first and acked once the handler returns.

A handler that raises gets the message again (up to ``max_attempts``). ``python mailbox_worker.py``
leaves a few messages in the mailbox, then starts the agent, which works through them.
"""

import asyncio
import os

from mq9 import Agent, Client, Conflict, Message

SERVERS = os.environ.get("MQ9_SERVERS", "nats://127.0.0.1:4222")
MAILBOX = "agent.orders.inbox"

agent = Agent("orders", servers=SERVERS, description="Processes orders from its mailbox", mailbox=MAILBOX)
failed_once: list[str] = []
done = asyncio.Event()


@agent.on_message(max_attempts=3)
async def process(msg: Message) -> None:
    order = msg.json()
    if order.get("flaky") and order["id"] not in failed_once:
        failed_once.append(order["id"])
        raise RuntimeError("payment service busy")  # delivered again shortly
    print(f"order {order['id']} ({msg.priority}) done")
    if order.get("last"):
        done.set()


async def main() -> None:
    async with Client(SERVERS) as c:
        try:
            await c.create_mailbox(MAILBOX, ttl=0)
        except Conflict:
            pass  # it is there from an earlier run
        await c.send(MAILBOX, {"id": "o-1", "last": True})
        await c.send(MAILBOX, {"id": "o-2", "flaky": True}, priority="urgent")
        await c.send(MAILBOX, {"id": "o-3"}, priority="critical", ttl=600, tags=["vip"])
    async with agent:
        await asyncio.wait_for(done.wait(), 30)


if __name__ == "__main__":
    asyncio.run(main())
