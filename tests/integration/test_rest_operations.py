"""Operations endpoints of the control plane against a real broker: health, readiness, server info,
connections and subscriptions of NATS clients, metrics, problem documents, paging."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import nats
from helpers.waits import wait_until


def http(broker) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{broker.ports['http']}", timeout=10)


async def test_healthz_and_readyz_report_every_part_started(broker):
    async with http(broker) as c:
        r = await c.get("/healthz")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        r = await c.get("/readyz")
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ready"
        assert body["components"]["nats"] == "started"
        assert body["components"]["http"] == "started"


async def test_openapi_document_and_docs_page_are_served(broker):
    async with http(broker) as c:
        doc = (await c.get("/openapi.json")).json()
        assert doc["openapi"].startswith("3.")
        assert "/api/v1/connections" in doc["paths"]
        assert "Problem" in doc["components"]["schemas"]
        # invalid input is documented as a 400 problem document, not FastAPI's 422
        responses = doc["paths"]["/api/v1/connections"]["get"]["responses"]
        assert "422" not in responses and "application/problem+json" in responses["400"]["content"]
        docs = await c.get("/docs")
        assert docs.status_code == 200 and "openapi.json" in docs.text


async def test_server_info_lists_the_bound_listeners(broker):
    async with http(broker) as c:
        info = (await c.get("/api/v1/server")).json()
    listeners = {item["name"]: item["port"] for item in info["listeners"]}
    assert listeners["nats"] == broker.ports["nats"]
    assert listeners["http"] == broker.ports["http"]
    assert info["auth_required"] is False
    assert "http" in info["components"]


async def test_connections_list_a_nats_client_with_its_counters(broker):
    nc = await nats.connect(broker.nats_url, name="rest-probe")
    try:
        await nc.publish("probe.subject", b"12345")
        await nc.flush()
        async with http(broker) as c:
            page = (await c.get("/api/v1/connections", params={"protocol": "nats"})).json()
        mine = [item for item in page["items"] if item["name"] == "rest-probe"]
        assert len(mine) == 1
        conn = mine[0]
        assert conn["protocol"] == "nats"
        assert conn["lang"].startswith("python")
        assert conn["in_msgs"] >= 1 and conn["in_bytes"] >= 5
        assert conn["ip"] == "127.0.0.1" and conn["start_ms"] > 0
    finally:
        await nc.close()


async def test_connections_are_paged_with_a_cursor(broker):
    clients = [await nats.connect(broker.nats_url, name=f"pager-{i}") for i in range(5)]
    try:
        seen: list[int] = []
        cursor = None
        async with http(broker) as c:
            while True:
                params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
                page = (await c.get("/api/v1/connections", params=params)).json()
                assert len(page["items"]) <= 2
                seen += [item["cid"] for item in page["items"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
        assert len(seen) == 5 and seen == sorted(seen) and len(set(seen)) == 5
    finally:
        for nc in clients:
            await nc.close()


async def test_connections_filter_by_an_unknown_protocol_is_empty(broker):
    async with http(broker) as c:
        page = (await c.get("/api/v1/connections", params={"protocol": "kafka"})).json()
    assert page == {"items": [], "next_cursor": None}


async def test_subscriptions_list_nats_interest_and_filter_by_test_subject(broker):
    nc = await nats.connect(broker.nats_url)
    try:
        await nc.subscribe("orders.*.created", queue="workers")
        await nc.subscribe("audit.>")
        await nc.flush()
        async with http(broker) as c:
            all_subs = (await c.get("/api/v1/subscriptions", params={"protocol": "nats"})).json()["items"]
            hit = (await c.get("/api/v1/subscriptions", params={"test": "orders.eu.created"})).json()["items"]
            miss = (await c.get("/api/v1/subscriptions", params={"test": "orders.eu.deleted"})).json()[
                "items"
            ]
        subjects = {s["subject"]: s for s in all_subs}
        assert subjects["orders.*.created"]["queue"] == "workers"
        assert subjects["audit.>"]["protocol"] == "nats" and subjects["audit.>"]["cid"] is not None
        assert [s["subject"] for s in hit] == ["orders.*.created"]
        assert all(s["subject"] != "orders.*.created" for s in miss)
    finally:
        await nc.close()


async def test_invalid_input_is_a_400_problem_document(broker):
    async with http(broker) as c:
        r = await c.get("/api/v1/connections", params={"limit": 0})
        assert r.status_code == 400
        assert r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["status"] == 400 and problem["code"] == 400 and problem["title"] == "Bad Request"
        assert problem["instance"] == "/api/v1/connections"
        assert problem["errors"][0]["loc"] == ["query", "limit"]

        r = await c.get("/api/v1/subscriptions", params={"test": "bad..subject"})
        assert r.status_code == 400 and "not a valid subject" in r.json()["detail"]

        r = await c.get("/api/v1/connections", params={"cursor": "!!not-ours!!"})
        assert r.status_code == 400 and r.json()["detail"] == "cursor is not one this server issued"


async def test_unknown_path_and_method_are_problem_documents(broker):
    async with http(broker) as c:
        r = await c.get("/api/v1/nothing-here")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        r = await c.delete("/api/v1/server")
        assert r.status_code == 405 and r.json()["status"] == 405


async def test_metrics_are_prometheus_text_with_connections_and_requests(broker):
    nc = await nats.connect(broker.nats_url)
    try:
        await nc.subscribe("metrics.probe")
        await nc.flush()
        async with http(broker) as c:
            await c.get("/healthz")
            r = await c.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        text = r.text
        assert 'robustmq_connections{protocol="nats"} 1.0' in text
        assert "robustmq_subscriptions " in text
        assert 'robustmq_http_requests_total{method="GET",route="/healthz",status="200"}' in text
        assert "robustmq_process_resident_memory_bytes" in text
    finally:
        await nc.close()


def _sample(text: str, name: str) -> float:
    """The value of one unlabelled sample in Prometheus text (0 when it is not there)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def test_store_appends_and_fsync_latency_move_after_publishes_to_a_stream(broker):
    async with http(broker) as c:
        before = (await c.get("/metrics")).text
        assert "# TYPE robustmq_store_fsync_seconds histogram" in before
        r = await c.post("/api/v1/streams", json={"name": "metered", "subjects": ["metered.>"]})
        assert r.status_code == 201
        nc = await nats.connect(broker.nats_url)
        try:
            for i in range(5):
                await nc.publish("metered.x", b"m%d" % i)
            await nc.flush()
        finally:
            await nc.close()

        async def committed_and_synced() -> str | None:
            r = await c.get("/api/v1/streams/metered")
            text = (await c.get("/metrics")).text
            done = r.json()["count"] == 5 and _sample(text, "robustmq_store_fsync_seconds_count") > 0
            return text if done else None

        # the records are committed and synced in the background
        text = await wait_until(committed_and_synced, what="five records committed and synced")
    appends = _sample(text, "robustmq_store_appends_total") - _sample(before, "robustmq_store_appends_total")
    assert appends >= 5
    assert _sample(text, "robustmq_store_appended_bytes_total") > _sample(
        before, "robustmq_store_appended_bytes_total"
    )
    assert _sample(text, "robustmq_store_commits_total") > _sample(before, "robustmq_store_commits_total")
    assert _sample(text, "robustmq_store_fsync_seconds_count") > 0
    assert 'robustmq_store_fsync_seconds_bucket{le="+Inf"}' in text
    assert _sample(text, "robustmq_store_fsync_seconds_sum") > 0


async def test_request_body_over_the_limit_is_413(broker_factory):
    b = broker_factory(env={"ROBUSTMQ_HTTP_MAX_REQUEST_BYTES": "1000"})
    async with http(b) as c:
        r = await c.post("/api/v1/server", content=b"x" * 1001)
        assert r.status_code == 413
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == "the request body exceeds 1000 bytes"

        async def chunks():
            for _ in range(20):
                yield b'{"name": "' + b"x" * 100

        # no Content-Length: the body is counted as it arrives
        r = await c.post("/api/v1/streams", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["status"] == 413
        ok = await c.post("/api/v1/streams", json={"name": "small"})
        assert ok.status_code == 201


def test_a_taken_http_port_is_a_clear_start_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "robustmq", "serve", "--host", "127.0.0.1", "--data-dir", str(tmp_path),
             "--nats-port", "0", "--mqtt-port", "off", "--amqp-port", "off", "--kafka-port", "off", "--http-port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode != 0
    assert "cannot start http" in proc.stderr and "in use" in proc.stderr
