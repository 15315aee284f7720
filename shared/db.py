"""Async engine and sessions: asyncpg on PostgreSQL, aiosqlite for the embedded default."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Dialect,
    Integer,
    TypeDecorator,
    any_,
    bindparam,
    event,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

# Stable constraint names, so Alembic migrations can alter them on PostgreSQL and SQLite alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out; SQLite would otherwise hand back naive times, which cannot
    be compared with an aware `now`. Migrations spell it `sa.DateTime(timezone=True)`."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments INTEGER PRIMARY KEY columns.
BigIntPk = BigInteger().with_variant(Integer(), "sqlite")


def make_engine(url: str, *, pool_size: int = 8) -> AsyncEngine:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        # No overflow: a process never holds more than pool_size connections, so an operator
        # can size the pools of all replicas against the server's max_connections.
        # No pre-ping: on asyncpg it is BEGIN, a ping and ROLLBACK (three round trips) before
        # every transaction. A connection that died is found by the statement that uses it:
        # SQLAlchemy then invalidates the pool, a route answers 503 database_unavailable and a
        # consumer's message is redelivered.
        kwargs.update(pool_size=pool_size, max_overflow=0)
        if _is_loopback(parsed.host) and not _asks_for_tls(parsed.query):
            # asyncpg otherwise tries TLS first on every new connection (sslmode=prefer), which
            # on loopback only costs a round trip and an SSLContext per connect.
            kwargs["connect_args"] = {"ssl": False}
    engine = create_async_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        _tune_sqlite(engine)
    return engine


def _is_loopback(host: str | None) -> bool:
    return host is None or host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")


def _asks_for_tls(query: Mapping[str, Any]) -> bool:
    """Whether the URL sets TLS itself (`?ssl=` or `?sslmode=`); then it is left as asked."""
    return "sslmode" in query or "ssl" in query


def _tune_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # WAL lets the API read while a handler writes; foreign keys are off by default in SQLite.
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()
        # Take transaction control from the driver so that _on_begin decides how to begin.
        dbapi_conn.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
        # another writer got in between; taking the write lock up front makes writers queue up.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def upsert_insert(session: AsyncSession) -> Any:
    """The dialect's `insert` construct, which has `on_conflict_do_nothing` / `_do_update`
    (plain SQLAlchemy `insert` has neither, and the two dialects spell the same SQL)."""
    return pg_insert if is_postgres(session) else sqlite_insert


def insert_or_nothing(table: Any, *keys: str) -> dict[bool, Any]:
    """`INSERT ... ON CONFLICT (keys) DO NOTHING` on `table`, built once for both dialects and
    keyed by `is_postgres(...)`: hot paths run it with parameters instead of building it (and
    its cache key) per call, which cost about as much CPU as running it."""
    return {
        postgres: insert(table).on_conflict_do_nothing(index_elements=list(keys))
        for postgres, insert in ((True, pg_insert), (False, sqlite_insert))
    }


def is_postgres(session_or_engine: AsyncSession | AsyncEngine) -> bool:
    bind = (
        session_or_engine.bind if isinstance(session_or_engine, AsyncSession) else session_or_engine
    )
    return bind is not None and bind.dialect.name == "postgresql"


def one_of(column: Any, values: list[Any], *, postgres: bool) -> ColumnElement[bool]:
    """`column IN values` that is one SQL text whatever the number of values on PostgreSQL
    (`= ANY($1)` with an array): an expanded `IN ($1, $2, ...)` is a different statement for
    each length, so each new length costs asyncpg a prepare round trip and a cache slot."""
    if postgres:
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(values)


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE matched. SQLAlchemy types `execute()` as returning a `Result`,
    which has no `rowcount`; the `CursorResult` a DML statement really returns does."""
    return int(result.rowcount)
