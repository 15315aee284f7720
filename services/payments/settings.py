"""Settings of the payments service (environment prefix PAYMENTS_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/payments.db"
    http_port: int = 8003
