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


async def test_a_database_refusing_connections_is_a_retryable_503(
    fresh_database: Callable[[str], Awaitable[str]], postgres_admin_url: str
) -> None:
    """The chaos run's database outage: `ALLOW_CONNECTIONS false` is refused at connect with
    SQLSTATE 55000, which asyncpg hands SQLAlchemy as a generic DBAPI error."""
    url = await fresh_database("refusing")
    engine = make_engine(url, pool_size=2)
    admin = make_engine(postgres_admin_url, pool_size=1)
    database = url.rsplit("/", 1)[-1]
    app = FastAPI()
    errors.install(app)

    @app.get("/read")
    async def read() -> dict[str, int]:
        async with engine.connect() as conn:
            return {"one": (await conn.execute(text("SELECT 1"))).scalar_one()}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
            admin.connect() as conn,
        ):
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            assert (await client.get("/read")).status_code == 200
            await engine.dispose()  # a fresh connect, not a pooled connection, meets the refusal
            await auto.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
            try:
                response = await client.get("/read")
                assert response.status_code == 503
                assert response.json()["code"] == "database_unavailable"
            finally:
                await auto.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
            assert (await client.get("/read")).status_code == 200
    finally:
        await engine.dispose()
        await admin.dispose()
