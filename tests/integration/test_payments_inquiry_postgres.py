"""InquirePayment on real PostgreSQL, with the Stripe simulator through the real SDK: the inquiry
reads the row, asks Stripe with no row lock held, then settles with the conditional UPDATE. On
PostgreSQL another path (a webhook, the reconciler, another replica) can settle and commit the
row while Stripe answers — which SQLite's database lock never lets happen."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest_asyncio

from services.payments.bootstrap import build
from shared.messages.contracts import PaymentSucceeded
from tests.support.payments import (
    completed,
    inquire,
    inquiry_answers,
    post_webhook,
    send_create,
    settings_on_sim,
    stored_session,
)
from tests.support.rig import Rigs, ServiceRig, new_order_id
from tests.support.stripe_sim import Sim, running_sim, signed, stripe_event, with_answer_held


@pytest_asyncio.fixture
async def payments_pg_on_sim(
    fresh_database: Callable[[str], Awaitable[str]],
) -> AsyncIterator[tuple[ServiceRig, Sim]]:
    with running_sim() as sim:
        settings = settings_on_sim(await fresh_database("payments_inquiry"), sim)
        async with Rigs() as rigs:
            yield await rigs.start(ServiceRig, build, settings), sim


async def test_a_row_settled_by_another_path_while_stripe_answers_is_what_the_inquiry_announces(
    payments_pg_on_sim: tuple[ServiceRig, Sim],
) -> None:
    payments, sim = payments_pg_on_sim
    order = new_order_id()
    session_id = await send_create(payments, order)
    await sim.control(f"sessions/{session_id}/expire_now")

    # The inquiry reads the row (open) and Stripe's answer (expired) is in flight...
    asking = await with_answer_held(
        sim,
        inquire(payments, order),
        method="GET",
        path_prefix=f"/v1/checkout/sessions/{session_id}",
    )
    # ...when a webhook saying the session was paid settles the row and commits. Stripe cannot
    # say both; whichever path settled first is the order's one outcome, whatever came later.
    body = stripe_event("checkout.session.completed", completed(session_id, order, amount=2999))
    assert (await post_webhook(payments, body, signed(body)))[0] == 200
    await asking

    answered = await inquiry_answers(payments, order)
    assert [kind for kind, _ in answered] == [PaymentSucceeded.TYPE, PaymentSucceeded.TYPE]
    assert answered[0] == answered[1]  # the webhook's announcement, and the same again
    assert (await stored_session(payments, order)).status == "complete"
