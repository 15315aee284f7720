"""The cart asks after a checkout whose outcome never came (`InquireOrder`): an ended order
says its outcome again, exactly as it first announced it; a running or unknown one says
nothing. The orders service in process (SQLite, in-process bus)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from services.orders.bootstrap import build
from shared.messages import Contract, Envelope
from shared.messages import contracts as c
from tests.support.orders import checkout_of, orders_settings
from tests.support.rig import Rigs, ServiceRig, new_order_id, sqlite_url

OUTCOMES = (c.OrderCompleted.TYPE, c.OrderCancelled.TYPE)


@pytest_asyncio.fixture(loop_scope="session")
async def orders(tmp_path: Path) -> AsyncIterator[ServiceRig]:
    settings = orders_settings(sqlite_url(tmp_path / "orders.db"))
    async with Rigs() as rigs:
        yield await rigs.start(ServiceRig, build, settings, fire_deadlines=False)


def paid_in_credits(order_id: str) -> tuple[Contract, ...]:
    """The replies that take a credits-only order to provisioning."""
    return (
        c.CreditsReserved(order_id=order_id, credits=400),
        c.JobCreated(order_id=order_id, job_id="job-1"),
        c.CreditsCaptured(order_id=order_id, credits=400),
    )


async def drive(orders: ServiceRig, order_id: str, *replies: Contract) -> None:
    await orders.deliver(checkout_of(order_id), correlation_id=order_id)
    for reply in replies:
        await orders.deliver(reply, correlation_id=order_id)


async def outcomes(orders: ServiceRig, order_id: str) -> list[dict[str, Any]]:
    """The payloads of the order outcomes orders wrote to its outbox for this order."""
    return [e.payload for e in await orders.emitted(correlation_id=order_id) if e.type in OUTCOMES]


async def inquire(orders: ServiceRig, order_id: str) -> None:
    inquiry = c.InquireOrder(order_id=order_id, cart_id="cart-1")
    await orders.deliver(inquiry, correlation_id=order_id)


async def test_a_completed_order_answers_an_inquiry_with_its_completion_again(
    orders: ServiceRig,
) -> None:
    order_id = new_order_id()
    await drive(
        orders,
        order_id,
        *paid_in_credits(order_id),
        c.OrderProvisioned(
            order_id=order_id,
            job_id="job-1",
            results=(c.ItemResult(line_no=1, item_id="pkg-1", status="delivered"),),
        ),
    )
    announced = await outcomes(orders, order_id)
    assert [o["status"] for o in announced] == ["completed"]

    await inquire(orders, order_id)

    assert await outcomes(orders, order_id) == announced * 2
    answer = (await orders.emitted(c.OrderCompleted.TYPE, correlation_id=order_id))[-1]
    assert answer.correlation_id == order_id  # the checkout's trace id, like every message of it


async def test_a_cancelled_order_answers_with_the_reason_it_was_cancelled_for(
    orders: ServiceRig,
) -> None:
    order_id = new_order_id()
    await drive(
        orders,
        order_id,
        c.CreditsRejected(order_id=order_id, reason="insufficient_credits", available=10),
    )
    announced = await outcomes(orders, order_id)
    assert len(announced) == 1 and announced[0]["reason"].startswith("insufficient_credits")

    await inquire(orders, order_id)

    assert await outcomes(orders, order_id) == announced * 2


async def test_a_refunded_order_answers_with_its_refund_reason(orders: ServiceRig) -> None:
    order_id = new_order_id()
    await drive(
        orders,
        order_id,
        *paid_in_credits(order_id),
        c.ProvisioningFailed(order_id=order_id, reason="panel down"),
    )
    refund = (await orders.emitted(c.RefundCredits.TYPE, correlation_id=order_id))[0]
    await orders.deliver(
        c.CreditsRefunded(order_id=order_id, refund_key=refund.payload["refund_key"], credits=400),
        correlation_id=order_id,
    )
    announced = await outcomes(orders, order_id)
    assert len(announced) == 1 and announced[0]["reason"].startswith("refunded")

    await inquire(orders, order_id)

    assert await outcomes(orders, order_id) == announced * 2


async def test_a_running_order_answers_nothing_its_own_outcome_will_come(
    orders: ServiceRig,
) -> None:
    order_id = new_order_id()
    await drive(orders, order_id, c.CreditsReserved(order_id=order_id, credits=400))

    await inquire(orders, order_id)
    await inquire(orders, order_id)

    assert await outcomes(orders, order_id) == []


async def test_an_unknown_order_answers_nothing_and_is_logged_for_the_operator(
    orders: ServiceRig, caplog: pytest.LogCaptureFixture
) -> None:
    order_id = new_order_id()

    with caplog.at_level(logging.WARNING, logger="services.orders.handlers"):
        await inquire(orders, order_id)

    assert await orders.emitted(correlation_id=order_id) == []
    warned = [r for r in caplog.records if r.name == "services.orders.handlers"]
    assert [r.levelno for r in warned] == [logging.WARNING]
    assert warned[0].fields["order_id"] == order_id  # type: ignore[attr-defined]


async def test_a_question_asked_before_the_order_ended_is_not_answered(
    orders: ServiceRig,
) -> None:
    # The question waited out an outage in a retry queue while the order ended: the outcome
    # went out after the question was asked, so it is not one the cart lost.
    order_id = new_order_id()
    asked_then = Envelope.wrap(
        c.InquireOrder(order_id=order_id, cart_id="cart-1"), correlation_id=order_id
    )
    await drive(
        orders,
        order_id,
        c.CreditsRejected(order_id=order_id, reason="insufficient_credits", available=10),
    )
    announced = await outcomes(orders, order_id)

    await orders.redeliver(asked_then)
    assert await outcomes(orders, order_id) == announced

    await inquire(orders, order_id)  # asked again after the order ended: answered
    assert await outcomes(orders, order_id) == announced * 2
