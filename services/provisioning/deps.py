"""What the provisioning service's handlers and background tasks get besides the runtime,
typed: `runtime.deps` of a `ProvisioningRuntime`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from services.provisioning.domain import ResendTiming
from services.provisioning.settings import ProvisioningSettings
from shared.runtime import ServiceRuntime


@dataclass(frozen=True)
class ProvisioningDeps:
    """What `bootstrap.build` makes besides the runtime itself."""

    # When an unconfirmed credit grant is sent again, from the settings: the credit-pack
    # provisioner dates a grant's first resend with it, the re-sender each later one.
    grant_resend: ResendTiming


ProvisioningRuntime: TypeAlias = ServiceRuntime[ProvisioningSettings, ProvisioningDeps]
