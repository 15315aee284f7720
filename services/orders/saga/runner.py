"""The one way a stored saga moves: lock its row, decide on its state, store the decision, emit
its messages, all in the caller's transaction. The reply handler, the deadline scheduler and the
cancel route differ only in what decides (`react`, `on_deadline`, `cancel` of `machine.py`) and in
how a message is sent."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.orders import repository
from services.orders.models import SagaInstance
from services.orders.saga.state import Decision, SagaState
from services.orders.saga.store import state_of, store_decision
from shared.messages import Contract
from shared.outbox import Outbox

Emit = Callable[[Contract], Awaitable[object]]


# One of the machine's inputs (`react`, `on_deadline`, `cancel`) applied to the saga's state at a
# time; None when there is nothing to do.
Decide = Callable[[SagaState, datetime], Decision | None]


class SagaNotFound(LookupError):
    """No saga row with that id (a reply that overtook its saga's start, or an unknown order)."""


async def run_saga(
    db: AsyncSession,
    saga: str | SagaInstance,
    decide: Decide,
    *,
    emit: Emit,
    now: datetime | None = None,
) -> Decision | None:
    """Move one saga and return the decision stored, or None when it had nothing to do.

    `saga` is its id, or its row already locked by the caller (the deadline scan's SKIP LOCKED).
    `now` defaults to the moment the row is locked, so a move that waited for the lock decides on
    the time it acts at."""
    row = saga if isinstance(saga, SagaInstance) else await repository.saga_for_update(db, saga)
    if row is None:
        raise SagaNotFound(f"no saga {saga}")
    if now is None:
        now = datetime.now(UTC)
    decision = decide(state_of(row), now)
    if decision is None or decision.ignored:
        return None
    await store_decision(db, row, decision, now=now)
    for message in decision.send:
        await emit(message)
    return decision


def emit_from(db: AsyncSession, outbox: Outbox, *, saga_id: str) -> Emit:
    """How the deadline scheduler and the cancel route send: no message caused the move, and the
    saga's id is the checkout's trace id."""
    return functools.partial(outbox.emit, db, correlation_id=saga_id)
