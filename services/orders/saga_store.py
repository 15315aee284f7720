"""Stores a saga decision: the saga row, the order and its history, and the outgoing messages,
all in the caller's transaction. Used by the reply handlers, the deadline scheduler and the
cancel endpoint alike.

Written with Core statements, not by changing loaded ORM objects: a reply is the hottest path of
the service, and the unit of work (dirty tracking, flush ordering, loading the order only to
change it) cost more than the statements themselves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from services.orders.models import Order, OrderLine, SagaInstance, StatusChange
from services.orders.saga_state import Decision, SagaState
from shared.messages import Contract

Emit = Callable[[Contract], Awaitable[None]]

_sagas: Table = SagaInstance.__table__  # type: ignore[assignment]
_orders: Table = Order.__table__  # type: ignore[assignment]
_lines: Table = OrderLine.__table__  # type: ignore[assignment]
_history: Table = StatusChange.__table__  # type: ignore[assignment]

# Built once, run with parameters: building a statement and its cache key cost about as much CPU
# as running it.
_move_saga = (
    update(_sagas)
    .where(_sagas.c.id == bindparam("b_id"), _sagas.c.version == bindparam("b_version"))
    .values(
        state=bindparam("b_state"),
        step=bindparam("b_step"),
        deadline_at=bindparam("b_deadline"),
        updated_at=bindparam("b_now"),
        version=bindparam("b_next_version"),
    )
)
_order_refs = (
    update(_orders)
    .where(_orders.c.id == bindparam("b_id"))
    .values(job_id=bindparam("b_job_id"), payment_url=bindparam("b_payment_url"))
)
_order_status = _order_refs.values(
    status=bindparam("b_status"),
    status_reason=bindparam("b_reason"),
    updated_at=bindparam("b_now"),
)
_add_history = insert(_history)
_line_result = (
    update(_lines)
    .where(_lines.c.order_id == bindparam("b_order_id"), _lines.c.line_no == bindparam("b_line"))
    .values(result=bindparam("b_result"), result_detail=bindparam("b_detail"))
)


def state_of(saga: SagaInstance) -> SagaState:
    return SagaState.model_validate(saga.state)


def saga_columns(state: SagaState, now: datetime) -> dict[str, Any]:
    """The saga row's columns for a state (a new row's, or an update's)."""
    return {
        "state": state.model_dump(mode="json"),
        "step": state.step.value,
        "deadline_at": state.deadline,
        "updated_at": now,
    }


async def apply_decision(
    session: AsyncSession, saga: SagaInstance, decision: Decision, *, now: datetime, emit: Emit
) -> None:
    """Move a stored saga. The version check makes a concurrent move (another replica, or the
    cancel endpoint racing a reply) fail with StaleDataError instead of overwriting it."""
    columns = saga_columns(decision.state, now)
    moved = await session.execute(
        _move_saga,
        {
            "b_id": saga.id,
            "b_version": saga.version,
            "b_state": columns["state"],
            "b_step": columns["step"],
            "b_deadline": columns["deadline_at"],
            "b_now": now,
            "b_next_version": saga.version + 1,
        },
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleDataError(f"saga {saga.id} moved under version {saga.version}")
    before = saga.state
    order_moves = bool(decision.changes) or (before.get("job_id"), before.get("payment_url")) != (
        decision.state.job_id,
        decision.state.payment_url,
    )
    await _record_decision(session, decision, now=now, emit=emit, order_moves=order_moves)


async def _record_decision(
    session: AsyncSession,
    decision: Decision,
    *,
    now: datetime,
    emit: Emit,
    order_moves: bool,
) -> None:
    """Everything a decision changes besides the saga row: the order (unless `order_moves` says
    none of its columns change), its history and line results, and the messages to send."""
    state = decision.state
    order_id = state.order_id
    params: dict[str, Any] = {
        "b_id": order_id,
        "b_job_id": state.job_id,
        "b_payment_url": state.payment_url,
    }
    if decision.changes:
        status, reason = decision.changes[-1]
        params.update(b_status=status.value, b_reason=reason, b_now=now)
    if order_moves:
        changed = await session.execute(_order_status if decision.changes else _order_refs, params)
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            raise LookupError(f"saga {order_id} has no order row")
    if decision.changes:
        # The order id is the checkout's trace id.
        await session.execute(
            _add_history,
            [
                {"order_id": order_id, "status": s.value, "reason": r, "trace_id": order_id,
                 "at": now}
                for s, r in decision.changes
            ],
        )  # fmt: skip
    if state.results:
        await session.execute(
            _line_result,
            [
                {"b_order_id": order_id, "b_line": r.line_no, "b_result": r.status,
                 "b_detail": r.detail}
                for r in state.results
            ],
        )  # fmt: skip
    for message in decision.send:
        await emit(message)
