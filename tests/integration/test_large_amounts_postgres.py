"""Amounts past 2**31 on real PostgreSQL: the API admits a line of MAX_UNIT_PRICE x MAX_QUANTITY
(shared/limits.py), so every service stores and carries such a checkout instead of failing on
an int4 column and leaving its message to be retried and dead-lettered."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select, text

from services.cart.bootstrap import build as build_cart
from services.orders.bootstrap import build as build_orders
from services.orders.models import Order, OrderLine
from services.payments import repository as payments_repository
from services.payments.bootstrap import MIGRATIONS as PAYMENTS_MIGRATIONS
from services.payments.bootstrap import build as build_payments
from services.payments.models import CreditAccount, LedgerEntry
from services.provisioning.bootstrap import build as build_provisioning
from services.provisioning.models import Entitlement
from shared.db import make_engine
from shared.limits import MAX_LINE_TOTAL, MAX_QUANTITY, MAX_UNIT_PRICE
from shared.messages import contracts as c
from tests.support.cart import CartRig, cart_settings
from tests.support.migrations import migrated_to
from tests.support.orders import orders_settings
from tests.support.payments import completed, open_session, payments_settings, post_webhook
from tests.support.provisioning import closed_port_url, provisioning_settings
from tests.support.rig import Rigs, ServiceRig
from tests.support.stripe_sim import signed, stripe_event

FreshDatabase = Callable[[str], Awaitable[str]]
INT4_MAX = 2**31 - 1
PAYMENTS_BEFORE_BIGINT = "3c6bd1b60bd4"

# Every money and credit column, by service: BIGINT once migrated.
MONEY_AND_CREDIT_COLUMNS = {
    "cart": {"catalogue_items": ("unit_price", "credit_price", "units_per_item")},
    "orders": {
        "orders": ("money_total", "credits_total"),
        "order_lines": ("unit_price", "unit_credits"),
    },
    "payments": {
        "credit_accounts": ("available", "reserved"),
        "ledger_entries": ("amount",),
        "credit_reservations": ("credits", "captured", "refunded"),
        "payment_sessions": ("amount_total", "amount_refunded"),
        "refunds": ("amount",),
    },
    "provisioning": {"job_items": ("units_per_item",), "entitlements": ("sessions",)},
}
BUILDS = {
    "cart": (build_cart, cart_settings),
    "orders": (build_orders, orders_settings),
    "payments": (build_payments, payments_settings),
    "provisioning": (build_provisioning, provisioning_settings),
}


@pytest_asyncio.fixture(loop_scope="session")
async def start(fresh_database: FreshDatabase) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Factory: a service (migrated to head) on a fresh PostgreSQL database, in-process bus."""
    async with Rigs() as rigs:

        async def make(service: str, rig: type[ServiceRig] = ServiceRig) -> Any:
            build, settings = BUILDS[service]
            url = await fresh_database(f"big_{service}")
            extra = {"panel_url": closed_port_url()} if service == "provisioning" else {}
            return await rigs.start(rig, build, settings(url, **extra))

        yield make


def biggest_line(line_no: int, *, kind: c.ItemKind, paid_with: c.PaidWith) -> c.CheckoutLine:
    return c.CheckoutLine(
        line_no=line_no,
        item_id=f"big-{line_no}",
        kind=kind,
        name="the most the API admits",
        quantity=MAX_QUANTITY,
        unit_price=MAX_UNIT_PRICE,
        unit_credits=MAX_UNIT_PRICE,
        units_per_item=MAX_UNIT_PRICE,
        paid_with=paid_with,
    )


@pytest.mark.parametrize("service", sorted(MONEY_AND_CREDIT_COLUMNS))
async def test_every_money_and_credit_column_is_64_bit(
    service: str, start: Callable[..., Awaitable[ServiceRig]]
) -> None:
    rig = await start(service)
    query = text(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema()"
    )
    async with rig.runtime.sessionmaker() as db:
        types = {(t, col): kind for t, col, kind in (await db.execute(query)).all()}
    for table, columns in MONEY_AND_CREDIT_COLUMNS[service].items():
        for column in columns:
            assert types[(table, column)] == "bigint", f"{service}: {table}.{column}"


async def test_a_checkout_of_the_biggest_lines_the_api_admits_is_requested_in_full(
    start: Callable[..., Awaitable[CartRig]],
) -> None:
    cart = await start("cart", CartRig)
    for item in ("big-money", "big-credits"):
        put = await cart.put_item(
            item,
            unit_price=MAX_UNIT_PRICE,
            credit_price=MAX_UNIT_PRICE if item == "big-credits" else None,
            units_per_item=MAX_UNIT_PRICE,
        )
        assert put.status_code in (200, 201), put.text
    cart_id = await cart.new_cart(big_money=MAX_QUANTITY, big_credits=MAX_QUANTITY)

    response = await cart.checkout(cart_id, "k-big", body={"use_credits": True})

    assert response.status_code == 202, response.text
    [requested] = await cart.requested_for(cart_id)
    totals = requested.payload["money_total"], requested.payload["credits_total"]
    assert totals == (MAX_LINE_TOTAL, MAX_LINE_TOTAL)


