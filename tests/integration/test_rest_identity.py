"""REST with the identity and rules of NATS: a Basic-auth user (or a token bound to one) is that
user, so another user's mailbox, task, agent, tool or run answers 403 exactly as over NATS, lists
leave them out, and no ``[auth]`` user is an admin unless its entry says ``role = "admin"``."""

from __future__ import annotations

import base64
import itertools
import json

import httpx
import nats
import pytest
from helpers.agents import API, Agent, call

MQ9 = "$mq9.AI."
_ids = itertools.count()

CONFIG = """
[[auth.users]]
user = "alice"
password = "alice-pw"

[[auth.users]]
user = "bob"
password = "bob-pw"

[[auth.users]]
user = "sensor"
password = "sensor-pw"
[auth.users.permissions.subscribe]
deny = [">"]
[auth.users.permissions.publish]
deny = ["$mq9.AI.MSG.SEND.closed.>"]

[[auth.users]]
user = "root"
password = "root-pw"
role = "admin"

[[http.tokens]]
token = "reader-token"
role = "reader"

[[http.tokens]]
token = "alice-token"
user = "alice"

[[http.tokens]]
token = "alice-reader-token"
user = "alice"
role = "reader"

[[http.tokens]]
token = "admin-token"
role = "admin"
"""

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "sensor": "sensor-pw", "root": "root-pw"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    from brokerproc import start_broker

    d = tmp_path_factory.mktemp("rest-identity")
    (d / "robustmq.toml").write_text(CONFIG)
    b = start_broker(d / "data", "--mqtt-port", "off", "--config", str(d / "robustmq.toml"))
    yield b
    b.stop()


def rest(broker, who: str) -> httpx.AsyncClient:
    """A client as ``who``: a user name (Basic auth) or a token (anything ending in -token)."""
    if who.endswith("-token"):
        auth = f"Bearer {who}"
    else:
        auth = "Basic " + base64.b64encode(f"{who}:{PASSWORDS[who]}".encode()).decode()
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{broker.ports['http']}/api/v1",
        headers={"Authorization": auth},
        timeout=10,
    )


async def nats_as(broker, user: str):
    return await nats.connect(broker.nats_url, user=user, password=PASSWORDS[user])


def unique(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


async def alice_agent(broker) -> tuple[Agent, str, str]:
    """Alice's agent online over NATS with its own mailbox holding one message (from bob)."""
    name = unique("vault")
    mailbox = f"{name}.inbox"
    agent = await Agent(broker.nats_url, name, user="alice", password="alice-pw").start(mailbox=mailbox)
    async with rest(broker, "bob") as bob:
        sent = await bob.post(f"/mailboxes/{mailbox}/messages", json={"payload": "for alice only"})
        assert sent.status_code == 201, sent.text  # anyone may send, as over NATS
    return agent, name, mailbox


async def test_another_users_mailbox_is_403_over_rest_as_over_nats(secured):
    agent, _, mailbox = await alice_agent(secured)
    bob_nats = await nats_as(secured, "bob")
    over_nats = json.loads((await bob_nats.request(MQ9 + f"MSG.FETCH.{mailbox}", b"{}", timeout=5)).data)
    assert over_nats["error"].startswith("forbidden")
    async with rest(secured, "bob") as bob:
        for method, path, body in (
            ("POST", f"/mailboxes/{mailbox}/fetch", {"deliver": "earliest"}),
            ("GET", f"/mailboxes/{mailbox}/messages", None),
            ("GET", f"/mailboxes/{mailbox}", None),
            ("DELETE", f"/mailboxes/{mailbox}/messages/0", None),
            ("POST", f"/mailboxes/{mailbox}/ack", {"group_name": "g", "msg_id": 0}),
            ("DELETE", f"/mailboxes/{mailbox}", None),
            ("GET", f"/streams/{mailbox}/messages", None),
        ):
            r = await bob.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.text)
        listed = (await bob.get("/mailboxes", params={"limit": 1000})).json()["items"]
        assert mailbox not in [m["address"] for m in listed]
        streams = (await bob.get("/streams", params={"limit": 1000})).json()["items"]
        names = [s["name"] for s in streams]
        assert mailbox not in names and not [n for n in names if n.startswith("$")]
    async with rest(secured, "alice") as alice:
        got = await alice.post(f"/mailboxes/{mailbox}/fetch", json={"deliver": "earliest"})
        assert got.status_code == 200
        assert [m["payload"] for m in got.json()["messages"]] == ["for alice only"]
        sender = dict(got.json()["messages"][0]["headers"]).get("mq9-sender")
        assert sender == "bob"  # a REST send is stamped with its user, as a NATS one
        listed = (await alice.get("/mailboxes", params={"limit": 1000})).json()["items"]
        assert mailbox in [m["address"] for m in listed]
    await bob_nats.close()
    await agent.close()


