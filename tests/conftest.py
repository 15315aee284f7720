"""Session fixtures for tests against real PostgreSQL and RabbitMQ (no mocks, no skips).

If the infrastructure is missing the fixtures *fail* with a message saying how to start it:
a test suite that silently skips its integration tests proves nothing.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from devstack import infra

# The suite's layers: unit (pure), component (one service or simulator in process, SQLite and the
# in-process bus), integration (one adapter against real PostgreSQL / RabbitMQ), e2e (the whole
# topology as separate processes on both). The last two need the real infrastructure.
INTEGRATION_DIR = Path(__file__).parent / "integration"
E2E_DIR = Path(__file__).parent / "e2e"

FreshDatabase = Callable[[str], Awaitable[str]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ and tests/e2e/ carries the `integration` marker, and
    tests/e2e/ also `e2e` (`-m "not integration"` runs what needs no PostgreSQL or RabbitMQ)."""
    for item in items:
        if INTEGRATION_DIR in item.path.parents or E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def run_id() -> str:
    """Short random hex shared by the whole session; namespaces databases and broker names."""
    return secrets.token_hex(4)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """asyncpg URL of a PostgreSQL superuser (`postgresql+asyncpg://.../postgres`)."""
    try:
        return infra.postgres_admin_url()
    except infra.InfraUnavailable as exc:
        missing = str(exc)
    pytest.fail(missing, pytrace=False)


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """AMQP URL of a RabbitMQ broker (`amqp://guest:guest@127.0.0.1:5672/` locally)."""
    try:
        return infra.rabbitmq_url()
    except infra.InfraUnavailable as exc:
        missing = str(exc)
    pytest.fail(missing, pytrace=False)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "db"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def fresh_database(postgres_admin_url: str, run_id: str) -> AsyncIterator[FreshDatabase]:
    """Factory: `url = await fresh_database("orders")` creates an empty `cs_<run_id>_orders`
    database (recreated if asked for again) and returns its asyncpg URL. Every database made
    through it is dropped at the end of the session."""
    created: list[str] = []

    async def make(service: str) -> str:
        name = f"cs_{run_id}_{_slug(service)}"[:63]
        url = await infra.create_database(postgres_admin_url, name)
        if name not in created:
            created.append(name)
        return url

    yield make

    failures: list[str] = []
    for name in reversed(created):
        try:
            await infra.drop_database(postgres_admin_url, name)
        except Exception as exc:
            failures.append(f"{name}: {exc!r}")
    if failures:
        raise RuntimeError("could not drop test databases: " + "; ".join(failures))
