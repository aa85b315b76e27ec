"""mq9 mailboxes over the control plane against a real broker: create, list, inspect (depth per
priority, group lag), send with priority/TTL/delay/key/tags, fetch, ack, query, delete; messages sent
over NATS are seen over HTTP and the other way round; mq9's error texts come back as problems."""

from __future__ import annotations

import json

import httpx
import nats


def http(broker) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{broker.ports['http']}", timeout=15)


async def test_mailbox_life_cycle_over_http(broker):
    async with http(broker) as c:
        r = await c.post("/api/v1/mailboxes", json={"name": "agent.inbox", "ttl_s": 3600, "desc": "mine"})
        assert r.status_code == 201
        box = r.json()
        assert box["address"] == "agent.inbox" and box["expires_at_s"] == box["create_time_s"] + 3600
        r = await c.post("/api/v1/mailboxes", json={})
        assert r.status_code == 201 and r.json()["expires_at_s"] is not None
        generated = r.json()["address"]

        listed = (await c.get("/api/v1/mailboxes", params={"limit": 1})).json()
        rest = (await c.get("/api/v1/mailboxes", params={"cursor": listed["next_cursor"]})).json()
        assert sorted(b["address"] for b in listed["items"] + rest["items"]) == sorted(
            ["agent.inbox", generated]
        )

        assert (await c.delete(f"/api/v1/mailboxes/{generated}")).status_code == 204
        assert (await c.get(f"/api/v1/mailboxes/{generated}")).status_code == 404
        assert (await c.delete(f"/api/v1/mailboxes/{generated}")).status_code == 404


async def test_mailbox_errors_are_mq9_texts_as_problems(broker):
    async with http(broker) as c:
        assert (await c.post("/api/v1/mailboxes", json={"name": "dup"})).status_code == 201
        r = await c.post("/api/v1/mailboxes", json={"name": "dup"})
        assert r.status_code == 409 and r.json()["detail"] == "mailbox dup already exists"
        r = await c.post("/api/v1/mailboxes", json={"name": "Upper_Case"})
        assert r.status_code == 400
        assert r.json()["detail"] == "name may only contain lowercase letters, digits, and dots"
        r = await c.post("/api/v1/mailboxes/none.here/messages", json={"payload": "x"})
        assert r.status_code == 404 and r.json()["detail"] == "mailbox none.here does not exist"
        assert (await c.post("/api/v1/mailboxes/none.here/fetch", json={})).status_code == 404
        assert (await c.get("/api/v1/mailboxes/none.here/messages")).status_code == 404
        assert (await c.delete("/api/v1/mailboxes/none.here/messages/0")).status_code == 404
        r = await c.post("/api/v1/mailboxes/dup/messages", json={"payload": "a", "payload_base64": "YQ=="})
        assert r.status_code == 400
        r = await c.post("/api/v1/mailboxes/dup/messages", json={"payload": "a", "priority": "panic"})
        assert r.status_code == 400
        r = await c.post("/api/v1/mailboxes/dup/messages", json={"payload_base64": "not base64!"})
        assert r.status_code == 400
        r = await c.post("/api/v1/mailboxes/dup/ack", json={"group_name": "", "msg_id": 0})
        assert r.status_code == 400


