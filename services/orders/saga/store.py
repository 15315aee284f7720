"""Stores the saga: a new one (its order, lines, history and saga row) and each decision that
moves it (the saga row, the order and its history, line results), all in the caller's
transaction. The start handler writes new sagas here; `runner.py` writes every decision.

Written with Core statements, not by changing loaded ORM objects: a reply is the hottest path of
the service, and the unit of work (dirty tracking, flush ordering, loading the order only to
change it) cost more than the statements themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from services.orders.models import Order, OrderLine, SagaInstance, StatusChange
from services.orders.saga.state import Decision, OrderStatus, SagaState
from shared.messages import contracts as c

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
_add_order = insert(_orders)
_add_lines = insert(_lines)
_add_saga = insert(_sagas)
_add_history = insert(_history)
_line_result = (
    update(_lines)
    .where(_lines.c.order_id == bindparam("b_order_id"), _lines.c.line_no == bindparam("b_line"))
    .values(result=bindparam("b_result"), result_detail=bindparam("b_detail"))
)


def state_of(saga: SagaInstance) -> SagaState:
    return SagaState.model_validate(saga.state)


def _saga_columns(state: SagaState, now: datetime) -> dict[str, Any]:
    """The saga row's columns for a state (a new row's, or an update's)."""
    return {
        "state": state.model_dump(mode="json"),
        "step": state.step.value,
        "deadline_at": state.deadline,
        "updated_at": now,
    }


async def store_new_saga(
    db: AsyncSession, checkout: c.CheckoutRequested, decision: Decision, *, now: datetime
) -> None:
    """Write a saga just started: its order and lines, their history and the saga row, each
    once and already in the state the decision leaves them in."""
    state = decision.state
    status, reason = decision.changes[-1] if decision.changes else (state.status, None)
    await db.execute(
        _add_order,
        {
            "id": state.order_id,
            "user_id": checkout.user_id,
            "cart_id": checkout.cart_id,
            "status": status.value,
            "status_reason": reason,
            "currency": checkout.currency,
            "money_total": checkout.money_total,
            "credits_total": checkout.credits_total,
            "job_id": state.job_id,
            "payment_url": state.payment_url,
            "created_at": now,
            "updated_at": now,
        },
    )
    await db.execute(
        _add_lines,
        [
            {"order_id": state.order_id, "line_no": line.line_no, "item_id": line.item_id,
             "kind": line.kind, "name": line.name, "quantity": line.quantity,
             "unit_price": line.unit_price, "unit_credits": line.unit_credits,
             "paid_with": line.paid_with}
            for line in checkout.lines
        ],
    )  # fmt: skip
    await _add_changes(db, state.order_id, decision.changes, now=now)
    # The first version of the row: what the mapper's version counter starts at.
    saga_row = {"id": state.order_id, **_saga_columns(state, now), "created_at": now, "version": 1}
    await db.execute(_add_saga, saga_row)


async def store_decision(
    db: AsyncSession, saga: SagaInstance, decision: Decision, *, now: datetime
) -> None:
    """Move a stored saga. The version check makes a concurrent move (another replica, or the
    cancel endpoint racing a reply) fail with StaleDataError instead of overwriting it."""
    columns = _saga_columns(decision.state, now)
    moved = await db.execute(
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
    await _record_decision(db, decision, now=now, order_moves=order_moves)


async def _record_decision(
    db: AsyncSession, decision: Decision, *, now: datetime, order_moves: bool
) -> None:
    """Everything a decision changes besides the saga row: the order (unless `order_moves` says
    none of its columns change), its history and line results."""
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
        changed = await db.execute(_order_status if decision.changes else _order_refs, params)
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            raise LookupError(f"saga {order_id} has no order row")
    await _add_changes(db, order_id, decision.changes, now=now)
    if state.results:
        await db.execute(
            _line_result,
            [
                {"b_order_id": order_id, "b_line": r.line_no, "b_result": r.status,
                 "b_detail": r.detail}
                for r in state.results
            ],
        )  # fmt: skip


async def _add_changes(
    db: AsyncSession,
    order_id: str,
    changes: tuple[tuple[OrderStatus, str], ...],
    *,
    now: datetime,
) -> None:
    """The order's history rows for a decision's status changes, in order."""
    if not changes:
        return
    # The order id is the checkout's trace id.
    await db.execute(
        _add_history,
        [
            {"order_id": order_id, "status": s.value, "reason": r, "trace_id": order_id, "at": now}
            for s, r in changes
        ],
    )
