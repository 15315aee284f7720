"""What the benchmark reads from the services' databases, never through their APIs (so reading
adds no HTTP load): order status history as it is written, open Stripe sessions to pay, and the
counters of pg_stat_database, the outboxes and the inboxes.

Completion times come from `order_status_history.at` (written by orders in the transaction that
completes the saga), not from when a poll happened to see them, so the poll interval adds
nothing to the measured latency."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import httpx

from bench.stats import settled_seq
from devstack import infra

log = logging.getLogger("bench.observe")

TERMINAL = frozenset({"completed", "partially_completed", "cancelled", "refunded"})


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(infra.asyncpg_dsn(url), timeout=10)


# How long after its `at` a status row's transaction is assumed committed. Sequence numbers are
# taken at insert and rows become visible at commit, so under concurrency a row with a lower seq
# can appear after one with a higher seq has been read: the watcher keeps re-reading (and
# skipping, by seq) everything younger than this, instead of trusting `seq > last seen`.
SETTLE_SECONDS = 10.0


@dataclass
class OrderWatcher:
    """Follows `order_status_history` as it is committed: every status every order reached, with
    the time orders wrote it (epoch seconds)."""

    database_url: str
    interval: float = 0.1
    history: dict[str, dict[str, float]] = field(default_factory=dict)
    terminal: dict[str, tuple[str, float]] = field(default_factory=dict)
    polls: int = 0
    _safe_seq: int = 0
    _seen: dict[int, float] = field(default_factory=dict)
    _conn: asyncpg.Connection | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.open()
        self._task = asyncio.create_task(self._run(), name="order-watcher")

    async def open(self) -> None:
        """Connect and place the start mark, without polling in the background."""
        self._conn = await connect(self.database_url)
        # Rows written before the watcher started are not its business, but ones still being
        # committed would be: start from the newest row that has surely settled.
        self._safe_seq = int(
            await self._conn.fetchval(
                "SELECT coalesce(max(seq), 0) FROM order_status_history WHERE at < $1",
                datetime.fromtimestamp(time.time() - SETTLE_SECONDS, UTC),
            )
        )
        self._seen = {
            int(r["seq"]): float(r["at"])
            for r in await self._conn.fetch(
                "SELECT seq, extract(epoch FROM at)::float8 AS at FROM order_status_history "
                "WHERE seq > $1",
                self._safe_seq,
            )
        }

    async def poll(self) -> None:
        assert self._conn is not None
        rows = await self._conn.fetch(
            "SELECT seq, order_id, status, extract(epoch FROM at)::float8 AS at "
            "FROM order_status_history WHERE seq > $1 AND NOT (seq = ANY($2::bigint[])) "
            "ORDER BY seq LIMIT 20000",
            self._safe_seq,
            list(self._seen),
        )
        self.polls += 1
        for row in rows:
            self._seen[row["seq"]] = row["at"]
            statuses = self.history.setdefault(row["order_id"], {})
            statuses.setdefault(row["status"], row["at"])
            if row["status"] in TERMINAL and row["order_id"] not in self.terminal:
                self.terminal[row["order_id"]] = (row["status"], row["at"])
        safe = settled_seq(self._safe_seq, self._seen, cutoff=time.time() - SETTLE_SECONDS)
        if safe != self._safe_seq:
            self._safe_seq = safe
            self._seen = {seq: at for seq, at in self._seen.items() if seq > safe}

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except (asyncpg.PostgresError, OSError):
                log.warning("order watcher poll failed", exc_info=True)
            await asyncio.sleep(self.interval)

    async def wait_terminal(self, order_ids: Iterable[str], *, within: float) -> bool:
        """True once every order reached a terminal status, False after `within` seconds."""
        pending = set(order_ids)
        deadline = time.monotonic() + within
        while True:
            pending -= self.terminal.keys()
            if not pending:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        await _cancel(self._task)
        if self._conn is not None:
            await self._conn.close()


@dataclass
class AutoPayer:
    """Pays every open Stripe Checkout Session through the simulator's `/_sim/sessions/{id}/pay`,
    as a shopper pressing "pay" would; the simulator then sends the signed webhook. One query for
    all open sessions per interval, so the cost does not grow with the number of shoppers."""

    database_url: str
    stripe_sim_url: str
    interval: float = 0.02
    concurrency: int = 16
    paid: set[str] = field(default_factory=set)
    errors: int = 0
    _conn: asyncpg.Connection | None = None
    _task: asyncio.Task[None] | None = None
    _http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._conn = await connect(self.database_url)
        self._http = httpx.AsyncClient(
            base_url=self.stripe_sim_url,
            timeout=30,
            limits=httpx.Limits(max_connections=self.concurrency),
        )
        self._task = asyncio.create_task(self._run(), name="auto-payer")

    async def _pay(self, session_id: str, gate: asyncio.Semaphore) -> None:
        assert self._http is not None
        async with gate:
            try:
                response = await self._http.post(f"/_sim/sessions/{session_id}/pay")
                if response.status_code >= 400:
                    self.errors += 1
                    self.paid.discard(session_id)  # try again on the next poll
            except httpx.HTTPError:
                self.errors += 1
                self.paid.discard(session_id)

    async def _run(self) -> None:
        assert self._conn is not None
        gate = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        while True:
            try:
                rows = await self._conn.fetch(
                    "SELECT session_id FROM payment_sessions WHERE status = 'open'"
                )
            except (asyncpg.PostgresError, OSError):
                log.warning("auto-payer poll failed", exc_info=True)
                rows = []
            for row in rows:
                if row["session_id"] not in self.paid:
                    self.paid.add(row["session_id"])
                    task = asyncio.create_task(self._pay(row["session_id"], gate))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        await _cancel(self._task)
        if self._http is not None:
            await self._http.aclose()
        if self._conn is not None:
            await self._conn.close()


@dataclass(frozen=True)
class DbCounters:
    xact_commit: int
    xact_rollback: int
    rows_written: int
    outbox_rows: int
    inbox_rows: int


async def db_counters(
    admin: asyncpg.Connection, service_conns: dict[str, asyncpg.Connection], names: dict[str, str]
) -> dict[str, DbCounters]:
    """pg_stat_database counters of each service's database and its outbox/inbox sizes.

    pg_stat_database lags: backends flush their counts at most once a second while busy and
    10 s after going idle, so callers wait that long before each reading, the same way for the
    measured and the idle window."""
    await admin.execute("SELECT pg_stat_clear_snapshot()")
    stats = {
        row["datname"]: row
        for row in await admin.fetch(
            "SELECT datname, xact_commit, xact_rollback, "
            "tup_inserted + tup_updated + tup_deleted AS written "
            "FROM pg_stat_database WHERE datname = ANY($1::text[])",
            list(names.values()),
        )
    }
    found: dict[str, DbCounters] = {}
    for service, conn in service_conns.items():
        row = stats[names[service]]
        found[service] = DbCounters(
            xact_commit=int(row["xact_commit"]),
            xact_rollback=int(row["xact_rollback"]),
            rows_written=int(row["written"]),
            outbox_rows=int(await conn.fetchval("SELECT coalesce(max(seq), 0) FROM outbox")),
            inbox_rows=int(await conn.fetchval("SELECT count(*) FROM inbox")),
        )
    return found


def counters_delta(
    before: dict[str, DbCounters], after: dict[str, DbCounters]
) -> dict[str, dict[str, int]]:
    return {
        service: {
            name: getattr(after[service], name) - getattr(before[service], name)
            for name in DbCounters.__dataclass_fields__
        }
        for service in before
    }


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def database_names(urls: dict[str, str], services: Sequence[str]) -> dict[str, str]:
    from sqlalchemy.engine import make_url

    return {s: str(make_url(urls[s]).database) for s in services}
