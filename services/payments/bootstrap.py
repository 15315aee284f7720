"""Builds the payments service: the one place its real adapters are made."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import ValidationError

from services.payments import ledger, recovery
from services.payments.api import router as accounts_router
from services.payments.deps import PaymentsDeps, PaymentsRuntime
from services.payments.domain import parse_seed_credits
from services.payments.handlers import APPLIED_ALONE, build_handlers
from services.payments.models import Base, inbox, outbox
from services.payments.operator_api import router as operator_router
from services.payments.settings import PaymentsSettings
from services.payments.stripe_gateway import StripeGateway
from services.payments.webhooks import router as webhook_router
from shared.bus import Bus
from shared.messages.contracts import PAYMENTS
from shared.runtime import BackgroundTask, ServiceRuntime, ServiceSpec

MIGRATIONS = Path(__file__).parent / "migrations"
SEED_TRACE_ID = "seed"

log = logging.getLogger("services.payments")


class StripeNotConfigured(RuntimeError):
    """Outside demo mode the Stripe key, webhook secret and success page have no defaults; or
    the settings do not validate (an API base that is not https://, a typo in the seed)."""

    def __init__(self, missing: list[str], *, invalid: str = "") -> None:
        super().__init__(
            invalid
            or f"{_listed(missing)} must be set (or PAYMENTS_DEMO_MODE=true for the bundled "
            "Stripe simulator's test values and the demo's pages)"
        )
        self.missing = missing

    @classmethod
    def from_validation(cls, exc: ValidationError) -> StripeNotConfigured:
        # Each error's message and variable only: a ValidationError's own text also shows the
        # input, which may be the key.
        reasons = []
        for error in exc.errors():
            name = "PAYMENTS_" + "_".join(str(part) for part in error["loc"]).upper()
            message = str(error["msg"]).removeprefix("Value error, ")
            reasons.append(message if name in message else f"{name}: {message}")
        return cls([], invalid="; ".join(reasons))


def _listed(names: list[str]) -> str:
    *rest, last = names
    return f"{', '.join(rest)} and {last}" if rest else last


def build(
    settings: PaymentsSettings | None = None,
    *,
    bus: Bus | None = None,
    auto_migrate: bool = False,
    gateway: StripeGateway | None = None,
) -> PaymentsRuntime:
    if settings is None:
        try:
            settings = PaymentsSettings()
        except ValidationError as exc:
            raise StripeNotConfigured.from_validation(exc) from None
    if missing := settings.missing_settings():
        raise StripeNotConfigured(missing)
    owns_gateway = gateway is None  # a gateway passed in belongs to the caller, who closes it
    if gateway is None:
        gateway = StripeGateway.from_settings(settings)
    spec = ServiceSpec(
        name=PAYMENTS,
        settings=settings,
        deps=PaymentsDeps(stripe=gateway),
        metadata=Base.metadata,
        migrations_dir=MIGRATIONS,
        outbox_table=outbox,
        inbox_table=inbox,
        apply_alone=APPLIED_ALONE,
        handlers=build_handlers(gateway=gateway, settings=settings),
        routers=(accounts_router, webhook_router, operator_router),
        background=(
            recovery.retry_stored_events,
            recovery.reconcile_periodically,
            recovery.reconcile_refunds_periodically,
        ),
        on_shutdown=_close_stripe_client if owns_gateway else None,
        on_startup=_seed_credits(settings),
    )
    return ServiceRuntime(spec, bus=bus, auto_migrate=auto_migrate)


def _seed_credits(settings: PaymentsSettings) -> BackgroundTask:
    seeds = parse_seed_credits(settings.seed_credits)

    async def seed_credits(runtime: PaymentsRuntime) -> None:
        if not seeds:
            return
        # One reference per user: every replica and every restart may run this; one grant lands.
        async with runtime.transaction() as db:
            for user_id, credits in seeds.items():
                granted = await ledger.add_credits(
                    db,
                    user_id=user_id,
                    credits=credits,
                    reference=f"grant:seed:{user_id}",
                    trace_id=SEED_TRACE_ID,
                    memo="seed credits from settings",
                )
                if granted:
                    log.info("seeded %d credits for %s", credits, user_id)

    return seed_credits


async def _close_stripe_client(runtime: PaymentsRuntime) -> None:
    await runtime.deps.stripe.aclose()
