"""Control-plane authentication and roles: bearer tokens and user/password from the config file,
401 without valid credentials, 403 for a reader that tries to change something."""

from __future__ import annotations

import base64

import httpx
import pytest

CONFIG = """
[auth]
token = "nats-admin-secret"

[[auth.users]]
user = "ops"
password = "ops-pass"
role = "reader"

[[http.tokens]]
token = "admin-token"
role = "admin"

[[http.tokens]]
token = "reader-token"
role = "reader"
"""


@pytest.fixture
def secured(broker_factory, tmp_path):
    path = tmp_path / "robustmq.toml"
    path.write_text(CONFIG)
    return broker_factory("--config", str(path))


def client(broker, token: str | None = None, basic: tuple[str, str] | None = None) -> httpx.AsyncClient:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if basic is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{broker.ports['http']}", headers=headers, timeout=10)


async def test_probes_and_the_contract_stay_open(secured):
    async with client(secured) as c:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200
        assert (await c.get("/openapi.json")).status_code == 200


async def test_missing_or_unknown_token_is_401_with_a_challenge(secured):
    for token in (None, "wrong-token", "reader-token-but-longer"):
        async with client(secured, token) as c:
            for path in ("/api/v1/server", "/metrics"):
                r = await c.get(path)
                assert r.status_code == 401, (token, path)
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert r.headers["content-type"] == "application/problem+json"
                assert r.json()["detail"] == "a valid bearer token is required"


async def test_wrong_password_is_401(secured):
    async with client(secured, basic=("ops", "nope")) as c:
        assert (await c.get("/api/v1/server")).status_code == 401


async def test_reader_token_may_read(secured):
    async with client(secured, "reader-token") as c:
        r = await c.get("/api/v1/server")
        assert r.status_code == 200 and r.json()["auth_required"] is True
        assert (await c.get("/metrics")).status_code == 200


async def test_reader_user_with_basic_auth_may_read(secured):
    async with client(secured, basic=("ops", "ops-pass")) as c:
        assert (await c.get("/api/v1/connections")).status_code == 200


async def test_admin_token_may_read_and_the_nats_token_is_no_admin(secured):
    async with client(secured, "admin-token") as c:
        assert (await c.get("/api/v1/subscriptions")).status_code == 200
    # auth.token is what it is over NATS, a client with no user: its data, no server-wide views
    async with client(secured, "nats-admin-secret") as c:
        assert (await c.get("/api/v1/subscriptions")).status_code == 403
        assert (await c.get("/api/v1/mailboxes")).status_code == 200


async def test_reader_may_not_change_anything(secured):
    for credentials in ({"token": "reader-token"}, {"basic": ("ops", "ops-pass")}):
        async with client(secured, **credentials) as c:
            r = await c.post("/api/v1/streams", json={"name": "by-reader"})
            assert r.status_code == 403
            assert r.json()["detail"] == "the reader role may only use GET"
            assert (await c.delete("/api/v1/streams/anything")).status_code == 403


async def test_admin_may_change_things(secured):
    async with client(secured, "admin-token") as c:
        assert (await c.post("/api/v1/streams", json={"name": "by-admin"})).status_code == 201
        assert (await c.delete("/api/v1/streams/by-admin")).status_code == 204
