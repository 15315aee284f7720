"""Builds the provisioning service: the one place its real adapters are made."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from services.provisioning.api import router
from services.provisioning.deps import ProvisioningDeps, ProvisioningRuntime
from services.provisioning.domain import ResendTiming
from services.provisioning.grant_resender import grant_resender
from services.provisioning.handlers import APPLIED_ALONE, build_handlers
from services.provisioning.http_provisioner import ServerPanelProvisioner
from services.provisioning.models import Base, inbox, outbox
from services.provisioning.provisioners import (
    CreditPackProvisioner,
    Provisioners,
    ServiceJobProvisioner,
    SessionPackageProvisioner,
)
from services.provisioning.settings import ProvisioningSettings
from shared.bus import Bus
from shared.messages.contracts import PROVISIONING
from shared.runtime import ServiceRuntime, ServiceSpec

MIGRATIONS = Path(__file__).parent / "migrations"


def build_provisioners(
    settings: ProvisioningSettings, *, grant_resend: ResendTiming
) -> Provisioners:
    """The provisioner of each item kind; a kind missing here fails with "no provisioner"."""
    return {
        "session_package": SessionPackageProvisioner(),
        "service_job": ServiceJobProvisioner(lead_hours=settings.service_job_lead_hours),
        "credit_pack": CreditPackProvisioner(resend=grant_resend),
        "server_plan": ServerPanelProvisioner(
            base_url=settings.panel_url,
            timeout_seconds=settings.panel_timeout_seconds,
            max_attempts=settings.panel_max_attempts,
            backoff_base_seconds=settings.panel_backoff_base_seconds,
            backoff_max_seconds=settings.panel_backoff_max_seconds,
        ),
    }


def build(
    settings: ProvisioningSettings | None = None,
    *,
    bus: Bus | None = None,
    auto_migrate: bool = False,
    provisioners: Provisioners | None = None,
) -> ProvisioningRuntime:
    settings = settings or ProvisioningSettings()
    grant_resend = ResendTiming(
        first=timedelta(seconds=settings.grant_resend_after_seconds),
        cap=timedelta(seconds=settings.grant_resend_max_seconds),
    )
    owned = (
        build_provisioners(settings, grant_resend=grant_resend) if provisioners is None else None
    )

    async def close_provisioners(_runtime: ProvisioningRuntime) -> None:
        for provisioner in (owned or {}).values():
            if isinstance(provisioner, ServerPanelProvisioner):
                await provisioner.aclose()

    spec = ServiceSpec(
        name=PROVISIONING,
        settings=settings,
        deps=ProvisioningDeps(grant_resend=grant_resend),
        metadata=Base.metadata,
        migrations_dir=MIGRATIONS,
        outbox_table=outbox,
        inbox_table=inbox,
        apply_alone=APPLIED_ALONE,
        handlers=build_handlers(owned if owned is not None else provisioners or {}),
        routers=(router,),
        background=(grant_resender,),
        # Provisioners passed in belong to the caller, who closes them.
        on_shutdown=close_provisioners,
    )
    return ServiceRuntime(spec, bus=bus, auto_migrate=auto_migrate)
