"""The orders service's message handlers: start a saga on checkout, advance it on each reply."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime

from services.orders import repository
from services.orders.models import Order, OrderLine, SagaInstance, StatusChange
from services.orders.saga import REPLY_TYPES, Timing, react, start
from services.orders.saga_store import apply_decision, saga_columns, state_of
from shared.dispatch import Handler, MessageContext
from shared.messages import Contract
from shared.messages import contracts as c


async def handle_checkout_requested(
    ctx: MessageContext, msg: c.CheckoutRequested, *, timing: Timing
) -> None:
    if await repository.saga_for_update(ctx.db, msg.checkout_id) is not None:
        return  # the same checkout arrived under a new message id: one saga per checkout
    now = datetime.now(UTC)
    decision = start(msg, now=now, timing=timing)
    status, reason = decision.changes[-1] if decision.changes else (decision.state.status, None)
    # Both rows are written once, already in the state the decision leaves them in.
    order = Order(
        id=msg.checkout_id,
        user_id=msg.user_id,
        cart_id=msg.cart_id,
        status=status.value,
        status_reason=reason,
        currency=msg.currency,
        money_total=msg.money_total,
        credits_total=msg.credits_total,
        job_id=decision.state.job_id,
        payment_url=decision.state.payment_url,
        created_at=now,
        updated_at=now,
        lines=[
            OrderLine(
                line_no=line.line_no,
                item_id=line.item_id,
                kind=line.kind,
                name=line.name,
                quantity=line.quantity,
                unit_price=line.unit_price,
                unit_credits=line.unit_credits,
                paid_with=line.paid_with,
            )
            for line in msg.lines
        ],
        # The order id is the checkout's trace id.
        history=[
            StatusChange(status=s.value, reason=r, trace_id=msg.checkout_id, at=now)
            for s, r in decision.changes
        ],
    )
    saga = SagaInstance(id=msg.checkout_id, **saga_columns(decision.state, now), created_at=now)
    ctx.db.add_all([order, saga])
    for message in decision.send:
        await ctx.emit(message)


async def handle_saga_reply(ctx: MessageContext, msg: Contract, *, timing: Timing) -> None:
    order_id: str = msg.order_id  # type: ignore[attr-defined]  # every reply names its order
    saga = await repository.saga_for_update(ctx.db, order_id)
    if saga is None:
        raise LookupError(f"no saga {order_id} yet")  # retried: the reply overtook the start
    now = datetime.now(UTC)
    decision = react(state_of(saga), msg, now=now, timing=timing)
    if decision.ignored:
        return
    await apply_decision(ctx.db, saga, decision, now=now, emit=ctx.emit)


def build_handlers(timing: Timing) -> Mapping[type[Contract], Handler]:
    reply = functools.partial(handle_saga_reply, timing=timing)
    handlers: dict[type[Contract], Handler] = {
        c.CheckoutRequested: functools.partial(handle_checkout_requested, timing=timing)
    }
    handlers.update({reply_type: reply for reply_type in REPLY_TYPES})
    return handlers
