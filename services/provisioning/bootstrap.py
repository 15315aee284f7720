"""Builds the provisioning service: the one place its real adapters are made."""

from __future__ import annotations

from pathlib import Path

from services.provisioning.handlers import HANDLERS
from services.provisioning.models import Base, inbox, outbox
from services.provisioning.settings import ProvisioningSettings
from shared.bus import Bus
from shared.messages.contracts import PROVISIONING
from shared.runtime import ServiceRuntime, ServiceSpec

MIGRATIONS = Path(__file__).parent / "migrations"


def build(
    settings: ProvisioningSettings | None = None, *, bus: Bus | None = None, auto_migrate: bool = False
) -> ServiceRuntime:
    settings = settings or ProvisioningSettings()
    spec = ServiceSpec(
        name=PROVISIONING,
        settings=settings,
        metadata=Base.metadata,
        migrations_dir=MIGRATIONS,
        outbox_table=outbox,
        inbox_table=inbox,
        handlers=HANDLERS,
    )
    return ServiceRuntime(spec, bus=bus, auto_migrate=auto_migrate)
