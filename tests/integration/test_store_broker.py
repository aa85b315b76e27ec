"""The store inside the broker: streams from the config file take NATS publishes (headers
included) and keep them across a restart."""

from __future__ import annotations

import nats

from robustmq.config import StoreSettings
from robustmq.store import Store


async def test_nats_publishes_on_stream_subjects_are_stored_and_survive_a_restart(broker_factory, tmp_path):
    config = tmp_path / "robustmq.toml"
    config.write_text('[[streams]]\nname = "orders"\nsubjects = ["orders.>"]\nmax_msgs = 1000\n')
    b = broker_factory("--config", str(config))
    nc = await nats.connect(b.nats_url)
    for i in range(10):
        await nc.publish(f"orders.eu.{i}", b"order-%d" % i, headers={"trace-id": str(i)})
    await nc.publish("elsewhere", b"not stored")
    await nc.flush()
    await nc.close()
    assert b.stop() == 0

    st = Store(StoreSettings(data_dir=b.data_dir), index=False)
    await st.start()
    try:
        recs = st.read("orders", 0, 100)
        assert [(r.subject, r.payload) for r in recs] == [
            (f"orders.eu.{i}", b"order-%d" % i) for i in range(10)
        ]
        assert b"trace-id: 3" in recs[3].headers
        assert st.stream_config("orders").max_msgs == 1000
    finally:
        await st.stop()

    b2 = broker_factory("--config", str(config), data_dir=b.data_dir)
    nc = await nats.connect(b2.nats_url)
    await nc.publish("orders.us.1", b"after restart")
    await nc.flush()
    await nc.close()
    assert b2.stop() == 0
    st = Store(StoreSettings(data_dir=b.data_dir), index=False)
    await st.start()
    try:
        assert st.get("orders", 10).payload == b"after restart"
    finally:
        await st.stop()
