"""MQTT clients in the control plane: connections and subscriptions listed like NATS ones, and the
server-wide traffic counters of both protocols in /metrics, which keep what closed connections did."""

from __future__ import annotations

import asyncio
import re

import httpx
import nats
from helpers.mqtt_clients import PahoClient, unique
from helpers.waits import wait_until_sync

from robustmq.bridges.mqtt import packets as P


def http(broker) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{broker.ports['http']}", timeout=15)


def metric(text: str, name: str, protocol: str) -> float:
    m = re.search(rf'^{name}\{{protocol="{protocol}"\}} (\S+)$', text, re.MULTILINE)
    assert m is not None, f"{name} for {protocol} missing"
    return float(m.group(1))


def test_mqtt_connections_and_subscriptions_are_listed_with_their_counters(broker):
    port = broker.ports["mqtt"]
    sub_id, pub_id = unique("lister-sub"), unique("lister-pub")
    sub = PahoClient(port, sub_id, P.MQTT_5)
    sub.subscribe("sensors/+/temp", 1)
    sub.subscribe("$share/g1/jobs/#", 0)
    pub = PahoClient(port, pub_id, P.MQTT_3_1_1)
    try:
        for _ in range(3):
            pub.publish("sensors/kitchen/temp", b"21.5", 1)
        assert len(sub.get_n(3)) == 3
        with http(broker) as c:
            r = c.get("/api/v1/connections", params={"protocol": "mqtt"})
            assert r.status_code == 200
            items = {i["client_id"]: i for i in r.json()["items"]}
            assert set(items) == {sub_id, pub_id}
            s, p = items[sub_id], items[pub_id]
            assert s["protocol"] == p["protocol"] == "mqtt"
            assert s["version"] == "5.0" and p["version"] == "3.1.1"
            assert s["name"] == sub_id and s["ip"] == "127.0.0.1" and isinstance(s["port"], int)
            assert s["subscriptions"] == 2 and p["subscriptions"] == 0
            assert (p["in_msgs"], p["in_bytes"], p["out_msgs"]) == (3, 12, 0)
            assert (s["out_msgs"], s["out_bytes"], s["in_msgs"]) == (3, 12, 0)
            assert s["start_ms"] > 0 and s["cid"] != p["cid"]

            r = c.get("/api/v1/subscriptions", params={"protocol": "mqtt"})
            assert r.status_code == 200
            mine = [i for i in r.json()["items"] if i["cid"] == s["cid"]]
            by_sid = {i["sid"]: i for i in mine}
            assert by_sid["sensors/+/temp"]["subject"] == "sensors.*.temp"
            assert "g1" in by_sid["$share/g1/jobs/#"]["queue"]  # the router's queue of the share group
            assert {i["subject"] for i in mine if i["sid"] == "$share/g1/jobs/#"} >= {"jobs.>"}

            text = c.get("/metrics").text
            assert metric(text, "robustmq_connections", "mqtt") == 2
            assert metric(text, "robustmq_client_subscriptions", "mqtt") == 2
            assert metric(text, "robustmq_messages_in_total", "mqtt") == 3
            assert metric(text, "robustmq_bytes_in_total", "mqtt") == 12
            assert metric(text, "robustmq_messages_out_total", "mqtt") == 3
            assert metric(text, "robustmq_connections_accepted_total", "mqtt") == 2
    finally:
        sub.stop()
        pub.stop()


def test_traffic_counters_keep_what_closed_connections_did(broker):
    port = broker.ports["mqtt"]
    sub = PahoClient(port, unique("gone-sub"), P.MQTT_3_1_1)
    sub.subscribe("counted/topic", 0)
    pub = PahoClient(port, unique("gone-pub"), P.MQTT_5)
    for _ in range(5):
        pub.publish("counted/topic", b"abcd", 0)
    assert len(sub.get_n(5)) == 5
    sub.stop()
    pub.stop()

    async def nats_traffic() -> None:
        nc = await nats.connect(broker.nats_url)
        got = await nc.subscribe("counted.nats")
        for _ in range(4):
            await nc.publish("counted.nats", b"xyz")
        for _ in range(4):
            await got.next_msg(timeout=5)
        await nc.close()

    asyncio.run(nats_traffic())
    with http(broker) as c:

        def after_the_closes() -> str | None:
            text = c.get("/metrics").text
            closed = all(metric(text, "robustmq_connections", p) == 0 for p in ("mqtt", "nats"))
            return text if closed else None

        # the closes reach the broker a moment after the clients return
        text = wait_until_sync(after_the_closes, interval=0.05, what="both connections closed")
        assert metric(text, "robustmq_connections", "mqtt") == 0
        assert metric(text, "robustmq_messages_in_total", "mqtt") == 5
        assert metric(text, "robustmq_bytes_in_total", "mqtt") == 20
        assert metric(text, "robustmq_messages_out_total", "mqtt") == 5
        assert metric(text, "robustmq_bytes_out_total", "mqtt") == 20
        assert metric(text, "robustmq_messages_in_total", "nats") == 4
        assert metric(text, "robustmq_bytes_in_total", "nats") == 12
        assert metric(text, "robustmq_messages_out_total", "nats") == 4
        assert metric(text, "robustmq_bytes_out_total", "nats") == 12
        assert "# TYPE robustmq_messages_in_total counter" in text
        assert "robustmq_open_connections_messages_in" not in text


def test_nats_and_mqtt_clients_of_one_broker_get_different_ids(broker):
    """Client ids come from one broker-wide counter: the first client of each protocol is not both 1."""

    async def listed_with_a_nats_client() -> list[dict]:
        nc = await nats.connect(broker.nats_url, name="id-nats")
        mqtt = PahoClient(broker.ports["mqtt"], unique("id-mqtt"), P.MQTT_3_1_1)
        try:
            with http(broker) as c:
                return c.get("/api/v1/connections").json()["items"]
        finally:
            mqtt.stop()
            await nc.close()

    items = asyncio.run(listed_with_a_nats_client())
    by_protocol = {i["protocol"]: i for i in items}
    assert set(by_protocol) == {"nats", "mqtt"}
    assert by_protocol["nats"]["cid"] != by_protocol["mqtt"]["cid"]
    assert len({i["cid"] for i in items}) == len(items)
