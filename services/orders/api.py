"""Orders API: a shopper reads their orders; operators read any."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy import or_, select
from sqlalchemy.orm.exc import StaleDataError

from services.orders import repository
from services.orders.deps import OrdersRuntime
from services.orders.models import Order, SagaInstance
from services.orders.saga.machine import cancel, record_refund_elsewhere, retry_refund
from services.orders.saga.runner import Decide, SagaNotFound, emit_from, run_saga
from services.orders.saga.state import NEEDS_ATTENTION, Step
from services.orders.saga.store import state_of
from shared.auth import Operator, Principal, Shopper, may_see
from shared.errors import ApiError, not_found
from shared.runtime import runtime_of

router = APIRouter(tags=["orders"])
Runtime = Annotated[OrdersRuntime, Depends(runtime_of)]
log = logging.getLogger("services.orders.api")


class LineOut(BaseModel):
    line_no: int
    item_id: str
    kind: str
    name: str
    quantity: int
    unit_price: int
    unit_credits: int | None
    paid_with: str
    result: str | None
    result_detail: str | None


class StatusChangeOut(BaseModel):
    status: str
    reason: str
    at: datetime


class OrderOut(BaseModel):
    id: str
    trace_id: str
    user_id: str
    cart_id: str
    status: str
    status_reason: str | None
    currency: str
    money_total: int
    credits_total: int
    job_id: str | None
    payment_url: str | None
    created_at: datetime
    updated_at: datetime
    lines: list[LineOut]
    history: list[StatusChangeOut]

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        return cls(
            id=order.id,
            trace_id=order.id,
            user_id=order.user_id,
            cart_id=order.cart_id,
            status=order.status,
            status_reason=order.status_reason,
            currency=order.currency,
            money_total=order.money_total,
            credits_total=order.credits_total,
            job_id=order.job_id,
            payment_url=order.payment_url,
            created_at=order.created_at,
            updated_at=order.updated_at,
            lines=[LineOut.model_validate(line, from_attributes=True) for line in order.lines],
            history=[
                StatusChangeOut(status=h.status, reason=h.reason, at=h.at) for h in order.history
            ],
        )


def _visible(order: Order | None, principal: Principal) -> Order:
    # Someone else's order answers exactly like a missing one.
    if order is None or not may_see(principal, order.user_id):
        raise not_found("order")
    return order


@router.get("/orders/{order_id}", response_model=OrderOut)
async def get_order(order_id: str, principal: Shopper, runtime: Runtime) -> OrderOut:
    async with runtime.sessionmaker() as db:
        order = _visible(await repository.order_with_details(db, order_id), principal)
        return OrderOut.of(order)


@router.get("/orders", response_model=list[OrderOut])
async def my_orders(principal: Shopper, runtime: Runtime) -> list[OrderOut]:
    async with runtime.sessionmaker() as db:
        return [OrderOut.of(o) for o in await repository.orders_of(db, principal.user_id)]


@router.post("/orders/{order_id}/cancel", response_model=OrderOut)
async def cancel_order(order_id: str, principal: Shopper, runtime: Runtime) -> OrderOut:
    """The shopper walks away before paying: everything done so far is undone."""
    timing = runtime.deps.timing
    for _ in range(3):
        try:
            async with runtime.transaction() as db:
                _visible(await db.get(Order, order_id), principal)
                decision = await run_saga(
                    db,
                    order_id,
                    lambda state, now: cancel(
                        state, reason="cancelled by the shopper", now=now, timing=timing
                    ),
                    emit=emit_from(db, runtime.outbox, saga_id=order_id),
                )
                if decision is None:
                    raise ApiError(
                        409, "order_not_cancellable", "payment was taken or the order is finished"
                    )
            break
        except SagaNotFound:
            raise not_found("order") from None
        except StaleDataError:
            continue  # a reply moved the saga at the same moment: decide again on the new state
    else:
        raise ApiError(409, "order_busy", "the order is changing right now; try again")
    return await get_order(order_id, principal, runtime)


class OperatorReason(BaseModel):
    """Why an operator acts; recorded on the order with who did it."""

    reason: str = Field(min_length=3, max_length=500)


async def _operator_move(
    order_id: str, operator: Principal, runtime: OrdersRuntime, decide: Decide, refused: str
) -> OrderOut:
    """Moves the saga by an operator's decision; 409 `refused` when it does not apply."""
    async with runtime.transaction() as db:
        try:
            decision = await run_saga(
                db, order_id, decide, emit=emit_from(db, runtime.outbox, saga_id=order_id)
            )
        except SagaNotFound:
            raise not_found("order") from None
        if decision is None:
            raise ApiError(409, refused, "the order has no failed refund")
    log.info("operator %s acted on order %s", operator.user_id, order_id)
    async with runtime.sessionmaker() as db:
        order = await repository.order_with_details(db, order_id)
    if order is None:
        raise not_found("order")
    return OrderOut.of(order)


@router.post("/operator/orders/{order_id}/refund/retry", response_model=OrderOut)
async def retry_failed_refund(
    order_id: str, body: OperatorReason, operator: Operator, runtime: Runtime
) -> OrderOut:
    """Tries a failed money refund again, as a new refund; 409 `refund_not_failed` otherwise."""
    timing = runtime.deps.timing
    why = f"{body.reason} (by {operator.user_id})"
    return await _operator_move(
        order_id,
        operator,
        runtime,
        lambda state, now: retry_refund(state, reason=why, now=now, timing=timing),
        "refund_not_failed",
    )


@router.post("/operator/orders/{order_id}/refund/recorded", response_model=OrderOut)
async def record_refund_made_elsewhere(
    order_id: str, body: OperatorReason, operator: Operator, runtime: Runtime
) -> OrderOut:
    """Records that the shopper was paid back outside the app; 409 `refund_not_failed` unless
    the order's refund failed."""
    why = f"{body.reason} (by {operator.user_id})"
    return await _operator_move(
        order_id,
        operator,
        runtime,
        lambda state, now: record_refund_elsewhere(state, reason=why),
        "refund_not_failed",
    )


class StuckSagaOut(BaseModel):
    order_id: str
    step: str
    deadline_at: datetime | None
    updated_at: datetime
    attempts: int
    # The order's latest status reason: "needs attention: ..." when an owner keeps silent.
    reason: str | None


@router.get("/operator/sagas/stuck", response_model=list[StuckSagaOut])
async def stuck_sagas(_operator: Operator, runtime: Runtime) -> list[StuckSagaOut]:
    """Sagas past their step deadline (the scheduler is acting on them, or something is wrong)
    and sagas whose step owner has not answered repeated questions (needing attention, though
    their next question is not due yet), stalest first."""
    now = datetime.now(UTC)
    query = (
        select(SagaInstance, Order.status_reason)
        .join(Order, Order.id == SagaInstance.id)
        .where(
            SagaInstance.step != Step.DONE.value,
            or_(SagaInstance.deadline_at < now, Order.status_reason.startswith(NEEDS_ATTENTION)),
        )
        .order_by(SagaInstance.updated_at)
        .limit(200)
    )
    async with runtime.sessionmaker() as db:
        found = (await db.execute(query)).all()
    return [
        StuckSagaOut(
            order_id=s.id,
            step=s.step,
            deadline_at=s.deadline_at,
            updated_at=s.updated_at,
            attempts=state_of(s).attempts,
            reason=reason,
        )
        for s, reason in found
    ]
