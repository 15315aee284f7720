"""Find real PostgreSQL and RabbitMQ for tests, and create/drop throwaway databases.

Resolution order for each piece of infrastructure:

1. an explicit URL in ``TEST_POSTGRES_URL`` / ``TEST_RABBITMQ_URL`` (must answer, no fallback);
2. the local server on 127.0.0.1 (PostgreSQL 5432, trust auth as ``postgres``; RabbitMQ 5672
   as guest/guest);
3. a throwaway container started with testcontainers, if a Docker engine answers ``docker info``;
4. otherwise :class:`InfraUnavailable`, whose message says what is missing and how to start it.

No pytest import here: the functions are usable from scripts as well as from fixtures.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"

POSTGRES_ENV = "TEST_POSTGRES_URL"
RABBITMQ_ENV = "TEST_RABBITMQ_URL"
POSTGRES_IMAGE = os.environ.get("TEST_POSTGRES_IMAGE", "postgres:16-alpine")
RABBITMQ_IMAGE = os.environ.get("TEST_RABBITMQ_IMAGE", "rabbitmq:3.13-alpine")

POSTGRES_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
RABBITMQ_START = "rabbitmq-server -detached"

PROBE_TIMEOUT = 2.0
CONTAINER_READY_TIMEOUT = 90.0

# PostgreSQL identifiers we create: lower case, no quoting surprises, within NAMEDATALEN.
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class InfraUnavailable(RuntimeError):
    """Required test infrastructure (PostgreSQL or RabbitMQ) cannot be reached or started."""


# --- wire-level probes ------------------------------------------------------------------------


def _postgres_answers(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """True if a PostgreSQL server answers an SSLRequest on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
            reply = sock.recv(1)
    except OSError:
        return False
    return reply in (b"S", b"N")


