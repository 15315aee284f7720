"""Every HTTP answer carries its trace id in `X-Trace-Id`: the client's, a new one, or the one a
route chose; error bodies name the same id, and `trace_id_var` holds it only during the request."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI, Request
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc

from shared.errors import ApiError, install
from shared.logging import trace_id_var

app = FastAPI()
install(app)


class Body(BaseModel):
    n: int


@app.get("/plain")
async def plain() -> dict[str, str | None]:
    return {"trace_id": trace_id_var.get(None)}


@app.post("/renamed")
async def renamed(request: Request) -> dict[str, str]:
    request.state.trace_id = "chosen-by-route"
    return {}


@app.get("/renamed-then-fails")
async def renamed_then_fails(request: Request) -> None:
    request.state.trace_id = "chosen-before-failing"
    raise ApiError(409, "conflict", "it conflicts")


@app.get("/api-error")
async def api_error() -> None:
    raise ApiError(409, "conflict", "it conflicts", details={"why": "because"})


@app.get("/database-away")
async def database_away() -> None:
    raise sa_exc.OperationalError("SELECT 1", {}, ConnectionError("server closed"))


@app.post("/validated")
async def validated(body: Body) -> dict[str, int]:
    return {"n": body.n}


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        yield client


async def test_the_clients_trace_id_is_echoed_and_set_for_the_request(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/plain", headers={"X-Trace-Id": "from-client"})

    assert response.headers["X-Trace-Id"] == "from-client"
    assert response.json() == {"trace_id": "from-client"}
    assert trace_id_var.get(None) is None


async def test_a_request_without_one_gets_a_new_trace_id_each_time(
    http: httpx.AsyncClient,
) -> None:
    first = await http.get("/plain")
    second = await http.get("/plain", headers={"X-Trace-Id": ""})

    assert len(first.headers["X-Trace-Id"]) == 32
    assert first.json()["trace_id"] == first.headers["X-Trace-Id"]
    assert second.headers["X-Trace-Id"] not in ("", first.headers["X-Trace-Id"])


async def test_a_route_may_replace_the_trace_id(http: httpx.AsyncClient) -> None:
    ok = await http.post("/renamed", headers={"X-Trace-Id": "from-client"})
    failed = await http.get("/renamed-then-fails")

    assert ok.headers["X-Trace-Id"] == "chosen-by-route"
    assert failed.headers["X-Trace-Id"] == failed.json()["trace_id"] == "chosen-before-failing"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api-error", 409, "conflict"),
        ("GET", "/database-away", 503, "database_unavailable"),
        ("POST", "/validated", 422, "validation_error"),
        ("GET", "/nowhere", 404, "not_found"),
        ("DELETE", "/plain", 405, "method_not_allowed"),
    ],
)
async def test_error_answers_carry_the_trace_id_in_header_and_body(
    http: httpx.AsyncClient, method: str, path: str, status: int, code: str
) -> None:
    response = await http.request(method, path, headers={"X-Trace-Id": "t-1"}, json={"n": "x"})

    assert (response.status_code, response.json()["code"]) == (status, code)
    assert response.headers["X-Trace-Id"] == response.json()["trace_id"] == "t-1"
    assert response.headers.get_list("X-Trace-Id") == ["t-1"]
    if status == 503:
        assert response.headers["Retry-After"] == "1"
