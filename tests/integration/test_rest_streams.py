"""Streams, consumers and SQL over the control plane against a real broker: a stream created over
HTTP fills from NATS publishes and is read back by offset and by time; consumers report their lag;
``POST /query`` answers SELECTs and refuses anything that writes."""

from __future__ import annotations

import base64
import time

import httpx
import nats
from helpers.waits import wait_for, wait_until


def http(broker) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{broker.ports['http']}", timeout=10)


async def publish(broker, subject: str, payloads: list[bytes], headers: dict | None = None) -> None:
    nc = await nats.connect(broker.nats_url)
    try:
        for payload in payloads:
            await nc.publish(subject, payload, headers=headers)
        await nc.flush()
    finally:
        await nc.close()


async def wait_count(c: httpx.AsyncClient, name: str, count: int) -> dict:
    """Until the stream holds ``count`` committed records; returns its state."""

    async def state() -> dict:
        return (await c.get(f"/api/v1/streams/{name}")).json()

    return await wait_for(state, lambda s: s["count"] >= count)


async def test_stream_created_over_http_fills_from_nats_and_reads_back(broker):
    async with http(broker) as c:
        r = await c.post("/api/v1/streams", json={"name": "orders", "subjects": ["orders.>"]})
        assert r.status_code == 201
        assert r.json()["config"]["subjects"] == ["orders.>"] and r.json()["last_offset"] == -1
        await publish(broker, "orders.eu", [b"first", b"second", b"\xff\x00binary"], {"trace": "t1"})
        state = await wait_count(c, "orders", 3)
        assert state["first_offset"] == 0 and state["last_offset"] == 2 and state["bytes"] > 0
        assert state["rate_msgs_per_s"] > 0

        page = (await c.get("/api/v1/streams/orders/messages", params={"limit": 2})).json()
        assert [m["payload"] for m in page["items"]] == ["first", "second"]
        assert page["items"][0]["subject"] == "orders.eu"
        assert page["items"][0]["headers"] == [["trace", "t1"]]
        assert page["next_offset"] == 2
        rest = (
            await c.get("/api/v1/streams/orders/messages", params={"offset": 2, "encoding": "base64"})
        ).json()
        assert base64.b64decode(rest["items"][0]["payload"]) == b"\xff\x00binary"
        assert rest["next_offset"] == 3
        empty = (await c.get("/api/v1/streams/orders/messages", params={"offset": 3})).json()
        assert empty == {"items": [], "next_offset": 3}


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_stream_read_by_time_starts_at_the_first_later_record(broker):
    async with http(broker) as c:
        await c.post("/api/v1/streams", json={"name": "ticks", "subjects": ["ticks"]})
        await publish(broker, "ticks", [b"old"])
        await wait_count(c, "ticks", 1)
        old_ms = (await c.get("/api/v1/streams/ticks/messages")).json()["items"][0]["timestamp_ms"]
        # a boundary strictly after the old record, and the new one stamped strictly after it
        await wait_until(lambda: now_ms() > old_ms, interval=0.001)
        boundary_ms = now_ms()
        await wait_until(lambda: now_ms() > boundary_ms, interval=0.001)
        await publish(broker, "ticks", [b"new"])
        await wait_count(c, "ticks", 2)
        page = (await c.get("/api/v1/streams/ticks/messages", params={"since_ms": boundary_ms})).json()
        assert [m["payload"] for m in page["items"]] == ["new"]
        future = (
            await c.get("/api/v1/streams/ticks/messages", params={"since_ms": boundary_ms + 3_600_000})
        ).json()
        assert future["items"] == [] and future["next_offset"] == 2


