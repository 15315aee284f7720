"""Stores a saga decision: the saga row, the order and its history, and the outgoing messages,
all in the caller's transaction. Used by the reply handlers, the deadline scheduler and the
cancel endpoint alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.orders.models import Order, OrderLine, SagaInstance, StatusChange
from services.orders.saga_state import Decision, SagaState
from shared.messages import Contract

Emit = Callable[[Contract], Awaitable[None]]


def state_of(saga: SagaInstance) -> SagaState:
    return SagaState.model_validate(saga.state)


async def apply_decision(
    session: AsyncSession, saga: SagaInstance, decision: Decision, *, now: datetime, emit: Emit
) -> None:
    state = decision.state
    saga.state = state.model_dump(mode="json")
    saga.step = state.step.value
    saga.deadline_at = state.deadline
    saga.updated_at = now
    order = await session.get(Order, state.order_id)
    if order is None:
        raise LookupError(f"saga {saga.id} has no order row")
    order.job_id = state.job_id
    order.payment_url = state.payment_url
    for status, reason in decision.changes:
        order.status = status.value
        order.status_reason = reason
        order.updated_at = now
        # The order id is the checkout's trace id.
        session.add(
            StatusChange(
                order_id=order.id, status=status.value, reason=reason, trace_id=order.id, at=now
            )
        )
    if state.results:
        lines = {
            line.line_no: line
            for line in await session.scalars(
                select(OrderLine).where(OrderLine.order_id == state.order_id)
            )
        }
        for result in state.results:
            if (line := lines.get(result.line_no)) is not None:
                line.result = result.status
                line.result_detail = result.detail
    for message in decision.send:
        await emit(message)
    await session.flush()  # raises StaleDataError here if another replica moved the saga
