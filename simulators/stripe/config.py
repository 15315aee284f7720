"""Settings of the Stripe simulator (environment prefix STRIPE_SIM_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The API version the pinned `stripe` SDK sends; events carry it like a real account's would.
DEFAULT_API_VERSION = "2026-10-28.endive"


class SimConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STRIPE_SIM_", extra="ignore")

    # Where signed events are POSTed; None keeps events retrievable via the API only. Several
    # comma-separated URLs stand for replicas behind a load balancer: attempts rotate over them.
    webhook_url: str | None = None
    webhook_secret: str = "whsec_test_secret"
    # Base of the hosted pay page URL handed back in `session.url`.
    public_url: str = "http://127.0.0.1:12111"
    api_key: str = "sk_test_sim"
    api_version: str = DEFAULT_API_VERSION
    # Bounded webhook retries: attempt n waits min(base * 2**n, cap) seconds before the next one.
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_backoff_base_seconds: float = Field(default=0.2, gt=0)
    webhook_backoff_cap_seconds: float = Field(default=5.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # How often open sessions past `expires_at` are expired (and their event sent).
    expiry_sweep_seconds: float = Field(default=1.0, gt=0)
    # Card refunds are created `pending` and become `succeeded` this much later.
    refund_settle_seconds: float = Field(default=0.2, ge=0)
    # With the `reorder` webhook fault, how long a session's events are held before
    # being sent newest first (events of the session arriving within this window).
    webhook_reorder_hold_seconds: float = Field(default=0.3, gt=0)

    @property
    def webhook_urls(self) -> list[str]:
        return [u.strip() for u in (self.webhook_url or "").split(",") if u.strip()]