async def test_stream_list_update_and_delete(broker):
    async with http(broker) as c:
        for name in ("s-a", "s-b", "s-c"):
            assert (await c.post("/api/v1/streams", json={"name": name, "kind": "test"})).status_code == 201
        first = (await c.get("/api/v1/streams", params={"kind": "test", "limit": 2})).json()
        assert [s["config"]["name"] for s in first["items"]] == ["s-a", "s-b"]
        second = (
            await c.get("/api/v1/streams", params={"kind": "test", "cursor": first["next_cursor"]})
        ).json()
        assert [s["config"]["name"] for s in second["items"]] == ["s-c"] and second["next_cursor"] is None

        r = await c.put("/api/v1/streams/s-a", json={"name": "s-a", "kind": "test", "max_msgs": 10})
        assert r.status_code == 200 and r.json()["config"]["max_msgs"] == 10
        assert (await c.delete("/api/v1/streams/s-b")).status_code == 204
        r = await c.get("/api/v1/streams/s-b")
        assert r.status_code == 404 and r.json()["detail"] == "stream not found: s-b"


async def test_stream_errors_are_problem_documents(broker):
    async with http(broker) as c:
        assert (await c.post("/api/v1/streams", json={"name": "dup"})).status_code == 201
        r = await c.post("/api/v1/streams", json={"name": "dup"})
        assert r.status_code == 409 and r.json()["code"] == 409
        r = await c.post("/api/v1/streams", json={"name": "bad", "subjects": ["a..b"]})
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
        r = await c.post("/api/v1/streams", json={"name": "x", "surprise": 1})
        assert r.status_code == 400
        r = await c.post("/api/v1/streams", json={"name": "forever", "default_ttl_s": 1e308})
        assert r.status_code == 400 and "default_ttl_s must be at most" in r.json()["detail"]
        r = await c.put("/api/v1/streams/dup", json={"name": "other"})
        assert r.status_code == 400 and "path" in r.json()["detail"]
        r = await c.put("/api/v1/streams/dup", json={"name": "dup", "storage": "memory"})
        assert r.status_code == 400 and "storage cannot change" in r.json()["detail"]
        assert (await c.put("/api/v1/streams/missing", json={"name": "missing"})).status_code == 404
        assert (await c.delete("/api/v1/streams/missing")).status_code == 404
        assert (await c.get("/api/v1/streams/missing/messages")).status_code == 404
        r = await c.get("/api/v1/streams/dup/messages", params={"partition": 5})
        assert r.status_code == 404 and "no partition 5" in r.json()["detail"]


async def test_internal_streams_are_visible_but_not_changeable(broker):
    async with http(broker) as c:
        names = [
            s["config"]["name"]
            for s in (await c.get("/api/v1/streams", params={"limit": 1000})).json()["items"]
        ]
        internal = [n for n in names if n.startswith("$")]
        assert internal, names
        r = await c.delete(f"/api/v1/streams/{internal[0]}")
        assert r.status_code == 403 and "internal" in r.json()["detail"]
        r = await c.post("/api/v1/streams", json={"name": "$mine"})
        assert r.status_code == 403
        assert (await c.get(f"/api/v1/streams/{internal[0]}")).status_code == 200


async def test_consumers_report_their_lag_and_can_be_deleted(broker):
    async with http(broker) as c:
        await c.post("/api/v1/streams", json={"name": "jobs", "subjects": ["jobs"]})
        await publish(broker, "jobs", [b"1", b"2", b"3"])
        await wait_count(c, "jobs", 3)
        r = await c.post(
            "/api/v1/streams/jobs/consumers", json={"name": "workers", "config": {"ack_wait_ms": 1000}}
        )
        assert r.status_code == 201
        state = r.json()
        assert (
            state["num_waiting"] == 3 and state["ack_floor"] == 0 and state["config"]["ack_wait_ms"] == 1000
        )
        r = await c.post("/api/v1/streams/jobs/consumers", json={"name": "late", "config": {"start": "new"}})
        assert r.json()["num_waiting"] == 0

        listed = (await c.get("/api/v1/streams/jobs/consumers")).json()
        assert [x["name"] for x in listed["items"]] == ["late", "workers"]
        assert (await c.get("/api/v1/streams/jobs/consumers/workers")).json()["num_waiting"] == 3
        assert (await c.get("/api/v1/streams/jobs")).json()["consumers"] == ["late", "workers"]

        assert (await c.post("/api/v1/streams/jobs/consumers", json={"name": "workers"})).status_code == 409
        assert (await c.delete("/api/v1/streams/jobs/consumers/workers")).status_code == 204
        assert (await c.get("/api/v1/streams/jobs/consumers/workers")).status_code == 404
        assert (await c.delete("/api/v1/streams/jobs/consumers/workers")).status_code == 404
        assert (await c.get("/api/v1/streams/nope/consumers")).status_code == 404
        r = await c.post("/api/v1/streams/jobs/consumers", json={"name": "x", "config": {"order": "random"}})
        assert r.status_code == 400


