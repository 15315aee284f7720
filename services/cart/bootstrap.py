"""Builds the cart service: the one place its real adapters are made."""

from __future__ import annotations

from pathlib import Path

from services.cart.handlers import HANDLERS
from services.cart.models import Base, inbox, outbox
from services.cart.settings import CartSettings
from shared.bus import Bus
from shared.messages.contracts import CART
from shared.runtime import ServiceRuntime, ServiceSpec

MIGRATIONS = Path(__file__).parent / "migrations"


def build(
    settings: CartSettings | None = None, *, bus: Bus | None = None, auto_migrate: bool = False
) -> ServiceRuntime:
    settings = settings or CartSettings()
    spec = ServiceSpec(
        name=CART,
        settings=settings,
        metadata=Base.metadata,
        migrations_dir=MIGRATIONS,
        outbox_table=outbox,
        inbox_table=inbox,
        handlers=HANDLERS,
    )
    return ServiceRuntime(spec, bus=bus, auto_migrate=auto_migrate)
