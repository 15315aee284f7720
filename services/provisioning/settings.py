"""Settings of the provisioning service (environment prefix PROVISIONING_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ProvisioningSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PROVISIONING_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/provisioning.db"
    http_port: int = 8004

    # The external server panel that creates servers for `server_plan` items.
    panel_url: str = "http://127.0.0.1:12112"
    panel_timeout_seconds: float = Field(default=5.0, gt=0)
    # Attempts in total (first call included) before a server item is given up as failed.
    panel_max_attempts: int = Field(default=4, ge=1, le=10)
    # Backoff between attempts: random up to base * 2**n, capped at max.
    panel_backoff_base_seconds: float = Field(default=0.2, ge=0)
    panel_backoff_max_seconds: float = Field(default=2.0, ge=0)
    # A service job is due this long after it is provisioned (scheduled).
    service_job_lead_hours: int = Field(default=48, ge=0)
    # A credit grant payments has not confirmed (CreditsGranted) is sent again this long after it
    # was sent, the wait doubling with each send up to grant_resend_max_seconds (6 h).
    grant_resend_after_seconds: float = Field(default=900.0, gt=0)
    grant_resend_max_seconds: float = Field(default=21600.0, gt=0)
    # How often the re-sender looks for grants due again.
    grant_resend_poll_seconds: float = Field(default=60.0, gt=0)
