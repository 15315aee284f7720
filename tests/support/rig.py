"""One in-process rig for the tests of every service: the service built for real (its migrations,
its dispatcher, its outbox and inbox) on SQLite or PostgreSQL with the in-process bus, an HTTP
client on its app, tokens its API accepts, deliveries as the bus makes them, and reads of what it
wrote to its outbox. Service conveniences (a cart's lines, the server panel) build on it in
`tests/support/<service>.py`."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import SecretStr
from sqlalchemy import select

from shared.auth import issue_token
from shared.memory_bus import MemoryBus
from shared.messages import Contract, Envelope
from shared.runtime import ServiceRuntime
from shared.settings import ServiceSettings

# Every rig's service is built with this secret, so one token helper serves all of them.
JWT_SECRET = "checkout-saga-test-jwt-secret-0123456789abcdef"

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)
RigT = TypeVar("RigT", bound="ServiceRig")
# A service's `bootstrap.build`: (settings, *, bus, auto_migrate, <its own adapters>) -> runtime.
Build = Callable[..., ServiceRuntime[Any, Any]]


def sqlite_url(db_file: Path) -> str:
    return f"sqlite+aiosqlite:///{db_file}"


def settings_for(kind: type[SettingsT], database_url: str, **overrides: Any) -> SettingsT:
    """A service's settings for a rig: its database, the in-process bus and the rigs' secret."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "broker_url": "memory://",
        "jwt_secret": SecretStr(JWT_SECRET),
        **overrides,
    }
    return kind(**values)


def new_order_id() -> str:
    """A fresh order id, as the cart makes them (a checkout's id is its order's)."""
    return str(uuid.uuid4())


def as_user(user_id: str = "alice", *, operator: bool = False) -> dict[str, str]:
    """The Authorization header of `user_id`, as every rig's service accepts it."""
    roles = ("operator",) if operator else ()
    return {"Authorization": f"Bearer {issue_token(JWT_SECRET, user_id, roles=roles)}"}


class ServiceRig:
    """A started service, driven the way its callers and the bus drive it."""

    as_user = staticmethod(as_user)

    def __init__(self, runtime: ServiceRuntime[Any, Any], http: httpx.AsyncClient) -> None:
        self.runtime = runtime
        self.http = http

    @classmethod
    async def start(
        cls, build: Build, settings: ServiceSettings, *, auto_migrate: bool = True, **adapters: Any
    ) -> Self:
        """Builds the service on a bus of its own and starts it, migrating its database unless
        told not to; `adapters` go to `build` as they are (a Stripe gateway, provisioners)."""
        bus = MemoryBus(retry=settings.retry)
        runtime = build(settings, bus=bus, auto_migrate=auto_migrate, **adapters)
        try:
            await runtime.start()
        except BaseException:
            # A service that refused to start leaves no engine, adapter or bus behind; the
            # refusal, not a failure of this cleanup, is what the test sees.
            with contextlib.suppress(Exception):
                await runtime.stop()
            await bus.close()
            raise
        transport = httpx.ASGITransport(app=runtime.app(manage_lifecycle=False))
        return cls(
            runtime, httpx.AsyncClient(transport=transport, base_url=f"http://{runtime.name}")
        )

    async def deliver(self, message: Contract, *, correlation_id: str) -> Envelope:
        """Hands one message to the service's dispatcher, as the bus would; its envelope."""
        envelope = Envelope.wrap(message, correlation_id=correlation_id)
        await self.runtime.dispatcher(envelope)
        return envelope

    async def redeliver(self, envelope: Envelope) -> None:
        """The same envelope again (same message id), as the broker does after a lost ack."""
        await self.runtime.dispatcher(envelope)

    async def emitted(
        self, message_type: str | None = None, *, correlation_id: str | None = None
    ) -> list[Envelope]:
        """What the service wrote to its outbox, oldest first: all of it, or of one type or
        one trace."""
        outbox = self.runtime.spec.outbox_table
        query = select(outbox.c.body).order_by(outbox.c.seq)
        if message_type is not None:
            query = query.where(outbox.c.message_type == message_type)
        if correlation_id is not None:
            query = query.where(outbox.c.correlation_id == correlation_id)
        async with self.runtime.sessionmaker() as db:
            bodies = (await db.execute(query)).scalars().all()
        return [Envelope.model_validate_json(body) for body in bodies]

    async def stop(self) -> None:
        await self.http.aclose()
        await self.runtime.stop()
        await self.runtime.bus.close()  # the rig's own: the runtime closes only a bus it built


class Rigs:
    """The rigs a fixture started; all of them are stopped when its block ends, newest first.

    `async with Rigs() as rigs: yield await rigs.start(ServiceRig, build, settings)`"""

    def __init__(self) -> None:
        self._started: list[ServiceRig] = []

    def __len__(self) -> int:
        return len(self._started)

    async def start(
        self, kind: type[RigT], build: Build, settings: ServiceSettings, **adapters: Any
    ) -> RigT:
        rig = await kind.start(build, settings, **adapters)
        self._started.append(rig)
        return rig

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        while self._started:
            await self._started.pop().stop()
