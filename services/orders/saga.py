"""The checkout saga as a pure state machine: (state, reply) -> (new state, messages to send).

No I/O here. `handlers.py` loads the saga row, calls `start` or `react`, stores the new state
and writes the messages to the outbox in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from shared.messages import Contract
from shared.messages import contracts as c


class Step(StrEnum):
    RESERVING_CREDITS = "reserving_credits"
    CREATING_JOB = "creating_job"
    CREATING_PAYMENT_SESSION = "creating_payment_session"
    AWAITING_PAYMENT = "awaiting_payment"
    CAPTURING_CREDITS = "capturing_credits"
    PROVISIONING = "provisioning"
    COMPENSATING = "compensating"
    DONE = "done"


class OrderStatus(StrEnum):
    PENDING = "pending"
    AWAITING_PAYMENT = "awaiting_payment"
    PAID = "paid"
    PROVISIONING = "provisioning"
    COMPLETED = "completed"
    PARTIALLY_COMPLETED = "partially_completed"
    COMPENSATING = "compensating"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


TERMINAL = frozenset(
    {
        OrderStatus.COMPLETED,
        OrderStatus.PARTIALLY_COMPLETED,
        OrderStatus.CANCELLED,
        OrderStatus.REFUNDED,
    }
)


class SagaState(BaseModel):
    """Everything the saga remembers between replies; stored as JSON in the saga row."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    cart_id: str
    user_id: str
    currency: str
    lines: tuple[c.CheckoutLine, ...]
    money_total: int
    credits_total: int
    step: Step
    status: OrderStatus
    credits_reserved: bool = False
    credits_captured: bool = False
    job_id: str | None = None
    payment_session_id: str | None = None
    payment_url: str | None = None
    payment_deadline: datetime | None = None
    payment_intent_id: str | None = None
    amount_paid: int = 0
    # Replies the compensation still waits for, by message type.
    awaiting: tuple[str, ...] = ()
    cancel_reason: str | None = None
    results: tuple[c.ItemResult, ...] = ()

    def evolve(self, **changes: object) -> SagaState:
        return self.model_copy(update=changes)


@dataclass(frozen=True)
class Decision:
    state: SagaState
    send: tuple[Contract, ...] = ()
    # The order status changes this decision makes, in order, each with its reason.
    changes: tuple[tuple[OrderStatus, str], ...] = ()
    ignored: bool = False


@dataclass(frozen=True)
class Timing:
    payment_window: timedelta = field(default=timedelta(hours=1))


def start(checkout: c.CheckoutRequested) -> Decision:
    state = SagaState(
        order_id=checkout.checkout_id,
        cart_id=checkout.cart_id,
        user_id=checkout.user_id,
        currency=checkout.currency,
        lines=checkout.lines,
        money_total=checkout.money_total,
        credits_total=checkout.credits_total,
        step=Step.RESERVING_CREDITS,
        status=OrderStatus.PENDING,
    )
    if state.credits_total > 0:
        return Decision(
            state,
            (
                c.ReserveCredits(
                    order_id=state.order_id, user_id=state.user_id, credits=state.credits_total
                ),
            ),
            changes=((OrderStatus.PENDING, "checkout requested"),),
        )
    return Decision(
        state.evolve(step=Step.CREATING_JOB),
        (_create_job(state),),
        changes=((OrderStatus.PENDING, "checkout requested (no credits to reserve)"),),
    )


def react(state: SagaState, reply: Contract, *, now: datetime, timing: Timing) -> Decision:
    """Apply one reply. A reply that does not fit the current step changes nothing."""
    handler = _REACTIONS.get(type(reply))
    if handler is None:
        return _ignore(state)
    return handler(state, reply, now, timing)


# --- reactions, one per reply type -----------------------------------------------------------


def _on_credits_reserved(
    state: SagaState, _r: c.CreditsReserved, _now: datetime, _t: Timing
) -> Decision:
    if state.step is not Step.RESERVING_CREDITS:
        return _ignore(state)
    return Decision(
        state.evolve(step=Step.CREATING_JOB, credits_reserved=True), (_create_job(state),)
    )


