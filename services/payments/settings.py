"""Settings of the payments service (environment prefix PAYMENTS_)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.payments.domain import parse_seed_credits
from shared.settings import ServiceSettings

# What the bundled Stripe simulator accepts by default; used in demo mode only.
DEMO_STRIPE_API_KEY = "sk_test_sim"
DEMO_STRIPE_WEBHOOK_SECRET = "whsec_test_secret"
# Stripe's own API, the default outside demo mode; the simulator's address, demo mode's.
STRIPE_API_BASE = "https://api.stripe.com"
SIMULATOR_API_BASE = "http://127.0.0.1:12111"
# The demo's own pages (demo/app.py serves them on its default port).
DEMO_SUCCESS_URL = "http://127.0.0.1:8000/done?order={ORDER_ID}&session={CHECKOUT_SESSION_ID}"
DEMO_CANCEL_URL = "http://127.0.0.1:8000/cancelled?order={ORDER_ID}"
# Secret and restricted keys; a publishable key (pk_) cannot create sessions or refunds.
_SERVER_KEY_PREFIXES = ("sk_", "rk_")
_LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")
_TEST_KEY_PREFIXES = ("sk_test_", "rk_test_")
_METHOD_TYPE = re.compile(r"[a-z][a-z0-9_]*")


class PaymentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/payments.db"
    http_port: int = 8003

    # Only demo mode falls back to the bundled simulator's test key and secret; anywhere else
    # the service refuses to start without both (see missing_secrets and bootstrap.build).
    demo_mode: bool = False
    stripe_api_key: SecretStr = SecretStr("")
    stripe_webhook_secret: SecretStr = SecretStr("")
    # Development setups only (the dev stack, the tests, the chaos run): lets the API base be the
    # simulator's plain-HTTP address. Anywhere else the key would travel unencrypted.
    allow_insecure_stripe_base: bool = False
    # Empty: Stripe's own API (STRIPE_API_BASE), or the simulator's address in demo mode. Given:
    # https:// unless this is demo mode or a development setup (see _stripe_base).
    stripe_api_base: str = Field(default="", validate_default=True)
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1)
    stripe_timeout_seconds: float = Field(default=10.0, gt=0)
    # Bounded retries of one Stripe call (connection errors and 5xx) before the handler gives up.
    # Six attempts with the default backoff ride out about 12 s of Stripe trouble, well inside
    # the saga's step deadline: a blip of a second must not cost the shopper the order (the
    # chaos run showed three quick attempts doing exactly that).
    stripe_max_attempts: int = Field(default=6, ge=1, le=10)
    stripe_retry_base_seconds: float = Field(default=0.5, gt=0)
    stripe_retry_cap_seconds: float = Field(default=5.0, gt=0)
    # Where Stripe sends the shopper after paying: the shop's own page (none of the services
    # serves one; GET /orders/{id} needs the shopper's token). Required outside demo mode, where
    # it is the demo's page. {CHECKOUT_SESSION_ID} is filled in by Stripe; {ORDER_ID} by us.
    checkout_success_url: str = ""
    # Where the shopper's "back" link on Stripe's page leads; empty: Checkout shows none.
    checkout_cancel_url: str = ""
    # PAYMENTS_PAYMENT_METHOD_TYPES, a comma list ("card" or "card,sepa_debit"), sent as
    # Checkout's payment_method_types. Empty: whatever the Stripe Dashboard enables, which may
    # include bank debits that settle days later.
    payment_method_types: str = ""
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

    @field_validator("stripe_api_base")
    @classmethod
    def _stripe_base(cls, value: str, info: ValidationInfo) -> str:
        # A field validator, not a model one: its error shows only this field's input, never the
        # key. The fields read here are declared above this one, so they are validated already.
        demo = bool(info.data.get("demo_mode"))
        base = value.strip().rstrip("/")
        if not base:
            base = SIMULATOR_API_BASE if demo else STRIPE_API_BASE
        elif not base.startswith("https://") and not (
            demo or info.data.get("allow_insecure_stripe_base")
        ):
            raise ValueError(
                "PAYMENTS_STRIPE_API_BASE must be an https:// URL (leave it unset for Stripe's "
                "own API); the simulator's plain-HTTP address is for development setups only, "
                "which say so with PAYMENTS_ALLOW_INSECURE_STRIPE_BASE=true"
            )
        key = info.data.get("stripe_api_key")
        secret = key.get_secret_value() if isinstance(key, SecretStr) else ""
        if base == STRIPE_API_BASE and secret and not secret.startswith(_SERVER_KEY_PREFIXES):
            raise ValueError(
                "PAYMENTS_STRIPE_API_KEY must be a Stripe secret or restricted key (sk_... or "
                "rk_...) to talk to Stripe's API"
            )
        return base

    @field_validator("payment_method_types")
    @classmethod
    def _method_types_parse(cls, value: str) -> str:
        if value.strip() and not all(_METHOD_TYPE.fullmatch(t.strip()) for t in value.split(",")):
            raise ValueError(
                "PAYMENTS_PAYMENT_METHOD_TYPES must be a comma list of Stripe payment method "
                "types, e.g. card or card,sepa_debit"
            )
        return value

    @model_validator(mode="after")
    def _demo_defaults(self) -> PaymentsSettings:
        if self.demo_mode:
            if not self.stripe_api_key.get_secret_value():
                self.stripe_api_key = SecretStr(DEMO_STRIPE_API_KEY)
            if not self.stripe_webhook_secret.get_secret_value():
                self.stripe_webhook_secret = SecretStr(DEMO_STRIPE_WEBHOOK_SECRET)
            self.checkout_success_url = self.checkout_success_url or DEMO_SUCCESS_URL
            self.checkout_cancel_url = self.checkout_cancel_url or DEMO_CANCEL_URL
        return self

    @property
    def allowed_payment_method_types(self) -> tuple[str, ...]:
        """PAYMENTS_PAYMENT_METHOD_TYPES as a list, in order, each once; () allows any."""
        types = (t.strip() for t in self.payment_method_types.split(","))
        return tuple(dict.fromkeys(t for t in types if t))

    def missing_settings(self) -> list[str]:
        """Environment names of the settings without a default here that are not set: the
        Stripe secrets and the success page outside demo mode (names only, sorted)."""
        missing = self.missing_secrets()
        if not self.checkout_success_url.strip():
            missing.append("PAYMENTS_CHECKOUT_SUCCESS_URL")
        return sorted(missing)

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


class StripeChoiceRefused(ValueError):
    """A development setup (the dev stack, the demo) was asked for a Stripe it will not use."""


@dataclass(frozen=True)
class StripeTestMode:
    """Stripe's own API in test mode, as the environment asks for it."""

    api_key: str
    webhook_secret: str


