"""A broker started in the test's own event loop, so a test can look at its router and servers.

Used by the in-process NATS tests and the connection churn test.
"""

from __future__ import annotations

from robustmq.broker import Broker
from robustmq.config import load_settings


async def start_inprocess_broker(tmp_path, **auth):
    """A Broker in this event loop with only NATS on; returns (broker, nats server, url)."""
    settings = load_settings(
        environ={},
        overrides={
            "host": "127.0.0.1",
            "nats": {"port": 0},
            "mqtt": {"port": "off"},
            "http": {"port": "off"},
            "store": {"data_dir": str(tmp_path / "data")},
            **({"auth": auth} if auth else {}),
        },
    )
    broker = Broker(settings)
    await broker.start()
    nats_server = next(c for c in broker.components if c.name == "nats")
    host, port = nats_server.addresses()[0]
    return broker, nats_server, f"nats://{host}:{port}"