async def test_a_restricted_user_neither_deletes_nor_reads_her_messages(secured):
    agent, _, mailbox = await alice_agent(secured)
    async with rest(secured, "sensor") as sensor:
        assert (await sensor.delete(f"/mailboxes/{mailbox}/messages/0")).status_code == 403
        assert (await sensor.post(f"/mailboxes/{mailbox}/fetch", json={})).status_code == 403
        # an unclaimed mailbox: sensor may not receive anything (subscribe deny >) ...
        box = unique("open.box")
        assert (await sensor.post("/mailboxes", json={"name": box})).status_code == 201
        assert (await sensor.post(f"/mailboxes/{box}/fetch", json={})).status_code == 403
        # ... and its publish deny holds for the subject REST publishes on its behalf
        closed = unique("closed.box")
        async with rest(secured, "admin-token") as admin:
            assert (await admin.post("/mailboxes", json={"name": closed})).status_code == 201
        r = await sensor.post(f"/mailboxes/{closed}/messages", json={"payload": "x"})
        assert r.status_code == 403 and "Publish" in r.json()["detail"]
    async with rest(secured, "alice") as alice:
        kept = await alice.get(f"/mailboxes/{mailbox}/messages")
        assert [m["payload"] for m in kept.json()["messages"]] == ["for alice only"]
    await agent.close()


async def test_another_users_task_is_refused_as_over_nats(secured):
    agent, name, _ = await alice_agent(secured)
    async with rest(secured, "alice") as alice:
        done = await alice.post(f"/agents/{name}/invoke", json={"input": "alice's secret"})
        assert done.status_code == 200, done.text
        task_id = done.json()["task_id"]
        mine = await alice.get(f"/tasks/{task_id}")
        assert mine.status_code == 200 and mine.json()["output"] == "alice's secret"
    bob_nats = await nats_as(secured, "bob")
    nats_code = (await call(bob_nats, API + f"TASK.GET.{task_id}"))["code"]
    assert nats_code == 403
    for who in ("bob", "sensor", "reader-token"):
        async with rest(secured, who) as c:
            for method, path in (
                ("GET", f"/tasks/{task_id}"),
                ("GET", f"/tasks/{task_id}/events"),
                ("POST", f"/tasks/{task_id}/cancel"),
            ):
                if who == "reader-token" and method == "POST":
                    continue
                r = await c.request(method, path)
                assert r.status_code == nats_code, (who, path, r.text)
                assert "secret" not in r.text
    for who in ("alice-token", "alice-reader-token", "admin-token", "root"):
        async with rest(secured, who) as c:
            seen = await c.get(f"/tasks/{task_id}")
            assert seen.status_code == 200 and seen.json()["output"] == "alice's secret", (who, seen.text)
    await bob_nats.close()
    await agent.close()


