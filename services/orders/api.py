"""Orders API: a shopper reads their orders; operators read any."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from services.orders import repository
from services.orders.models import Order
from shared.auth import Principal, Shopper
from shared.errors import not_found
from shared.runtime import ServiceRuntime, runtime_of

router = APIRouter(tags=["orders"])
Runtime = Annotated[ServiceRuntime, Depends(runtime_of)]


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
    if order is None or (order.user_id != principal.user_id and not principal.is_operator):
        raise not_found("order")
    return order


@router.get("/orders/{order_id}", response_model=OrderOut)
async def get_order(order_id: str, principal: Shopper, runtime: Runtime) -> OrderOut:
    async with runtime.sessionmaker() as session:
        order = _visible(await repository.order_with_details(session, order_id), principal)
        return OrderOut.of(order)


@router.get("/orders", response_model=list[OrderOut])
async def my_orders(principal: Shopper, runtime: Runtime) -> list[OrderOut]:
    async with runtime.sessionmaker() as session:
        return [OrderOut.of(o) for o in await repository.orders_of(session, principal.user_id)]
