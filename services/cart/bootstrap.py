"""Builds the cart service: the one place its real adapters are made."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from services.cart import api
from services.cart import repository as repo
from services.cart.admission import Admission
from services.cart.checkout_sessions import api as checkout_sessions_api
from services.cart.checkout_sessions.service import clean_up_sessions
from services.cart.deps import CartDeps, CartRuntime
from services.cart.handlers import HANDLERS
from services.cart.models import Base, inbox, outbox
from services.cart.recovery import ask_after_silent_checkouts
from services.cart.settings import CartSettings
from shared.bus import Bus
from shared.logging import log_fields
from shared.messages.contracts import CART
from shared.runtime import ServiceRuntime, ServiceSpec

MIGRATIONS = Path(__file__).parent / "migrations"

log = logging.getLogger("services.cart.bootstrap")

# Priced in the settings' default currency (EUR unless configured otherwise).
DEFAULT_CATALOGUE: tuple[dict[str, Any], ...] = (
    {"id": "credits-100", "kind": "credit_pack", "name": "100 credits",
     "unit_price": 1000, "credit_price": None, "units_per_item": 100},
    {"id": "pkg-10", "kind": "session_package", "name": "10 coaching sessions",
     "unit_price": 5000, "credit_price": 400, "units_per_item": 10},
    {"id": "vps-small", "kind": "server_plan", "name": "VPS small (1 month)",
     "unit_price": 1500, "credit_price": 120, "units_per_item": 1},
    {"id": "setup-job", "kind": "service_job", "name": "Installation & setup",
     "unit_price": 3000, "credit_price": 250, "units_per_item": 1},
)  # fmt: skip


class OrphanCartLines(RuntimeError):
    """Cart lines point at catalogue items that do not exist: the service must not serve."""


async def on_startup(runtime: CartRuntime) -> None:
    """Checks every cart line resolves to a catalogue item, then seeds an empty catalogue."""
    settings = runtime.settings
    async with runtime.transaction() as db:
        # Foreign keys prevent this, but SQLite files written with foreign_keys=OFF may not.
        orphans = await repo.orphan_line_item_ids(db)
        if orphans:
            log.error(
                "cart refuses to start: cart lines reference missing catalogue items",
                extra=log_fields(missing_item_ids=orphans),
            )
            raise OrphanCartLines(
                f"cart refuses to start: cart lines reference missing catalogue items {orphans}; "
                "restore these items (inactive is fine) or delete the lines"
            )
        if settings.seed_catalogue and await repo.count_items(db) == 0:
            currency = settings.default_currency
            rows = [{**row, "currency": currency, "active": True} for row in DEFAULT_CATALOGUE]
            await repo.insert_items_if_missing(db, rows)
            log.info("seeded the default catalogue", extra=log_fields(items=len(rows)))


def build(
    settings: CartSettings | None = None, *, bus: Bus | None = None, auto_migrate: bool = False
) -> CartRuntime:
    settings = settings or CartSettings()
    deps = CartDeps(
        admission=Admission(
            limit=settings.admission_backlog, refresh_seconds=settings.admission_refresh_seconds
        )
    )
    spec = ServiceSpec(
        name=CART,
        settings=settings,
        deps=deps,
        metadata=Base.metadata,
        migrations_dir=MIGRATIONS,
        outbox_table=outbox,
        inbox_table=inbox,
        handlers=HANDLERS,
        routers=[api.router, checkout_sessions_api.router],
        background=[clean_up_sessions, ask_after_silent_checkouts],
        on_startup=on_startup,
    )
    return ServiceRuntime(spec, bus=bus, auto_migrate=auto_migrate)