def _on_credits_rejected(
    state: SagaState, r: c.CreditsRejected, _now: datetime, _t: Timing
) -> Decision:
    if state.step is not Step.RESERVING_CREDITS:
        return _ignore(state)
    return _cancel(
        state, f"{r.reason}: {state.credits_total} credits needed, {r.available} available"
    )


def _on_job_created(state: SagaState, r: c.JobCreated, now: datetime, timing: Timing) -> Decision:
    if state.step is not Step.CREATING_JOB:
        return _ignore(state)
    state = state.evolve(job_id=r.job_id)
    if state.money_total > 0:
        deadline = now + timing.payment_window
        command = c.CreatePaymentSession(
            order_id=state.order_id,
            user_id=state.user_id,
            currency=state.currency,
            amount_total=state.money_total,
            lines=tuple(
                c.PaymentLine(name=line.name, quantity=line.quantity, unit_amount=line.unit_price)
                for line in state.lines
                if line.paid_with == "money"
            ),
            expires_at=deadline,
        )
        return Decision(
            state.evolve(step=Step.CREATING_PAYMENT_SESSION, payment_deadline=deadline), (command,)
        )
    return _after_payment(state, "paid with credits")


def _on_job_rejected(state: SagaState, r: c.JobRejected, _now: datetime, _t: Timing) -> Decision:
    if state.step is not Step.CREATING_JOB:
        return _ignore(state)
    return _compensate(state, f"job rejected: {r.reason}")


def _on_session_created(
    state: SagaState, r: c.PaymentSessionCreated, _now: datetime, _t: Timing
) -> Decision:
    if state.step is not Step.CREATING_PAYMENT_SESSION:
        return _ignore(state)
    return Decision(
        state.evolve(
            step=Step.AWAITING_PAYMENT,
            status=OrderStatus.AWAITING_PAYMENT,
            payment_session_id=r.session_id,
            payment_url=r.url,
            payment_deadline=r.expires_at,
        ),
        changes=((OrderStatus.AWAITING_PAYMENT, "payment session created"),),
    )


def _on_session_failed(
    state: SagaState, r: c.PaymentSessionFailed, _now: datetime, _t: Timing
) -> Decision:
    if state.step is not Step.CREATING_PAYMENT_SESSION:
        return _ignore(state)
    return _compensate(state, f"payment session failed: {r.reason}")


def _on_payment_succeeded(
    state: SagaState, r: c.PaymentSucceeded, _now: datetime, _t: Timing
) -> Decision:
    # The webhook's event may overtake the session-created reply on a busy queue.
    if state.step not in (Step.CREATING_PAYMENT_SESSION, Step.AWAITING_PAYMENT):
        return _ignore(state)
    paid = state.evolve(
        payment_session_id=r.session_id,
        payment_intent_id=r.payment_intent_id,
        amount_paid=r.amount,
    )
    return _after_payment(paid, "payment succeeded")


def _on_payment_ended(
    state: SagaState, r: c.PaymentFailed | c.PaymentExpired, _now: datetime, _t: Timing
) -> Decision:
    if state.step not in (Step.CREATING_PAYMENT_SESSION, Step.AWAITING_PAYMENT):
        return _ignore(state)
    why = r.reason if isinstance(r, c.PaymentFailed) else "payment session expired"
    return _compensate(state.evolve(payment_session_id=None), f"payment not made: {why}")


def _on_credits_captured(
    state: SagaState, _r: c.CreditsCaptured, _now: datetime, _t: Timing
) -> Decision:
    if state.step is not Step.CAPTURING_CREDITS:
        return _ignore(state)
    provisioning = state.evolve(
        step=Step.PROVISIONING, status=OrderStatus.PROVISIONING, credits_captured=True
    )
    return Decision(
        provisioning,
        (c.ProvisionOrder(order_id=state.order_id),),
        changes=((OrderStatus.PROVISIONING, "credits captured"),),
    )