async def test_orders_stores_an_order_over_2_31_and_asks_for_all_of_it(
    start: Callable[..., Awaitable[ServiceRig]],
) -> None:
    orders = await start("orders")
    order_id = str(uuid.uuid4())
    lines = (
        biggest_line(1, kind="server_plan", paid_with="money"),
        biggest_line(2, kind="session_package", paid_with="credits"),
    )
    checkout = c.CheckoutRequested(
        checkout_id=order_id,
        cart_id=str(uuid.uuid4()),
        user_id="alice",
        currency="EUR",
        lines=lines,
        money_total=MAX_LINE_TOTAL,
        credits_total=MAX_LINE_TOTAL,
    )
    assert MAX_LINE_TOTAL > INT4_MAX

    await orders.deliver(checkout, correlation_id=order_id)
    await orders.deliver(
        c.CreditsReserved(order_id=order_id, credits=MAX_LINE_TOTAL), correlation_id=order_id
    )
    await orders.deliver(c.JobCreated(order_id=order_id, job_id="job"), correlation_id=order_id)

    async with orders.runtime.sessionmaker() as db:
        order = await db.get(Order, order_id)
        prices = (await db.execute(select(OrderLine.unit_price, OrderLine.unit_credits))).all()
    assert order is not None
    assert (order.money_total, order.credits_total) == (MAX_LINE_TOTAL, MAX_LINE_TOTAL)
    assert prices == [(MAX_UNIT_PRICE, MAX_UNIT_PRICE)] * 2
    [reserve] = await orders.emitted(c.ReserveCredits.TYPE, correlation_id=order_id)
    assert reserve.payload["credits"] == MAX_LINE_TOTAL
    [session] = await orders.emitted(c.CreatePaymentSession.TYPE, correlation_id=order_id)
    assert session.payload["amount_total"] == MAX_LINE_TOTAL


async def test_payments_grants_reserves_captures_and_takes_payments_over_2_31(
    start: Callable[..., Awaitable[ServiceRig]],
) -> None:
    payments = await start("payments")
    order_id = str(uuid.uuid4())
    # A credit pack line of the biggest size grants this much at once (provisioning's grant).
    await payments.deliver(
        c.GrantCredits(grant_id="g-big", user_id="bea", credits=2 * MAX_LINE_TOTAL, reason="pack"),
        correlation_id="g-big",
    )
    for command in (
        c.ReserveCredits(order_id=order_id, user_id="bea", credits=MAX_LINE_TOTAL),
        c.CaptureCredits(order_id=order_id, user_id="bea", credits=MAX_LINE_TOTAL),
    ):
        await payments.deliver(command, correlation_id=order_id)

    assert len(await payments.emitted(c.CreditsCaptured.TYPE, correlation_id=order_id)) == 1
    async with payments.runtime.sessionmaker() as db:
        account = await db.get(CreditAccount, "bea")
        amounts = (await db.execute(select(LedgerEntry.amount))).scalars().all()
    assert account is not None and account.available == MAX_LINE_TOTAL
    assert sorted(amounts) == [MAX_LINE_TOTAL, MAX_LINE_TOTAL, 2 * MAX_LINE_TOTAL]

    # A card payment of that size: stored, announced and refundable in full.
    session_id = await open_session(payments, order_id, amount=MAX_LINE_TOTAL)
    paid = completed(session_id, order_id, amount=MAX_LINE_TOTAL)
    body = stripe_event("checkout.session.completed", paid)
    assert (await post_webhook(payments, body, signed(body)))[0] == 200
    [succeeded] = await payments.emitted(c.PaymentSucceeded.TYPE, correlation_id=order_id)
    assert succeeded.payload["amount"] == MAX_LINE_TOTAL
    async with payments.runtime.transaction() as db:
        assert await payments_repository.hold_refund_amount(
            db, order_id=order_id, amount=MAX_LINE_TOTAL
        )


async def test_provisioning_grants_a_session_package_of_more_than_2_31_sessions(
    start: Callable[..., Awaitable[ServiceRig]],
) -> None:
    provisioning = await start("provisioning")
    order_id = str(uuid.uuid4())
    line = biggest_line(1, kind="session_package", paid_with="money")
    await provisioning.deliver(
        c.CreateJob(order_id=order_id, user_id="cid", lines=(line,)), correlation_id=order_id
    )
    await provisioning.deliver(c.ProvisionOrder(order_id=order_id), correlation_id=order_id)

    async with provisioning.runtime.sessionmaker() as db:
        granted = (await db.execute(select(Entitlement.sessions))).scalars().all()
    assert granted == [MAX_LINE_TOTAL]
    [provisioned] = await provisioning.emitted(c.OrderProvisioned.TYPE, correlation_id=order_id)
    assert provisioned.payload["results"][0]["status"] == "delivered"


async def test_the_64_bit_revision_keeps_what_a_deployed_database_holds(
    fresh_database: FreshDatabase,
) -> None:
    url = await fresh_database("big_payments_upgrade")
    await migrated_to(url, PAYMENTS_MIGRATIONS, PAYMENTS_BEFORE_BIGINT)
    engine = make_engine(url)
    balance = "SELECT available, reserved FROM credit_accounts WHERE user_id = 'old'"
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO credit_accounts (user_id, available, reserved, updated_at)"
                    " VALUES ('old', :a, 7, now())"
                ),
                {"a": INT4_MAX},
            )
        await migrated_to(url, PAYMENTS_MIGRATIONS, "head")
        async with engine.begin() as conn:
            assert (await conn.execute(text(balance))).one() == (INT4_MAX, 7)
            await conn.execute(
                text("UPDATE credit_accounts SET available = available + 1 WHERE user_id = 'old'")
            )
            assert (await conn.execute(text(balance))).one() == (INT4_MAX + 1, 7)
    finally:
        await engine.dispose()
