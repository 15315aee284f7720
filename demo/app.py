"""Builds the demo: four services sharing one in-process bus, each with its own SQLite file,
served under the paths a gateway would use, plus the Stripe and server-panel simulators."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI
from pydantic import SecretStr

from services.cart.bootstrap import build as build_cart
from services.cart.settings import CartSettings
from services.orders.bootstrap import build as build_orders
from services.orders.settings import OrdersSettings
from services.payments.bootstrap import build as build_payments
from services.payments.settings import STRIPE_API_BASE, PaymentsSettings, stripe_test_mode
from services.provisioning.bootstrap import build as build_provisioning
from services.provisioning.settings import ProvisioningSettings
from shared.auth import issue_token
from shared.memory_bus import MemoryBus
from shared.runtime import ServiceRuntime
from shared.settings import ServiceSettings
from simulators.panel import create_panel_app
from simulators.stripe.app import create_app as create_stripe_sim
from simulators.stripe.config import SimConfig

DEMO_JWT_SECRET = "demo-only-jwt-secret-not-for-production"
DEMO_WEBHOOK_SECRET = "whsec_demo_secret"
DEMO_STRIPE_KEY = "sk_test_demo"
SHOPPER = "demo-shopper"
OPERATOR = "demo-operator"
SHOPPER_CREDITS = 1000

S = TypeVar("S", bound=ServiceSettings)


@dataclass
class Demo:
    app: FastAPI
    runtimes: dict[str, ServiceRuntime[Any, Any]]
    base_url: str
    shopper_token: str
    operator_token: str
    # Whether payments talks to Stripe's own API (test mode) rather than the bundled simulator.
    real_stripe: bool = False


@dataclass(frozen=True)
class DemoStripe:
    """The Stripe the demo's payments talks to: its PaymentsSettings fields."""

    real: bool
    settings: dict[str, Any]


def demo_stripe(environ: Mapping[str, str], base: str) -> DemoStripe:
    """The bundled simulator, unless the environment holds a Stripe test key and no API base:
    then Stripe's own API in test mode (docs/stripe.md). Either way Stripe sends the shopper
    back to the demo's own pages. Raises StripeChoiceRefused for a live key, or test mode
    without its webhook secret."""
    pages = {
        "checkout_success_url": f"{base}/done?order={{ORDER_ID}}&session={{CHECKOUT_SESSION_ID}}",
        "checkout_cancel_url": f"{base}/cancelled?order={{ORDER_ID}}",
    }
    chosen = stripe_test_mode(environ)
    if chosen is None:
        return DemoStripe(
            real=False,
            settings={
                "stripe_api_key": SecretStr(DEMO_STRIPE_KEY),
                "stripe_webhook_secret": SecretStr(DEMO_WEBHOOK_SECRET),
                "stripe_api_base": f"{base}/stripe",
                **pages,
            },
        )
    return DemoStripe(
        real=True,
        settings={
            "stripe_api_key": SecretStr(chosen.api_key),
            "stripe_webhook_secret": SecretStr(chosen.webhook_secret),
            "stripe_api_base": STRIPE_API_BASE,
            **pages,
        },
    )


def build_demo(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    environ: Mapping[str, str] = os.environ,
) -> Demo:
    data_dir.mkdir(parents=True, exist_ok=True)
    base = f"http://{host}:{port}"
    secret = SecretStr(DEMO_JWT_SECRET)
    bus = MemoryBus()
    stripe = demo_stripe(environ, base)

    def embedded(settings_class: type[S], name: str, **fields: Any) -> S:
        return settings_class(
            database_url=f"sqlite+aiosqlite:///{data_dir / name}.db",
            broker_url="memory://",
            jwt_secret=secret,
            log_json=False,
            **fields,
        )

    runtimes: dict[str, ServiceRuntime[Any, Any]] = {
        "cart": build_cart(embedded(CartSettings, "cart"), bus=bus, auto_migrate=True),
        "orders": build_orders(embedded(OrdersSettings, "orders"), bus=bus, auto_migrate=True),
        "payments": build_payments(
            embedded(
                PaymentsSettings,
                "payments",
                demo_mode=True,
                seed_credits=f"{SHOPPER}={SHOPPER_CREDITS}",
                **stripe.settings,
            ),
            bus=bus,
            auto_migrate=True,
        ),
        "provisioning": build_provisioning(
            embedded(ProvisioningSettings, "provisioning", panel_url=f"{base}/panel"),
            bus=bus,
            auto_migrate=True,
        ),
    }
    stripe_sim = create_stripe_sim(
        SimConfig(
            webhook_url=f"{base}/api/payments/webhooks/stripe",
            webhook_secret=DEMO_WEBHOOK_SECRET,
            public_url=f"{base}/stripe",
            api_key=DEMO_STRIPE_KEY,
        )
    )
    panel_sim = create_panel_app()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Mounted apps' own lifespans don't run under Starlette; enter them here.
        async with contextlib.AsyncExitStack() as stack:
            for sub in (stripe_sim, panel_sim):
                await stack.enter_async_context(sub.router.lifespan_context(sub))
            for runtime in runtimes.values():
                await runtime.start()
                stack.push_async_callback(runtime.stop)
            yield
            await bus.close()

    app = FastAPI(title="checkout-saga demo", lifespan=lifespan)
    for name, runtime in runtimes.items():
        app.mount(f"/api/{name}", runtime.app(manage_lifecycle=False))
    app.mount("/stripe", stripe_sim)
    app.mount("/panel", panel_sim)

    @app.get("/")
    async def index() -> dict[str, object]:
        return {
            "service": "checkout-saga demo",
            "apis": [f"/api/{name}" for name in runtimes],
            "docs": [f"/api/{name}/docs" for name in runtimes],
        }

    @app.get("/done")
    async def payment_done(order: str, session: str = "") -> dict[str, str]:
        # Where Stripe sends the shopper after paying; the order page shows the saga's progress.
        return {"message": "payment received", "order": f"/api/orders/orders/{order}"}

    @app.get("/cancelled")
    async def payment_cancelled(order: str) -> dict[str, str]:
        return {"message": "payment not made; the order is cancelled when the session expires"}

    return Demo(
        app=app,
        runtimes=runtimes,
        base_url=base,
        shopper_token=issue_token(DEMO_JWT_SECRET, SHOPPER),
        operator_token=issue_token(DEMO_JWT_SECRET, OPERATOR, roles=("operator",)),
        real_stripe=stripe.real,
    )