def _amqp_answers(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """True if an AMQP 0-9-1 broker answers the protocol header on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            reply = sock.recv(8)
    except OSError:
        return False
    # A method frame (connection.start) or the server's own protocol header on a mismatch.
    return reply[:1] == b"\x01" or reply.startswith(b"AMQP")


def _postgres_endpoint(url: str) -> tuple[str, int]:
    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or 5432


def _amqp_endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = 5671 if parts.scheme == "amqps" else 5672
    return parts.hostname or "127.0.0.1", parts.port or default


# --- Docker / testcontainers fallback --------------------------------------------------------

_containers: list[Any] = []


def _stop_containers() -> None:
    while _containers:
        container = _containers.pop()
        with contextlib.suppress(Exception):
            container.stop()


atexit.register(_stop_containers)


def docker_available() -> bool:
    """True if a Docker engine answers (not just a docker client on PATH)."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "info"],
            capture_output=True,
            timeout=20,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@functools.cache
def _postgres_container_url() -> str:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # older testcontainers layout
        from testcontainers.postgres import PostgresContainer

    container = PostgresContainer(
        POSTGRES_IMAGE,
        username="postgres",
        password="postgres",
        dbname="postgres",
        driver="asyncpg",
    )
    container.start()
    _containers.append(container)
    url: str = container.get_connection_url()
    host, port = _postgres_endpoint(url)
    _wait_until(lambda: _postgres_answers(host, port), f"PostgreSQL container at {host}:{port}")
    return url


@functools.cache
def _rabbitmq_container_url() -> str:
    container: Any
    try:
        # Needs `pika` (testcontainers[rabbitmq] extra) for its own readiness probe.
        from testcontainers.community.rabbitmq import RabbitMqContainer
    except ImportError:
        from testcontainers.core.container import DockerContainer

        container = DockerContainer(RABBITMQ_IMAGE).with_exposed_ports(5672)
        container.with_env("RABBITMQ_DEFAULT_USER", "guest")
        container.with_env("RABBITMQ_DEFAULT_PASS", "guest")
    else:
        container = RabbitMqContainer(RABBITMQ_IMAGE, username="guest", password="guest")
    container.start()
    _containers.append(container)
    host = container.get_container_host_ip()
    port = int(container.get_exposed_port(5672))
    _wait_until(lambda: _amqp_answers(host, port), f"RabbitMQ container at {host}:{port}")
    return f"amqp://guest:guest@{host}:{port}/"


def _wait_until(check: Any, what: str, timeout: float = CONTAINER_READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise InfraUnavailable(f"{what} did not become ready within {timeout:.0f}s")
        time.sleep(0.5)


# --- public API -------------------------------------------------------------------------------


def postgres_admin_url() -> str:
    """An asyncpg SQLAlchemy URL of a PostgreSQL superuser connection to the `postgres` DB."""
    override = os.environ.get(POSTGRES_ENV)
    if override:
        host, port = _postgres_endpoint(override)
        if _postgres_answers(host, port):
            return override
        raise InfraUnavailable(
            f"PostgreSQL from ${POSTGRES_ENV} ({host}:{port}) does not answer. "
            f"Start that server or unset {POSTGRES_ENV} to use the local one."
        )

    host, port = _postgres_endpoint(DEFAULT_POSTGRES_URL)
    if _postgres_answers(host, port):
        return DEFAULT_POSTGRES_URL
    if docker_available():
        try:
            return _postgres_container_url()
        except InfraUnavailable:
            raise
        except Exception as exc:
            raise InfraUnavailable(
                f"PostgreSQL is not running on {host}:{port} and starting a testcontainers "
                f"PostgreSQL ({POSTGRES_IMAGE}) failed: {exc!r}"
            ) from exc
    raise InfraUnavailable(
        f"PostgreSQL is not running on {host}:{port} and no Docker engine answers `docker info` "
        f"(needed for the testcontainers fallback). Start the local server with:\n"
        f"    {POSTGRES_START}\n"
        f"or point {POSTGRES_ENV} at a reachable server "
        f"(e.g. postgresql+asyncpg://postgres@host:5432/postgres)."
    )


def rabbitmq_url() -> str:
    """An AMQP URL of a RabbitMQ broker usable by aio-pika."""
    override = os.environ.get(RABBITMQ_ENV)
    if override:
        host, port = _amqp_endpoint(override)
        if _amqp_answers(host, port):
            return override
        raise InfraUnavailable(
            f"RabbitMQ from ${RABBITMQ_ENV} ({host}:{port}) does not answer AMQP. "
            f"Start that broker or unset {RABBITMQ_ENV} to use the local one."
        )

    host, port = _amqp_endpoint(DEFAULT_RABBITMQ_URL)
    if _amqp_answers(host, port):
        return DEFAULT_RABBITMQ_URL
    if docker_available():
        try:
            return _rabbitmq_container_url()
        except InfraUnavailable:
            raise
        except Exception as exc:
            raise InfraUnavailable(
                f"RabbitMQ is not running on {host}:{port} and starting a testcontainers "
                f"RabbitMQ ({RABBITMQ_IMAGE}) failed: {exc!r}"
            ) from exc
    raise InfraUnavailable(
        f"RabbitMQ is not running on {host}:{port} and no Docker engine answers `docker info` "
        f"(needed for the testcontainers fallback). Start the local broker with:\n"
        f"    {RABBITMQ_START}\n"
        f"or point {RABBITMQ_ENV} at a reachable broker (e.g. amqp://guest:guest@host:5672/)."
    )


def asyncpg_dsn(url: str) -> str:
    """`postgresql+asyncpg://...` (SQLAlchemy style) -> `postgresql://...` for asyncpg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def database_url(admin_url: str, name: str) -> str:
    """The admin URL pointed at database `name` (same driver, credentials, host)."""
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _check_name(name: str) -> None:
    if not _DB_NAME.fullmatch(name):
        raise ValueError(
            f"invalid test database name {name!r}: use lower-case letters, digits and '_', "
            "at most 63 characters, not starting with a digit"
        )


TERMINATE_BACKENDS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = $1 AND pid <> pg_backend_pid()"
)


async def _drop(conn: Any, name: str) -> None:
    force = " WITH (FORCE)" if conn.get_server_version().major >= 13 else ""
    for attempt in range(5):
        await conn.execute(TERMINATE_BACKENDS, name)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"{force}')
            return
        except asyncpg.exceptions.ObjectInUseError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.2)  # someone reconnected in between: terminate again


async def create_database(admin_url: str, name: str) -> str:
    """Create an empty database `name` (dropping any previous one) and return its URL."""
    _check_name(name)
    conn = await asyncpg.connect(asyncpg_dsn(admin_url), timeout=10)
    try:
        await _drop(conn, name)
        # template0 never has connections, so concurrent test sessions cannot block the copy.
        await conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
    finally:
        await conn.close()
    return database_url(admin_url, name)


async def ensure_database(admin_url: str, name: str) -> str:
    """Create database `name` unless it exists (keeping its data) and return its URL."""
    _check_name(name)
    conn = await asyncpg.connect(asyncpg_dsn(admin_url), timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
    finally:
        await conn.close()
    return database_url(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    """Terminate every session on database `name`, then drop it (no error if absent)."""
    _check_name(name)
    conn = await asyncpg.connect(asyncpg_dsn(admin_url), timeout=10)
    try:
        await _drop(conn, name)
    finally:
        await conn.close()


async def terminate_connections(admin_url: str, name: str) -> None:
    """Cut every session on database `name` (a failover or a restart, as its clients see it)."""
    _check_name(name)
    conn = await asyncpg.connect(asyncpg_dsn(admin_url), timeout=10)
    try:
        await conn.execute(TERMINATE_BACKENDS, name)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def database_closed(admin_url: str, name: str) -> AsyncIterator[None]:
    """Database `name` refuses connections, its open ones cut, until the block ends.

    Opened again whatever happens meanwhile, a cancelled caller included: an outage left behind
    would fail whatever reads the database next, not the system under test."""
    _check_name(name)
    conn = await asyncpg.connect(asyncpg_dsn(admin_url), timeout=10)
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            await conn.execute(TERMINATE_BACKENDS, name)
            yield
        finally:
            # Shielded, and awaited even when cancelled: the connection is closed only after.
            reopen = asyncio.ensure_future(
                conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            )
            try:
                await asyncio.shield(reopen)
            except asyncio.CancelledError:
                await reopen
                raise
    finally:
        await conn.close()
