"""Settings of the orders service (environment prefix ORDERS_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class OrdersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/orders.db"
    http_port: int = 8002
    # How long a shopper has to pay; becomes the Stripe session's expires_at (30 min .. 24 h).
    payment_window_seconds: int = Field(default=3600, ge=1800, le=86400)
    # How long a step waits for its reply before the saga acts (compensates or asks again).
    step_timeout_seconds: float = Field(default=60.0, gt=0)
    provisioning_timeout_seconds: float = Field(default=300.0, gt=0)
    payment_grace_seconds: float = Field(default=120.0, ge=0)
    provisioning_max_attempts: int = Field(default=3, ge=1)
    # A silent step owner is asked again after step_timeout, the wait doubling up to this.
    max_ask_interval_seconds: float = Field(default=1800.0, gt=0)
    # How long until payments is asked again after it said the payment is still on its way.
    pending_recheck_seconds: float = Field(default=600.0, gt=0)
    # How long a processing payment (a bank debit) is waited for before payments is asked.
    payment_processing_window_seconds: float = Field(default=21 * 86400.0, gt=0)
    deadline_poll_seconds: float = Field(default=1.0, gt=0)