def _on_order_provisioned(
    state: SagaState, r: c.OrderProvisioned, _now: datetime, _t: Timing
) -> Decision:
    if state.step is not Step.PROVISIONING:
        return _ignore(state)
    failed = [result for result in r.results if result.status == "failed"]
    status = OrderStatus.PARTIALLY_COMPLETED if failed else OrderStatus.COMPLETED
    reason = (
        f"{len(failed)} of {len(r.results)} items could not be provisioned"
        if failed
        else "all items provisioned"
    )
    done = state.evolve(step=Step.DONE, status=status, results=r.results)
    outcome = c.OrderCompleted(order_id=state.order_id, cart_id=state.cart_id, status=status.value)
    return Decision(done, (outcome,), changes=((status, reason),))


def _on_compensated(
    state: SagaState, r: c.CreditsReleased | c.JobCancelled, _now: datetime, _t: Timing
) -> Decision:
    if state.step is not Step.COMPENSATING or r.TYPE not in state.awaiting:
        return _ignore(state)
    waiting = tuple(t for t in state.awaiting if t != r.TYPE)
    if waiting:
        return Decision(state.evolve(awaiting=waiting))
    return _cancel(state.evolve(awaiting=()), state.cancel_reason or "compensated")


Reaction = Callable[[SagaState, Any, datetime, Timing], Decision]

_REACTIONS: dict[type[Contract], Reaction] = {
    c.CreditsReserved: _on_credits_reserved,
    c.CreditsRejected: _on_credits_rejected,
    c.JobCreated: _on_job_created,
    c.JobRejected: _on_job_rejected,
    c.PaymentSessionCreated: _on_session_created,
    c.PaymentSessionFailed: _on_session_failed,
    c.PaymentSucceeded: _on_payment_succeeded,
    c.PaymentFailed: _on_payment_ended,
    c.PaymentExpired: _on_payment_ended,
    c.CreditsCaptured: _on_credits_captured,
    c.OrderProvisioned: _on_order_provisioned,
    c.CreditsReleased: _on_compensated,
    c.JobCancelled: _on_compensated,
}

REPLY_TYPES: tuple[type[Contract], ...] = tuple(_REACTIONS)


# --- shared moves ----------------------------------------------------------------------------


def _ignore(state: SagaState) -> Decision:
    return Decision(state, ignored=True)


def _create_job(state: SagaState) -> c.CreateJob:
    return c.CreateJob(order_id=state.order_id, user_id=state.user_id, lines=state.lines)


def _after_payment(state: SagaState, reason: str) -> Decision:
    paid = state.evolve(status=OrderStatus.PAID)
    if state.credits_total > 0:
        return Decision(
            paid.evolve(step=Step.CAPTURING_CREDITS),
            (
                c.CaptureCredits(
                    order_id=state.order_id, user_id=state.user_id, credits=state.credits_total
                ),
            ),
            changes=((OrderStatus.PAID, reason),),
        )
    return Decision(
        paid.evolve(step=Step.PROVISIONING, status=OrderStatus.PROVISIONING),
        (c.ProvisionOrder(order_id=state.order_id),),
        changes=((OrderStatus.PAID, reason), (OrderStatus.PROVISIONING, "provisioning started")),
    )


def _compensate(state: SagaState, reason: str) -> Decision:
    """Undo completed steps in reverse order: job, then credits. Nothing was charged yet."""
    send: list[Contract] = []
    awaiting: list[str] = []
    if state.job_id is not None:
        send.append(c.CancelJob(order_id=state.order_id, reason=reason))
        awaiting.append(c.JobCancelled.TYPE)
    if state.credits_reserved:
        send.append(c.ReleaseCredits(order_id=state.order_id, user_id=state.user_id))
        awaiting.append(c.CreditsReleased.TYPE)
    if not send:
        return _cancel(state, reason)
    return Decision(
        state.evolve(
            step=Step.COMPENSATING,
            status=OrderStatus.COMPENSATING,
            awaiting=tuple(awaiting),
            cancel_reason=reason,
        ),
        tuple(send),
        changes=((OrderStatus.COMPENSATING, reason),),
    )


def _cancel(state: SagaState, reason: str) -> Decision:
    cancelled = state.evolve(step=Step.DONE, status=OrderStatus.CANCELLED, cancel_reason=reason)
    return Decision(
        cancelled,
        (c.OrderCancelled(order_id=state.order_id, cart_id=state.cart_id, reason=reason),),
        changes=((OrderStatus.CANCELLED, reason),),
    )
