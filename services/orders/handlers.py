"""The orders service's message handlers: start a saga on checkout, advance it on each reply."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime

from services.orders import repository
from services.orders.models import Order, OrderLine, SagaInstance, StatusChange
from services.orders.saga import REPLY_TYPES, Decision, SagaState, Timing, react, start
from shared.dispatch import Handler, MessageContext
from shared.messages import Contract
from shared.messages import contracts as c


async def handle_checkout_requested(ctx: MessageContext, msg: c.CheckoutRequested) -> None:
    if await repository.saga_for_update(ctx.session, msg.checkout_id) is not None:
        return  # the same checkout arrived under a new message id: one saga per checkout
    decision = start(msg)
    now = datetime.now(UTC)
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
    await _apply(ctx, saga, decision, now)


async def handle_saga_reply(ctx: MessageContext, msg: Contract, *, timing: Timing) -> None:
    order_id: str = msg.order_id  # type: ignore[attr-defined]  # every reply names its order
    saga = await repository.saga_for_update(ctx.session, order_id)
    if saga is None:
        raise LookupError(f"no saga {order_id} yet")  # retried: the reply overtook the start
    now = datetime.now(UTC)
    decision = react(SagaState.model_validate(saga.state), msg, now=now, timing=timing)
    if decision.ignored:
        return
    await _apply(ctx, saga, decision, now)


async def _apply(
    ctx: MessageContext, saga: SagaInstance, decision: Decision, now: datetime
) -> None:
    state = decision.state
    saga.state = state.model_dump(mode="json")
    saga.step = state.step.value
    saga.deadline_at = state.payment_deadline
    saga.updated_at = now
    order = await ctx.session.get(Order, state.order_id)
    assert order is not None
    order.job_id = state.job_id
    order.payment_url = state.payment_url
    for status, reason in decision.changes:
        order.status = status.value
        order.status_reason = reason
        order.updated_at = now
        ctx.session.add(
            StatusChange(
                order_id=order.id, status=status.value, reason=reason, trace_id=ctx.trace_id, at=now
            )
        )
    if state.results:
        await _record_results(ctx, state)
    for message in decision.send:
        await ctx.emit(message)
    await ctx.session.flush()  # raises StaleDataError here if another replica moved the saga


async def _record_results(ctx: MessageContext, state: SagaState) -> None:
    for result in state.results:
        line = await ctx.session.get(OrderLine, (state.order_id, result.line_no))
        if line is not None:
            line.result = result.status
            line.result_detail = result.detail


def build_handlers(timing: Timing) -> Mapping[type[Contract], Handler]:
    reply = functools.partial(handle_saga_reply, timing=timing)
    handlers: dict[type[Contract], Handler] = {c.CheckoutRequested: handle_checkout_requested}
    handlers.update({reply_type: reply for reply_type in REPLY_TYPES})
    return handlers