async def test_another_users_agent_tool_and_run_are_guarded_and_lists_filtered(secured):
    agent, name, mailbox = await alice_agent(secured)
    tool = unique("ledger")
    pipeline = unique("pipe")
    async with rest(secured, "alice") as alice:
        defined = await alice.post("/tools", json={"name": tool, "input_schema": {"type": "object"}})
        assert defined.status_code == 201, defined.text
        created = await alice.post(
            "/pipelines", json={"name": pipeline, "steps": [{"id": "v", "agent": name}]}
        )
        assert created.status_code == 201, created.text
        run = await alice.post(f"/pipelines/{pipeline}/run", json={"input": "alice's run"})
        assert run.status_code == 200 and run.json()["state"] == "completed", run.text
        run_id = run.json()["run_id"]
        runs = (await alice.get("/runs", params={"limit": 1000})).json()["items"]
        assert run_id in [r["run_id"] for r in runs]
    async with rest(secured, "bob") as bob:
        assert (await bob.delete(f"/agents/{name}")).status_code == 403
        card = {"name": name, "description": "bob's now", "version": "1", "skills": []}
        assert (await bob.post("/agents", json=card)).status_code == 403
        other = {"name": unique("bobs"), "description": "b", "version": "1", "skills": [], "mailbox": mailbox}
        assert (await bob.post("/agents", json=other)).status_code == 403  # her mailbox
        assert (await bob.delete(f"/tools/{tool}")).status_code == 403
        taken = await bob.post("/tools", json={"name": tool, "input_schema": {"type": "object"}})
        assert taken.status_code == 409
        assert (await bob.get(f"/runs/{run_id}")).status_code == 403
        assert (await bob.post(f"/runs/{run_id}/cancel")).status_code == 403
        runs = (await bob.get("/runs", params={"limit": 1000})).json()["items"]
        assert run_id not in [r["run_id"] for r in runs]
    async with rest(secured, "alice") as alice:
        assert (await alice.delete(f"/tools/{tool}")).status_code == 200
        assert (await alice.get(f"/agents/{name}")).json()["name"] == name
    await agent.close()


async def test_users_are_not_admins_unless_their_entry_says_so(secured):
    for who in ("alice", "bob", "sensor", "alice-token"):
        async with rest(secured, who) as c:
            for method, path, body in (
                ("GET", "/server", None),
                ("GET", "/connections", None),
                ("GET", "/subscriptions", None),
                ("POST", "/query", {"sql": "SELECT 1"}),
                ("POST", "/streams", {"name": unique("by-user")}),
            ):
                r = await c.request(method, path, json=body)
                assert r.status_code == 403, (who, path, r.text)
            metrics = await c.get(f"http://127.0.0.1:{secured.ports['http']}/metrics")
            assert metrics.status_code == 403
    for who in ("root", "admin-token"):
        async with rest(secured, who) as c:
            assert (await c.get("/connections")).status_code == 200
            assert (await c.post("/query", json={"sql": "SELECT 1 AS one"})).status_code == 200
    async with rest(secured, "reader-token") as reader:
        assert (await reader.get("/server")).status_code == 200
        assert (await reader.post("/query", json={"sql": "SELECT 1"})).status_code == 403


async def test_a_token_bound_to_a_user_acts_as_that_user(secured):
    agent, _, mailbox = await alice_agent(secured)
    async with rest(secured, "alice-token") as token:
        got = await token.post(f"/mailboxes/{mailbox}/fetch", json={"deliver": "earliest"})
        assert got.status_code == 200 and len(got.json()["messages"]) == 1
        tool = unique("tokentool")
        defined = await token.post("/tools", json={"name": tool, "input_schema": {"type": "object"}})
        assert defined.status_code == 201, defined.text
    async with rest(secured, "bob") as bob:
        assert (await bob.delete(f"/tools/{tool}")).status_code == 403  # the token's tool is alice's
    async with rest(secured, "alice-reader-token") as reader:
        assert (await reader.get(f"/mailboxes/{mailbox}/messages")).status_code == 200
        r = await reader.post(f"/mailboxes/{mailbox}/fetch", json={})
        assert r.status_code == 403 and r.json()["detail"] == "the reader role may only use GET"
    async with rest(secured, "reader-token") as reader:  # a reader with no user: no one's mailbox
        assert (await reader.get(f"/mailboxes/{mailbox}/messages")).status_code == 403
    await agent.close()


def test_a_token_naming_an_unknown_user_or_widening_its_role_is_a_config_error():
    from robustmq.config import ConfigError, load_settings

    users = {"users": [{"user": "alice", "password": "pw"}]}
    for token in ({"token": "t", "user": "nobody"}, {"token": "t", "user": "alice", "role": "admin"}):
        with pytest.raises(ConfigError):
            load_settings(environ={}, overrides={"auth": users, "http": {"tokens": [token]}})
