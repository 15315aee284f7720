"""A request whose database connection is killed under it (a PostgreSQL backend terminated, as
the chaos run does) is answered 503 `database_unavailable` with Retry-After, not a bare 500; a
request's own database error (a constraint) stays a 500."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from shared import errors
from shared.db import make_engine


async def test_a_killed_backend_is_a_retryable_503_and_a_bad_statement_is_not(
    fresh_database: Callable[[str], Awaitable[str]],
) -> None:
    engine = make_engine(await fresh_database("apierrors"), pool_size=2)
    app = FastAPI()
    errors.install(app)

    @app.put("/killed")
    async def killed() -> dict[str, str]:
        async with engine.begin() as conn:
            # Another session would do this to us; terminating our own backend is the same.
            await conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
            await conn.execute(text("SELECT 1"))
        return {"ok": "no"}

    @app.put("/bad")
    async def bad() -> dict[str, str]:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT 1 / 0"))
        return {"ok": "no"}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.put("/killed")
            assert response.status_code == 503
            assert response.json()["code"] == "database_unavailable"
            assert response.headers["Retry-After"] == "1"
            assert response.headers[errors.TRACE_HEADER] == response.json()["trace_id"]

            assert (await client.put("/bad")).status_code == 500
    finally:
        await engine.dispose()