async def test_send_fetch_ack_and_depth_per_priority(broker):
    async with http(broker) as c:
        await c.post("/api/v1/mailboxes", json={"name": "work"})
        sends = [
            {"payload": "n1"},
            {"payload": "u1", "priority": "urgent", "tags": ["billing", "vip"]},
            {"payload": "c1", "priority": "critical", "key": "alarm"},
            {"payload_base64": "bjI=", "headers": [["trace", "abc"]]},
        ]
        ids = []
        for body in sends:
            r = await c.post("/api/v1/mailboxes/work/messages", json=body)
            assert r.status_code == 201, r.text
            ids.append(r.json()["msg_id"])
        assert ids == [0, 1, 2, 3]

        detail = (await c.get("/api/v1/mailboxes/work")).json()
        assert detail["depth"] == 4 and detail["depth_exact"] is True
        assert detail["depth_by_priority"] == {"critical": 1, "urgent": 1, "normal": 2}
        assert detail["next_msg_id"] == 4 and detail["groups"] == []

        fetch = {"group_name": "workers", "deliver": "earliest", "config": {"num_msgs": 10, "max_wait_ms": 0}}
        got = (await c.post("/api/v1/mailboxes/work/fetch", json=fetch)).json()["messages"]
        assert [m["payload"] for m in got] == ["c1", "u1", "n1", "n2"]
        assert ["trace", "abc"] in got[3]["headers"]
        # offsets move only on ack
        again = (await c.post("/api/v1/mailboxes/work/fetch", json=fetch)).json()["messages"]
        assert [m["msg_id"] for m in again] == [m["msg_id"] for m in got]
        r = await c.post("/api/v1/mailboxes/work/ack", json={"group_name": "workers", "msg_id": 1})
        assert r.status_code == 200 and r.json() == {"group_name": "workers", "msg_id": 1}
        after = (await c.post("/api/v1/mailboxes/work/fetch", json=fetch)).json()["messages"]
        assert [m["payload"] for m in after] == ["c1", "n2"]

        groups = (await c.get("/api/v1/mailboxes/work")).json()["groups"]
        assert groups == [{"name": "workers", "position": 2, "lag": 2}]


async def test_query_delete_ttl_and_delay(broker):
    async with http(broker) as c:
        await c.post("/api/v1/mailboxes", json={"name": "q"})
        await c.post("/api/v1/mailboxes/q/messages", json={"payload": "v1", "key": "state"})
        await c.post("/api/v1/mailboxes/q/messages", json={"payload": "v2", "key": "state", "tags": ["t"]})
        await c.post("/api/v1/mailboxes/q/messages", json={"payload": "other", "tags": ["u"]})
        r = await c.post("/api/v1/mailboxes/q/messages", json={"payload": "later", "delay_s": 3600})
        assert r.status_code == 201 and r.json()["msg_id"] == -1
        await c.post("/api/v1/mailboxes/q/messages", json={"payload": "short", "ttl_s": 3600})

        by_key = (await c.get("/api/v1/mailboxes/q/messages", params={"key": "state"})).json()["messages"]
        assert [m["payload"] for m in by_key] == ["v2"]
        by_tag = (await c.get("/api/v1/mailboxes/q/messages", params=[("tags", "u"), ("tags", "t")])).json()
        assert sorted(m["payload"] for m in by_tag["messages"]) == ["other", "v2"]
        everything = (await c.get("/api/v1/mailboxes/q/messages")).json()["messages"]
        assert "later" not in [m["payload"] for m in everything]
        assert [m["payload"] for m in everything] == ["v2", "other", "short"]

        target = everything[1]["msg_id"]
        r = await c.delete(f"/api/v1/mailboxes/q/messages/{target}")
        assert r.status_code == 200 and r.json() == {"deleted": True}
        left = (await c.get("/api/v1/mailboxes/q/messages")).json()["messages"]
        assert [m["payload"] for m in left] == ["v2", "short"]
        r = await c.get("/api/v1/mailboxes/q/messages", params={"limit": 101})
        assert r.status_code == 400


async def test_nats_and_http_see_the_same_mailbox(broker):
    nc = await nats.connect(broker.nats_url)
    try:
        async with http(broker) as c:
            await c.post("/api/v1/mailboxes", json={"name": "shared.box"})
            msg = await nc.request(
                "$mq9.AI.MSG.SEND.shared.box", b"from nats", headers={"mq9-priority": "urgent"}, timeout=5
            )
            assert json.loads(msg.data) == {"error": "", "msg_id": 0}
            await c.post("/api/v1/mailboxes/shared.box/messages", json={"payload": "from http"})

            got = (await c.post("/api/v1/mailboxes/shared.box/fetch", json={"deliver": "earliest"})).json()
            assert [m["payload"] for m in got["messages"]] == ["from nats", "from http"]

            body = json.dumps({"deliver": "earliest", "config": {"max_wait_ms": 0}}).encode()
            reply = json.loads((await nc.request("$mq9.AI.MSG.FETCH.shared.box", body, timeout=5)).data)
            assert [m["payload"] for m in reply["messages"]] == ["from nats", "from http"]
    finally:
        await nc.close()
