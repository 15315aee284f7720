"""Settings of the payments service (environment prefix PAYMENTS_)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.payments.domain import parse_seed_credits
from shared.settings import ServiceSettings

# What the bundled Stripe simulator accepts by default; used in demo mode only.
DEMO_STRIPE_API_KEY = "sk_test_sim"
DEMO_STRIPE_WEBHOOK_SECRET = "whsec_test_secret"


class PaymentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/payments.db"
    http_port: int = 8003

    # Only demo mode falls back to the bundled simulator's test key and secret; anywhere else
    # the service refuses to start without both (see missing_secrets and bootstrap.build).
    demo_mode: bool = False
    stripe_api_key: SecretStr = SecretStr("")
    stripe_webhook_secret: SecretStr = SecretStr("")
    stripe_api_base: str = "http://127.0.0.1:12111"
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1)
    stripe_timeout_seconds: float = Field(default=10.0, gt=0)
    # Bounded retries of one Stripe call (connection errors and 5xx) before the handler gives up.
    # Six attempts with the default backoff ride out about 12 s of Stripe trouble, well inside
    # the saga's step deadline: a blip of a second must not cost the shopper the order (the
    # chaos run showed three quick attempts doing exactly that).
    stripe_max_attempts: int = Field(default=6, ge=1, le=10)
    stripe_retry_base_seconds: float = Field(default=0.5, gt=0)
    stripe_retry_cap_seconds: float = Field(default=5.0, gt=0)
    # {CHECKOUT_SESSION_ID} is filled in by Stripe; {ORDER_ID} by us before the session is made.
    checkout_success_url: str = (
        "http://127.0.0.1:8000/checkout/success?order={ORDER_ID}&session={CHECKOUT_SESSION_ID}"
    )
    checkout_cancel_url: str = "http://127.0.0.1:8000/checkout/cancel?order={ORDER_ID}"
    # "demo-shopper=500,alice=100": granted once at startup (reference grant:seed:<user>).
    seed_credits: str = ""
    # Webhook events stored before their session or refund row was visible are retried this
    # often, for this long after they arrived (older ones wait for the operator's replay).
    stripe_event_retry_seconds: float = Field(default=5.0, gt=0)
    stripe_event_retry_max_age_seconds: float = Field(default=86400.0, gt=0)
    # The reconciler asks Stripe about sessions still open/processing this long after creation
    # (younger ones are left to their webhook), at most `reconcile_batch_size` per round.
    reconcile_interval_seconds: float = Field(default=60.0, gt=0)
    reconcile_min_age_seconds: float = Field(default=300.0, ge=0)
    reconcile_batch_size: int = Field(default=100, ge=1, le=1000)
    # Refunds still pending this long after they were made, or after Stripe was last asked
    # about them, are asked about (their refund.updated / refund.failed may have been lost), on
    # the reconciler's interval and batch size. Card refunds settle within minutes; a pending
    # one may wait days (a bank debit, a low balance), so it is asked about once per this.
    refund_reconcile_after_seconds: float = Field(default=3600.0, ge=0)

    @field_validator("seed_credits")
    @classmethod
    def _seed_parses(cls, value: str) -> str:
        parse_seed_credits(value)  # refuse to start on a typo rather than seed nothing
        return value

    @model_validator(mode="after")
    def _demo_defaults(self) -> PaymentsSettings:
        if self.demo_mode:
            if not self.stripe_api_key.get_secret_value():
                self.stripe_api_key = SecretStr(DEMO_STRIPE_API_KEY)
            if not self.stripe_webhook_secret.get_secret_value():
                self.stripe_webhook_secret = SecretStr(DEMO_STRIPE_WEBHOOK_SECRET)
        return self

    def missing_secrets(self) -> list[str]:
        """Environment names of the Stripe secrets not set (names only: never the values)."""
        prefix = "PAYMENTS_"
        return [
            f"{prefix}{name.upper()}"
            for name, value in (
                ("stripe_api_key", self.stripe_api_key),
                ("stripe_webhook_secret", self.stripe_webhook_secret),
            )
            if not value.get_secret_value().strip()
        ]
