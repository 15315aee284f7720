"""The orders service's message handlers: start a saga on checkout, advance it on each reply."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime

from services.orders import repository
from services.orders.models import Order, OrderLine, SagaInstance
from services.orders.saga import REPLY_TYPES, Timing, react, start
from services.orders.saga_store import apply_decision, state_of
from shared.dispatch import Handler, MessageContext
from shared.messages import Contract
from shared.messages import contracts as c


async def handle_checkout_requested(
    ctx: MessageContext, msg: c.CheckoutRequested, *, timing: Timing
) -> None:
    if await repository.saga_for_update(ctx.session, msg.checkout_id) is not None:
        return  # the same checkout arrived under a new message id: one saga per checkout
    now = datetime.now(UTC)
    decision = start(msg, now=now, timing=timing)
    order = Order(
        id=msg.checkout_id,
        user_id=msg.user_id,
        cart_id=msg.cart_id,
        status=decision.state.status.value,
        currency=msg.currency,
        money_total=msg.money_total,
        credits_total=msg.credits_total,
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
        history=[],
    )
    saga = SagaInstance(
        id=msg.checkout_id,
        step=decision.state.step.value,
        state=decision.state.model_dump(mode="json"),
        created_at=now,
        updated_at=now,
    )
    ctx.session.add_all([order, saga])
    await apply_decision(ctx.session, saga, decision, now=now, emit=ctx.emit)


async def handle_saga_reply(ctx: MessageContext, msg: Contract, *, timing: Timing) -> None:
    order_id: str = msg.order_id  # type: ignore[attr-defined]  # every reply names its order
    saga = await repository.saga_for_update(ctx.session, order_id)
    if saga is None:
        raise LookupError(f"no saga {order_id} yet")  # retried: the reply overtook the start
    now = datetime.now(UTC)
    decision = react(state_of(saga), msg, now=now, timing=timing)
    if decision.ignored:
        return
    await apply_decision(ctx.session, saga, decision, now=now, emit=ctx.emit)


def build_handlers(timing: Timing) -> Mapping[type[Contract], Handler]:
    reply = functools.partial(handle_saga_reply, timing=timing)
    handlers: dict[type[Contract], Handler] = {
        c.CheckoutRequested: functools.partial(handle_checkout_requested, timing=timing)
    }
    handlers.update({reply_type: reply for reply_type in REPLY_TYPES})
    return handlers
