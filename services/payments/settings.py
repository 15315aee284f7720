"""Settings of the payments service (environment prefix PAYMENTS_)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from services.payments.domain import parse_seed_credits
from shared.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/payments.db"
    http_port: int = 8003

    # Test-mode defaults that match the bundled Stripe simulator; production sets real values.
    stripe_api_key: SecretStr = SecretStr("sk_test_sim")
    stripe_webhook_secret: SecretStr = SecretStr("whsec_test_secret")
    stripe_api_base: str = "http://127.0.0.1:12111"
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1)
    stripe_timeout_seconds: float = Field(default=10.0, gt=0)
    # Bounded retries of one Stripe call (connection errors and 5xx) before the handler gives up.
    stripe_max_attempts: int = Field(default=3, ge=1, le=10)
    stripe_retry_base_seconds: float = Field(default=0.5, gt=0)
    stripe_retry_cap_seconds: float = Field(default=5.0, gt=0)
    # {CHECKOUT_SESSION_ID} is filled in by Stripe; {ORDER_ID} by us before the session is made.
    checkout_success_url: str = (
        "http://127.0.0.1:8000/checkout/success?order={ORDER_ID}&session={CHECKOUT_SESSION_ID}"
    )
    checkout_cancel_url: str = "http://127.0.0.1:8000/checkout/cancel?order={ORDER_ID}"
    # "demo-shopper=500,alice=100": granted once at startup (reference grant:seed:<user>).
    seed_credits: str = ""

    @field_validator("seed_credits")
    @classmethod
    def _seed_parses(cls, value: str) -> str:
        parse_seed_credits(value)  # refuse to start on a typo rather than seed nothing
        return value
