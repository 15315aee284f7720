"""Settings of the provisioning service (environment prefix PROVISIONING_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ProvisioningSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PROVISIONING_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/provisioning.db"
    http_port: int = 8004
