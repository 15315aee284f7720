"""Builds the payments service: the one place its real adapters are made."""

from __future__ import annotations

from pathlib import Path

from services.payments.handlers import HANDLERS
from services.payments.models import Base, inbox, outbox
from services.payments.settings import PaymentsSettings
from shared.bus import Bus
from shared.messages.contracts import PAYMENTS
from shared.runtime import ServiceRuntime, ServiceSpec

MIGRATIONS = Path(__file__).parent / "migrations"


def build(
    settings: PaymentsSettings | None = None, *, bus: Bus | None = None, auto_migrate: bool = False
) -> ServiceRuntime:
    settings = settings or PaymentsSettings()
    spec = ServiceSpec(
        name=PAYMENTS,
        settings=settings,
        metadata=Base.metadata,
        migrations_dir=MIGRATIONS,
        outbox_table=outbox,
        inbox_table=inbox,
        handlers=HANDLERS,
    )
    return ServiceRuntime(spec, bus=bus, auto_migrate=auto_migrate)
