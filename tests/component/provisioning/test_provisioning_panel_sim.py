"""The server panel simulator's own contract, over HTTP in process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from simulators.panel import create_panel_app

BODY = {"order_id": "o-1", "line_no": 1, "plan": "srv-small", "user_id": "alice"}


def client_for(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://panel")  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_panel_app(fail_plans={"srv-doomed"})) as client:
        yield client


async def test_a_server_is_created_once_per_idempotency_key(sim: httpx.AsyncClient) -> None:
    first = await sim.post("/servers", json=BODY, headers={"Idempotency-Key": "o-1:1"})
    again = await sim.post("/servers", json=BODY, headers={"Idempotency-Key": "o-1:1"})
    other = await sim.post(
        "/servers", json={**BODY, "line_no": 2}, headers={"Idempotency-Key": "o-1:2"}
    )

    assert first.status_code == again.status_code == other.status_code == 201
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]
    assert first.json()["id"].startswith("srv_") and first.json()["status"] == "active"
    fetched = await sim.get(f"/servers/{first.json()['id']}")
    assert fetched.status_code == 200 and fetched.json()["plan"] == "srv-small"


async def test_a_failing_plan_is_refused_with_422(sim: httpx.AsyncClient) -> None:
    response = await sim.post(
        "/servers", json={**BODY, "plan": "srv-doomed"}, headers={"Idempotency-Key": "o-1:1"}
    )
    assert (response.status_code, response.json()["code"]) == (422, "plan_unavailable")


async def test_a_key_reused_for_another_body_is_a_conflict(sim: httpx.AsyncClient) -> None:
    await sim.post("/servers", json=BODY, headers={"Idempotency-Key": "k"})
    response = await sim.post(
        "/servers", json={**BODY, "plan": "srv-big"}, headers={"Idempotency-Key": "k"}
    )
    assert response.status_code == 409


async def test_a_request_without_key_is_refused(sim: httpx.AsyncClient) -> None:
    assert (await sim.post("/servers", json=BODY)).status_code == 400


async def test_unknown_server_and_health(sim: httpx.AsyncClient) -> None:
    assert (await sim.get("/servers/srv_nope")).status_code == 404
    assert (await sim.get("/health")).json()["status"] == "alive"


async def test_fail_plans_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANEL_SIM_FAIL_PLANS", "srv-a, srv-b")
    async with client_for(create_panel_app()) as client:
        refused = await client.post(
            "/servers", json={**BODY, "plan": "srv-b"}, headers={"Idempotency-Key": "1"}
        )
        created = await client.post("/servers", json=BODY, headers={"Idempotency-Key": "2"})
    assert (refused.status_code, created.status_code) == (422, 201)
