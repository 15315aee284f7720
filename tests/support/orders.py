"""The orders service on the one rig, and the checkouts its tests start sagas with."""

from __future__ import annotations

from typing import Any

from services.orders.settings import OrdersSettings
from shared.messages import contracts as c
from tests.support.rig import settings_for


def orders_settings(database_url: str, **overrides: Any) -> OrdersSettings:
    return settings_for(OrdersSettings, database_url, **overrides)


def package_line(line_no: int = 1, *, paid_with: c.PaidWith = "credits") -> c.CheckoutLine:
    """One 10-session package: 5000 in money or 400 credits, delivered without Stripe or panel."""
    return c.CheckoutLine(
        line_no=line_no,
        item_id=f"pkg-{line_no}",
        kind="session_package",
        name="10 sessions",
        quantity=1,
        unit_price=5000,
        unit_credits=400,
        units_per_item=10,
        paid_with=paid_with,
    )


def checkout_of(
    order_id: str, *lines: c.CheckoutLine, cart_id: str = "cart-1"
) -> c.CheckoutRequested:
    """Alice's checkout of `lines` (one package paid with credits if none), totals summed."""
    lines = lines or (package_line(),)
    return c.CheckoutRequested(
        checkout_id=order_id,
        cart_id=cart_id,
        user_id="alice",
        currency="EUR",
        lines=lines,
        money_total=sum(line.money for line in lines),
        credits_total=sum(line.credits for line in lines),
    )
