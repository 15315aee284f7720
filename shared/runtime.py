"""Everything a service process wires together once: engine, bus, outbox relay, consumer,
background tasks and the FastAPI app with /health and /ready."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import MetaData, Table, text
from sqlalchemy.ext.asyncio import AsyncSession

from shared import errors
from shared.bus import Bus, RabbitBus
from shared.db import make_engine, make_sessionmaker
from shared.dispatch import Dispatcher, Handler
from shared.logging import service_var
from shared.memory_bus import MemoryBus
from shared.messages import Contract, Envelope
from shared.migrations import ensure_at_head, upgrade_to_head
from shared.outbox import Outbox
from shared.relay import OutboxRelay
from shared.settings import ServiceSettings

log = logging.getLogger("shared.runtime")

BackgroundTask = Callable[["ServiceRuntime[Any, Any]"], Coroutine[Any, Any, None]]

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)
DepsT = TypeVar("DepsT")


@dataclass
class ServiceSpec(Generic[SettingsT, DepsT]):
    """What a service declares; `bootstrap.py` of each service builds one.

    `settings` and `deps` keep their service's own types: routes, handlers and background tasks
    reach them as `runtime.settings` and `runtime.deps` of a `ServiceRuntime[XSettings, XDeps]`,
    never by string key or cast. `deps` holds what bootstrap built besides the runtime (timing,
    a Stripe gateway, admission control, provisioners); a service with none passes `None`."""

    name: str
    settings: SettingsT
    deps: DepsT
    metadata: MetaData
    migrations_dir: Path
    outbox_table: Table
    inbox_table: Table
    handlers: Mapping[type[Contract], Handler]
    # Messages whose handlers call out (Stripe, a server panel): applied each in a transaction
    # of its own, never grouped, so a slow or retried call holds no other message's locks.
    apply_alone: frozenset[type[Contract]] = frozenset()
    routers: Sequence[APIRouter] = ()
    background: Sequence[BackgroundTask] = ()
    on_startup: BackgroundTask | None = None
    # Closes adapters the service built (HTTP clients, ...) after consumers and tasks stopped.
    on_shutdown: BackgroundTask | None = None


def build_bus(settings: ServiceSettings) -> Bus:
    if settings.broker_url.startswith("memory"):
        return MemoryBus(concurrency=settings.prefetch, retry=settings.retry)
    return RabbitBus(
        settings.broker_url,
        namespace=settings.bus_namespace,
        prefetch=settings.prefetch,
        delivery_limit=settings.delivery_limit,
        retry=settings.retry,
        connect_within=settings.broker_connect_within_seconds,
    )


class ServiceRuntime(Generic[SettingsT, DepsT]):
    def __init__(
        self,
        spec: ServiceSpec[SettingsT, DepsT],
        *,
        bus: Bus | None = None,
        auto_migrate: bool = False,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.settings: SettingsT = spec.settings
        self.deps: DepsT = spec.deps
        self.engine = make_engine(spec.settings.database_url, pool_size=spec.settings.db_pool_size)
        self.sessionmaker = make_sessionmaker(self.engine)
        self._owns_bus = bus is None
        self.bus: Bus = bus if bus is not None else build_bus(spec.settings)
        self.auto_migrate = auto_migrate
        self.relay = OutboxRelay(
            self.sessionmaker,
            spec.outbox_table,
            self.bus,
            batch_size=spec.settings.relay_batch_size,
            idle_poll_seconds=spec.settings.relay_idle_poll_seconds,
        )
        # Whatever commits outbox rows in this process (handlers, routes, background tasks)
        # hands them to the relay as it commits: no relay transaction to read them back.
        self.outbox = Outbox(spec.outbox_table, on_committed=self.relay.handover)
        self.dispatcher = Dispatcher(
            service=spec.name,
            sessionmaker=self.sessionmaker,
            outbox=self.outbox,
            inbox=spec.inbox_table,
            handlers=spec.handlers,
            max_batch=spec.settings.handler_group_max,
            max_concurrent=spec.settings.handler_concurrency,
            alone=spec.apply_alone,
        )
        self._tasks: list[asyncio.Task[None]] = []

    # --- units of work for API routes --------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A committed-or-rolled-back session; the relay publishes what it emitted."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def emit(
        self, session: AsyncSession, message: Contract, *, correlation_id: str
    ) -> Envelope:
        return await self.outbox.emit(session, message, correlation_id=correlation_id)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        service_var.set(self.name)
        if self.auto_migrate:
            await upgrade_to_head(self.engine, self.spec.migrations_dir)
        await ensure_at_head(self.engine, self.spec.migrations_dir)
        if self.spec.on_startup is not None:
            try:
                await self.spec.on_startup(self)
            except Exception as exc:
                log.error("%s refuses to start: %s", self.name, exc)
                await self.engine.dispose()
                raise
        if self._owns_bus:
            await self.bus.start()
        await self.bus.subscribe(self.name, self.dispatcher)
        self._tasks.append(asyncio.create_task(self.relay.run(), name=f"{self.name}-relay"))
        for task in self.spec.background:
            self._tasks.append(asyncio.create_task(task(self), name=f"{self.name}-{task.__name__}"))
        log.info("%s started", self.name)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._owns_bus:
            await self.bus.close()
        if self.spec.on_shutdown is not None:
            await self.spec.on_shutdown(self)
        await self.engine.dispose()

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            await ensure_at_head(self.engine, self.spec.migrations_dir)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        checks["broker"] = "ok" if self.bus.is_connected() else "error: disconnected"
        return checks

    def app(self, *, manage_lifecycle: bool = True) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        app = FastAPI(
            title=f"checkout-saga {self.name}", lifespan=lifespan if manage_lifecycle else None
        )
        app.state.runtime = self
        app.state.jwt_secret = self.settings.jwt_secret.get_secret_value()
        errors.install(app)

        @app.get("/health", tags=["ops"])
        async def health() -> dict[str, str]:
            return {"status": "alive", "service": self.name}

        @app.get("/ready", tags=["ops"])
        async def ready() -> JSONResponse:
            checks = await self.readiness()
            ok = all(v == "ok" for v in checks.values())
            return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)

        for router in self.spec.routers:
            app.include_router(router)
        return app


def runtime_from(request: Request) -> ServiceRuntime[Any, Any]:
    """The runtime of the service that serves this request. Each service's API names the type
    it gets (`Annotated[ServiceRuntime[OrdersSettings, OrdersDeps], Depends(runtime_of)]`)."""
    runtime: ServiceRuntime[Any, Any] = request.app.state.runtime
    return runtime


async def runtime_of(request: Request) -> ServiceRuntime[Any, Any]:
    """FastAPI dependency for `runtime_from`. Async on purpose: FastAPI runs a plain `def`
    dependency in a worker thread, a thread hand-over per request for a dictionary lookup."""
    return runtime_from(request)