async def test_query_answers_a_select_over_the_index(broker):
    async with http(broker) as c:
        await c.post("/api/v1/streams", json={"name": "metrics", "subjects": ["metrics.*"]})
        await publish(broker, "metrics.cpu", [b"a", b"b"])
        await publish(broker, "metrics.mem", [b"c"])
        await wait_count(c, "metrics", 3)
        sql = "SELECT subject, count(*) AS n FROM messages WHERE stream = 'metrics' GROUP BY subject ORDER BY subject"

        async def query() -> dict:
            r = await c.post("/api/v1/query", json={"sql": sql})
            assert r.status_code == 200
            return r.json()

        # the index may lag the log by a batch
        body = await wait_for(query, lambda b: b["row_count"] == 2 and sum(row[1] for row in b["rows"]) == 3)
        assert body["columns"] == ["subject", "n"]
        assert body["rows"] == [["metrics.cpu", 2], ["metrics.mem", 1]] and body["truncated"] is False


async def test_query_caps_rows(broker):
    async with http(broker) as c:
        r = await c.post("/api/v1/query", json={"sql": "SELECT * FROM range(50)", "max_rows": 10})
        body = r.json()
        assert r.status_code == 200 and body["row_count"] == 10 and body["truncated"] is True


async def test_query_rows_are_capped_by_the_server_setting(broker_factory):
    b = broker_factory(env={"ROBUSTMQ_HTTP_QUERY_MAX_ROWS": "5"})
    async with http(b) as c:
        body = (await c.post("/api/v1/query", json={"sql": "SELECT * FROM range(50)", "max_rows": 40})).json()
        assert body["row_count"] == 5 and body["truncated"] is True


REFUSED_SQL = [
    "DELETE FROM messages",
    "DROP TABLE messages",
    "INSERT INTO messages SELECT * FROM messages",
    "CREATE TABLE t AS SELECT 1",
    "SELECT 1; DROP TABLE messages",
    "COPY messages TO '/tmp/out.csv'",
    "ATTACH '/tmp/other.db'",
    "PRAGMA database_size",
    "not sql at all",
]


async def test_query_refuses_anything_but_one_select(broker):
    async with http(broker) as c:
        for sql in REFUSED_SQL:
            r = await c.post("/api/v1/query", json={"sql": sql})
            assert r.status_code == 400, (sql, r.text)
            assert r.headers["content-type"] == "application/problem+json"
        r = await c.post("/api/v1/query", json={"sql": ""})
        assert r.status_code == 400


async def test_query_over_its_time_limit_is_408(broker_factory):
    b = broker_factory(env={"ROBUSTMQ_HTTP_QUERY_TIMEOUT_MS": "200"})
    async with http(b) as c:
        heavy = "SELECT count(*) FROM range(1000000000) a, range(1000) b WHERE a.range * b.range % 7 = 3"
        r = await c.post("/api/v1/query", json={"sql": heavy})
        assert r.status_code == 408 and r.json()["code"] == 408
        # the server stays usable
        assert (await c.post("/api/v1/query", json={"sql": "SELECT 42"})).json()["rows"] == [[42]]