def stripe_test_mode(environ: Mapping[str, str]) -> StripeTestMode | None:
    """What the environment asks a development setup (the dev stack, the demo) to talk to:
    Stripe's own API in test mode when PAYMENTS_STRIPE_API_KEY is a Stripe test key and no
    PAYMENTS_STRIPE_API_BASE is given; None: the bundled simulator. A live key is refused (these
    setups never charge real money), and so is test mode without its webhook secret."""
    key = environ.get("PAYMENTS_STRIPE_API_KEY", "").strip()
    if environ.get("PAYMENTS_STRIPE_API_BASE", "").strip():
        return None  # a Stripe of one's own choosing: the setup's simulator stays in charge
    if key.startswith(_LIVE_KEY_PREFIXES):
        raise StripeChoiceRefused(
            "PAYMENTS_STRIPE_API_KEY is a live key; development setups use Stripe in test mode "
            "only (sk_test_...)"
        )
    if not key.startswith(_TEST_KEY_PREFIXES):
        return None
    secret = environ.get("PAYMENTS_STRIPE_WEBHOOK_SECRET", "").strip()
    if not secret:
        raise StripeChoiceRefused(
            "Stripe test mode needs PAYMENTS_STRIPE_WEBHOOK_SECRET too: the secret of the "
            "endpoint Stripe sends events to (`stripe listen --print-secret` prints the one "
            "`stripe listen --forward-to` signs with); see docs/stripe.md"
        )
    return StripeTestMode(api_key=key, webhook_secret=secret)
