"""With authentication on: an agent name belongs to the user who registered it first."""

from __future__ import annotations

import pytest
from mq9 import Agent, Client, Forbidden

AUTH_CONFIG = """
[[auth.users]]
user = "alice"
password = "alice-secret"

[[auth.users]]
user = "bob"
password = "bob-secret"
"""


def billing(url: str, user: str, password: str) -> Agent:
    agent = Agent("billing", servers=url, user=user, password=password, description="Invoices and refunds")

    @agent.skill
    async def refund(order: str) -> str:
        """Refund an order."""
        return f"refunded {order}"

    return agent


async def test_another_users_agent_name_is_forbidden(broker_factory, tmp_path):
    config = tmp_path / "auth.toml"
    config.write_text(AUTH_CONFIG)
    broker = broker_factory("--config", str(config))
    async with billing(broker.nats_url, "alice", "alice-secret") as owned:
        assert owned.instance_id
        with pytest.raises(Forbidden) as info:
            await billing(broker.nats_url, "bob", "bob-secret").start()
        assert info.value.code == 403
        async with Client(broker.nats_url, user="bob", password="bob-secret") as bob:
            # anyone may call the agent; the broker stamps who called
            assert await bob.invoke("billing", {"order": "o-1"}) == "refunded o-1"
