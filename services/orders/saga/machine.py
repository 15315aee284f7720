"""The checkout saga as a pure state machine: (state, input) -> decision. No I/O here.

Inputs are replies from the services (`react`), the step's deadline passing (`on_deadline`) and
the shopper cancelling (`cancel`). `runner.py` locks the saga row, calls one of these, stores the
new state and writes the decision's messages to the outbox in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from services.orders.saga.outcome import outcome_of
from services.orders.saga.refunds import share_of_failed
from services.orders.saga.state import (
    CANCELLABLE,
    NEEDS_ATTENTION,
    Decision,
    OrderStatus,
    SagaState,
    Step,
    Timing,
)
from shared.messages import Contract
from shared.messages import contracts as c


def start(checkout: c.CheckoutRequested, *, now: datetime, timing: Timing) -> Decision:
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
            _goto(state, Step.RESERVING_CREDITS, now, timing),
            (_reserve(state),),
            changes=((OrderStatus.PENDING, "checkout requested"),),
        )
    return Decision(
        _goto(state, Step.CREATING_JOB, now, timing),
        (_create_job(state),),
        changes=((OrderStatus.PENDING, "checkout requested (no credits to reserve)"),),
    )


def react(state: SagaState, reply: Contract, *, now: datetime, timing: Timing) -> Decision:
    """Apply one reply. A reply that does not fit the current step changes nothing."""
    reaction = _REACTIONS.get(type(reply))
    if reaction is None:
        return _ignore(state)
    return reaction(state, reply, now, timing)


def cancel(state: SagaState, *, reason: str, now: datetime, timing: Timing) -> Decision | None:
    """The shopper cancels; None when it is too late (payment taken or on its way, or the saga
    is over)."""
    if state.step not in CANCELLABLE or state.status is OrderStatus.PAYMENT_PROCESSING:
        return None
    return _compensate(state, reason, now, timing, uncertain=True)


def retry_refund(
    state: SagaState, *, reason: str, now: datetime, timing: Timing
) -> Decision | None:
    """An operator tries a failed money refund again, as a new refund under its own key (the
    failed one's key is spent at Stripe); None unless the order is `refund_failed`."""
    if state.status is not OrderStatus.REFUND_FAILED or state.step is not Step.DONE:
        return None
    retries = state.refund_retries + 1
    retrying = state.evolve(
        refund_key=f"{state.refund_key}-retry{retries}",
        refund_retries=retries,
        refund_failed=None,
        awaiting=(c.PaymentRefunded.TYPE,),
    )
    return Decision(
        _goto(retrying, Step.REFUNDING, now, timing),
        # Only the money refund is owed again (a credits refund went through): the very
        # RefundPayment the refunding deadline re-sends, under the new key.
        _owed(retrying),
        changes=((state.status, f"refund retried by an operator: {reason}"),),
    )


def record_refund_elsewhere(state: SagaState, *, reason: str) -> Decision | None:
    """An operator records that the shopper was paid back outside this app (the Dashboard, a
    bank transfer): the order takes the status the refund would have given it. None unless the
    order is `refund_failed`."""
    if state.status is not OrderStatus.REFUND_FAILED or state.step is not Step.DONE:
        return None
    final = state.after_refund or OrderStatus.REFUNDED
    # `refund_failed` is kept: a late copy of the failure must not reopen a settled order.
    settled = state.evolve(status=final)
    return Decision(settled, changes=((final, f"refund made outside the app: {reason}"),))


def on_deadline(state: SagaState, *, now: datetime, timing: Timing) -> Decision:
    """The current step's reply did not come in time.

    Silence alone never undoes or refunds anything: the step's owner is asked, and the saga
    acts on its answer. Before payment the undo commands are those questions (each owner fences:
    a release, a cancel or an expiry makes the late command a no-op, and the saga waits for
    every confirmation); once money may have been taken, the owner is asked what happened.
    """
    if state.deadline is None or now < state.deadline or state.step is Step.DONE:
        return _ignore(state)
    step = state.step
    if step is Step.AWAITING_PAYMENT:
        inquiry = c.InquirePayment(order_id=state.order_id)
        first = "payment deadline passed; asking payments what became of the payment"
        return _ask_again(state, (inquiry,), "payments", now, timing, first=first)
    if step in CANCELLABLE:
        return _compensate(state, f"{step} timed out", now, timing, uncertain=True)
    if step is Step.PROVISIONING:
        if state.attempts + 1 < timing.max_attempts:
            retried = _goto(state, step, now, timing).evolve(attempts=state.attempts + 1)
            return Decision(retried, (c.ProvisionOrder(order_id=state.order_id),))
        return _fence_job(state, now, timing)
    if step is Step.FENCING_JOB:
        return _ask_again(state, (_cancel_job(state),), "provisioning", now, timing)
    if step is Step.CAPTURING_CREDITS:
        # Credits are reserved: capturing cannot fail, it can only be late. Ask again.
        return _ask_again(state, (_capture(state),), "payments", now, timing)
    # Compensating or refunding: every command is idempotent, so re-send what is still owed.
    return _ask_again(state, _owed(state), "the services owing a reply", now, timing)


def _ask_again(
    state: SagaState,
    send: tuple[Contract, ...],
    owner: str,
    now: datetime,
    timing: Timing,
    *,
    first: str | None = None,
) -> Decision:
    """Asks the step's owner (again), each time waiting twice as long up to a cap; once it has
    gone unanswered `max_attempts` times the order is flagged as needing attention (recorded on
    the order, once) while the saga keeps asking."""
    attempts = state.attempts + 1
    wait = min(timing.step_timeout * 2**state.attempts, timing.max_ask_interval)
    asked = state.evolve(deadline=now + wait, attempts=attempts)
    changes: list[tuple[OrderStatus, str]] = []
    if first is not None and state.attempts == 0:
        changes.append((state.status, first))
    if attempts == timing.max_attempts:
        unanswered = f"{owner} has not answered {attempts} times"
        changes.append((state.status, f"{NEEDS_ATTENTION} {unanswered}; still asking"))
    return Decision(asked, send, changes=tuple(changes))


def _fence_job(state: SagaState, now: datetime, timing: Timing) -> Decision:
    """Provisioning did not answer ProvisionOrder: ask it to cancel the job. It answers
    cancelled (fenced before anything ran: refund it all) or with the job's results (act on
    them); nothing is refunded before it answers."""
    fencing = _goto(state, Step.FENCING_JOB, now, timing)
    why = (
        "provisioning did not answer in time; asking provisioning to cancel the job"
        " (nothing is refunded before it answers)"
    )
    return Decision(fencing, (_cancel_job(state),), changes=((state.status, why),))


# --- reactions, one per reply type -----------------------------------------------------------


def _on_credits_reserved(state: SagaState, _r: Any, now: datetime, timing: Timing) -> Decision:
    if state.step is not Step.RESERVING_CREDITS:
        return _ignore(state)
    reserved = _goto(state, Step.CREATING_JOB, now, timing).evolve(credits_reserved=True)
    return Decision(reserved, (_create_job(state),))


def _on_credits_rejected(
    state: SagaState, r: c.CreditsRejected, now: datetime, timing: Timing
) -> Decision:
    if state.step is not Step.RESERVING_CREDITS:
        return _ignore(state)
    why = f"{r.reason}: {state.credits_total} credits needed, {r.available} available"
    return _cancel(state, why)


def _on_job_created(state: SagaState, r: c.JobCreated, now: datetime, timing: Timing) -> Decision:
    if state.step in (Step.COMPENSATING, Step.DONE) and state.status is not OrderStatus.COMPLETED:
        # The job was made after the saga gave up on it: cancel it too.
        return Decision(state, (c.CancelJob(order_id=state.order_id, reason="order cancelled"),))
    if state.step is not Step.CREATING_JOB:
        return _ignore(state)
    state = state.evolve(job_id=r.job_id)
    if state.money_total == 0:
        return _after_payment(state, "paid with credits", now, timing)
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
    waiting = _goto(
        state.evolve(payment_deadline=deadline), Step.CREATING_PAYMENT_SESSION, now, timing
    )
    return Decision(waiting, (command,))


def _on_job_rejected(state: SagaState, r: c.JobRejected, now: datetime, timing: Timing) -> Decision:
    if state.step is not Step.CREATING_JOB:
        return _ignore(state)
    return _compensate(state, f"job rejected: {r.reason}", now, timing)


def _on_session_created(
    state: SagaState, r: c.PaymentSessionCreated, now: datetime, timing: Timing
) -> Decision:
    if state.step in (Step.COMPENSATING, Step.DONE):
        # Made after the saga gave up: close it so nobody can pay into a cancelled order.
        return Decision(
            state.evolve(payment_session_id=r.session_id),
            (c.ExpirePaymentSession(order_id=state.order_id),),
        )
    if state.step is not Step.CREATING_PAYMENT_SESSION:
        return _ignore(state)
    waiting = state.evolve(
        status=OrderStatus.AWAITING_PAYMENT,
        payment_session_id=r.session_id,
        payment_url=r.url,
        payment_deadline=r.expires_at,
    )
    return Decision(
        _goto(waiting, Step.AWAITING_PAYMENT, now, timing),
        changes=((OrderStatus.AWAITING_PAYMENT, "payment session created"),),
    )


def _on_session_failed(
    state: SagaState, r: c.PaymentSessionFailed, now: datetime, timing: Timing
) -> Decision:
    if state.step is not Step.CREATING_PAYMENT_SESSION:
        return _ignore(state)
    return _compensate(state, f"payment session failed: {r.reason}", now, timing)


def _on_payment_succeeded(
    state: SagaState, r: c.PaymentSucceeded, now: datetime, timing: Timing
) -> Decision:
    paid = state.evolve(
        payment_session_id=r.session_id,
        payment_intent_id=r.payment_intent_id,
        amount_paid=r.amount,
        currency_paid=r.currency.upper(),
    )
    if state.step in (Step.COMPENSATING, Step.DONE):
        if state.status is not OrderStatus.CANCELLED and state.step is Step.DONE:
            return _ignore(state)
        if state.amount_paid:  # this payment is already known (a second copy)
            return _ignore(state)
        return _refund_late_payment(paid, now, timing)
    # The webhook's event may overtake the session-created reply on a busy queue.
    if state.step not in (Step.CREATING_PAYMENT_SESSION, Step.AWAITING_PAYMENT):
        return _ignore(state)
    mismatch = _payment_mismatch(state, r)
    if mismatch is not None:
        return _refund_mismatched_payment(paid, mismatch, now, timing)
    return _after_payment(paid, "payment succeeded", now, timing)


def _payment_mismatch(state: SagaState, r: c.PaymentSucceeded) -> str | None:
    """Why what Stripe took is not what the order costs; None when it is exactly that."""
    paid, expected = r.currency.upper(), state.currency.upper()
    if r.amount == state.money_total and paid == expected:
        return None
    return f"amount_mismatch: paid {r.amount} {paid}, expected {state.money_total} {expected}"


def _on_payment_pending(
    state: SagaState, r: c.PaymentPending, now: datetime, timing: Timing
) -> Decision:
    """Payments knows of no outcome yet. A payment that is *processing* (a bank debit) moves the
    order to `payment_processing` and is waited for `processing_window`; anything else (a
    session not closed yet) keeps the order waiting and payments is asked again later. Each
    new thing payments says is recorded on the order, once."""
    if state.step is not Step.AWAITING_PAYMENT:
        return _ignore(state)
    processing = state.status is OrderStatus.PAYMENT_PROCESSING
    if r.status == "processing" and not processing:
        why = (
            "the payment is processing (a bank debit can take up to 14 business days);"
            " waiting for it"
        )
        started = state.evolve(
            status=OrderStatus.PAYMENT_PROCESSING,
            deadline=now + timing.processing_window,
            attempts=0,
            payment_pending=r.status,
        )
        return Decision(started, changes=((OrderStatus.PAYMENT_PROCESSING, why),))
    if processing and state.deadline is not None and now < state.deadline:
        return _ignore(state)  # said again within its window: nothing new
    said = r.status
    why = f"payments says the payment is {r.status}; asking again later"
    if processing:
        said = "processing past its window"
        days = timing.processing_window.days
        why = f"{NEEDS_ATTENTION} the payment is still processing after {days} days; still asking"
    waiting = state.evolve(deadline=now + timing.pending_recheck, attempts=0, payment_pending=said)
    if said == state.payment_pending:
        return Decision(waiting)
    return Decision(waiting, changes=((state.status, why),))


def _on_payment_ended(
    state: SagaState, r: c.PaymentFailed | c.PaymentExpired, now: datetime, timing: Timing
) -> Decision:
    if state.step not in (Step.CREATING_PAYMENT_SESSION, Step.AWAITING_PAYMENT):
        return _ignore(state)
    why = r.reason if isinstance(r, c.PaymentFailed) else "payment session expired"
    # The session is over already: nothing to expire.
    ended = state.evolve(payment_session_id=None)
    return _compensate(ended, f"payment not made: {why}", now, timing)


def _on_credits_captured(state: SagaState, _r: Any, now: datetime, timing: Timing) -> Decision:
    if state.step is not Step.CAPTURING_CREDITS:
        return _ignore(state)
    captured = state.evolve(status=OrderStatus.PROVISIONING, credits_captured=True)
    return Decision(
        _goto(captured, Step.PROVISIONING, now, timing),
        (c.ProvisionOrder(order_id=state.order_id),),
        changes=((OrderStatus.PROVISIONING, "credits captured"),),
    )


def _on_order_provisioned(
    state: SagaState, r: c.OrderProvisioned | c.OrderProvisionedV2, now: datetime, timing: Timing
) -> Decision:
    # While fencing too: provisioning answers a cancel of a job it already ran with its results.
    if state.step not in (Step.PROVISIONING, Step.FENCING_JOB):
        return _ignore(state)
    results = units_of(state.lines, r)
    state = state.evolve(results=results)
    failed = {result.line_no: result.units_failed for result in results if result.units_failed}
    if failed:
        units = sum(result.units for result in results)
        why = f"{sum(failed.values())} of {units} units could not be provisioned"
        return _refund_failed(state, failed, why, now, timing)
    return _finish(state, OrderStatus.COMPLETED, "all items provisioned")


def units_of(
    lines: tuple[c.CheckoutLine, ...], r: c.OrderProvisioned | c.OrderProvisionedV2
) -> tuple[c.ItemResultV2, ...]:
    """Version 2 results as they are; a version 1 result counted in units: a failed line
    failed all of its quantity, any other none."""
    if isinstance(r, c.OrderProvisionedV2):
        return r.results
    quantity = {line.line_no: line.quantity for line in lines}
    return tuple(
        c.ItemResultV2(
            line_no=x.line_no,
            item_id=x.item_id,
            status=x.status,
            detail=x.detail,
            units=quantity.get(x.line_no, 1),
            units_failed=quantity.get(x.line_no, 1) if x.status == "failed" else 0,
        )
        for x in r.results
    )


def _on_provisioning_failed(
    state: SagaState, r: c.ProvisioningFailed, now: datetime, timing: Timing
) -> Decision:
    if state.step not in (Step.PROVISIONING, Step.FENCING_JOB):
        return _ignore(state)
    failed = tuple(line.line_no for line in state.lines)
    return _refund_failed(state, failed, f"provisioning failed: {r.reason}", now, timing)


def _on_job_cancelled(
    state: SagaState, r: c.JobCancelled, now: datetime, timing: Timing
) -> Decision:
    """While fencing, provisioning confirms nothing was run and nothing ever will be: refund it
    all. Otherwise one of the compensation's awaited replies."""
    if state.step is not Step.FENCING_JOB:
        return _on_awaited(state, r, now, timing)
    failed = tuple(line.line_no for line in state.lines)
    why = "provisioning did not answer; its job was cancelled before anything was delivered"
    return _refund_failed(state.evolve(results=()), failed, why, now, timing)


def _on_refund_failed(
    state: SagaState, r: c.RefundFailed, now: datetime, timing: Timing
) -> Decision:
    """The money refund will not reach the shopper. While refunding, it is no longer awaited and
    the order ends `refund_failed` once nothing else is; after the order ended (a refund that
    failed days after Stripe accepted it), the order moves to `refund_failed`."""
    if state.refund_failed is not None or r.refund_key != state.refund_key:
        return _ignore(state)  # a second copy, or about a refund this order did not ask for
    currency = state.currency_paid or state.currency
    why = f"refund of {r.amount} {currency} {r.status}: {r.reason}"
    failed = state.evolve(refund_failed=why)
    if state.step is Step.DONE:
        return Decision(
            failed.evolve(status=OrderStatus.REFUND_FAILED),
            changes=((OrderStatus.REFUND_FAILED, why),),
        )
    if state.step not in (Step.COMPENSATING, Step.REFUNDING):
        return _ignore(state)
    waiting = tuple(t for t in state.awaiting if t != c.PaymentRefunded.TYPE)
    if waiting:
        return Decision(failed.evolve(awaiting=waiting), changes=((state.status, why),))
    return _finish(failed.evolve(awaiting=()), OrderStatus.REFUND_FAILED, why)


# A dispute that ended with the money kept (an inquiry closed without a chargeback, too).
_DISPUTE_WON = frozenset({"won", "warning_closed"})


def _on_payment_disputed(
    state: SagaState, r: c.PaymentDisputed, now: datetime, timing: Timing
) -> Decision:
    """The bank disputes the payment. An ended order becomes `disputed` while it is open and
    when it is lost (the money taken back), and gets its status back when it is won; a running
    saga keeps going and only records it (its own end is still to come)."""
    why = f"payment disputed ({r.reason}): {r.status}, {r.amount} {r.currency.upper()}"
    disputed = state.evolve(dispute=r.status)
    if state.step is not Step.DONE:
        return Decision(disputed, changes=((state.status, why),))
    before = state.status_before_dispute or state.status
    if r.status in _DISPUTE_WON:
        settled = disputed.evolve(status=before, status_before_dispute=None)
        return Decision(settled, changes=((before, why),))
    opened = disputed.evolve(status=OrderStatus.DISPUTED, status_before_dispute=before)
    return Decision(opened, changes=((OrderStatus.DISPUTED, why),))


def _on_awaited(state: SagaState, r: Contract, now: datetime, timing: Timing) -> Decision:
    """A compensation or refund confirmed; once nothing is owed, the order reaches its end."""
    if state.step not in (Step.COMPENSATING, Step.REFUNDING) or r.TYPE not in state.awaiting:
        return _ignore(state)
    waiting = tuple(t for t in state.awaiting if t != r.TYPE)
    if waiting:
        return Decision(state.evolve(awaiting=waiting))
    done = state.evolve(awaiting=())
    if state.step is Step.COMPENSATING and state.refund_money == 0:
        return _cancel(done, state.cancel_reason or "compensated")
    if state.refund_failed is not None:
        return _finish(done, OrderStatus.REFUND_FAILED, state.refund_failed)
    final = state.after_refund or OrderStatus.REFUNDED
    currency = state.currency_paid or state.currency
    refunded = f"refunded {state.refund_money} {currency} and {state.refund_credits} credits"
    return _finish(done, final, refunded)


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
    c.PaymentPending: _on_payment_pending,
    c.CreditsCaptured: _on_credits_captured,
    c.OrderProvisioned: _on_order_provisioned,
    c.OrderProvisionedV2: _on_order_provisioned,
    c.ProvisioningFailed: _on_provisioning_failed,
    c.CreditsReleased: _on_awaited,
    c.JobCancelled: _on_job_cancelled,
    c.PaymentRefunded: _on_awaited,
    c.CreditsRefunded: _on_awaited,
    c.RefundFailed: _on_refund_failed,
    c.PaymentDisputed: _on_payment_disputed,
}

REPLY_TYPES: tuple[type[Contract], ...] = tuple(_REACTIONS)


# --- shared moves ----------------------------------------------------------------------------


def _ignore(state: SagaState) -> Decision:
    return Decision(state, ignored=True)


def _goto(state: SagaState, step: Step, now: datetime, timing: Timing) -> SagaState:
    if step is Step.AWAITING_PAYMENT and state.payment_deadline is not None:
        deadline = state.payment_deadline + timing.payment_grace
    elif step is Step.PROVISIONING:
        deadline = now + timing.provisioning_timeout
    else:
        deadline = now + timing.step_timeout
    return state.evolve(step=step, deadline=deadline, attempts=0)


def _reserve(state: SagaState) -> c.ReserveCredits:
    return c.ReserveCredits(
        order_id=state.order_id, user_id=state.user_id, credits=state.credits_total
    )


def _capture(state: SagaState) -> c.CaptureCredits:
    return c.CaptureCredits(
        order_id=state.order_id, user_id=state.user_id, credits=state.credits_total
    )


def _cancel_job(state: SagaState) -> c.CancelJob:
    return c.CancelJob(order_id=state.order_id, reason="provisioning did not answer")


def _create_job(state: SagaState) -> c.CreateJob:
    return c.CreateJob(order_id=state.order_id, user_id=state.user_id, lines=state.lines)


def _after_payment(state: SagaState, reason: str, now: datetime, timing: Timing) -> Decision:
    paid = state.evolve(status=OrderStatus.PAID)
    if state.credits_total > 0:
        return Decision(
            _goto(paid, Step.CAPTURING_CREDITS, now, timing),
            (_capture(state),),
            changes=((OrderStatus.PAID, reason),),
        )
    return Decision(
        _goto(paid.evolve(status=OrderStatus.PROVISIONING), Step.PROVISIONING, now, timing),
        (c.ProvisionOrder(order_id=state.order_id),),
        changes=((OrderStatus.PAID, reason), (OrderStatus.PROVISIONING, "provisioning started")),
    )


def _compensate(
    state: SagaState, reason: str, now: datetime, timing: Timing, *, uncertain: bool = False
) -> Decision:
    """Undo what is done, in reverse order: payment session, job, credits. Nothing was charged.

    `uncertain`: the current step's command may or may not have been applied (a timeout or the
    shopper cancelling while it is in flight), so undo it too; every undo is a no-op on nothing.
    """
    step = state.step
    send: list[Contract] = []
    awaiting: list[str] = []
    if state.payment_session_id is not None or (
        uncertain and step is Step.CREATING_PAYMENT_SESSION
    ):
        # Fire and forget: a payment that still gets through is refunded when it is reported.
        send.append(c.ExpirePaymentSession(order_id=state.order_id))
    if state.job_id is not None or (uncertain and step is Step.CREATING_JOB):
        send.append(c.CancelJob(order_id=state.order_id, reason=reason))
        awaiting.append(c.JobCancelled.TYPE)
    if state.credits_reserved or (uncertain and step is Step.RESERVING_CREDITS):
        send.append(c.ReleaseCredits(order_id=state.order_id, user_id=state.user_id))
        awaiting.append(c.CreditsReleased.TYPE)
    if not awaiting:
        cancelled = _cancel(state, reason)
        return Decision(cancelled.state, (*send, *cancelled.send), cancelled.changes)
    compensating = state.evolve(
        status=OrderStatus.COMPENSATING, awaiting=tuple(awaiting), cancel_reason=reason
    )
    return Decision(
        _goto(compensating, Step.COMPENSATING, now, timing),
        tuple(send),
        changes=((OrderStatus.COMPENSATING, reason),),
    )


def _refund_failed(
    state: SagaState,
    failed: Mapping[int, int] | tuple[int, ...],
    reason: str,
    now: datetime,
    timing: Timing,
    *,
    extra: tuple[Contract, ...] = (),
) -> Decision:
    """Refunds the share of the failed units (`failed`: units per line, or whole lines)."""
    share = share_of_failed(state.lines, failed, amount_paid=state.amount_paid)
    failed_units = sum(units for _, units in share.failed_units)
    delivered_some = failed_units < sum(line.quantity for line in state.lines)
    final = OrderStatus.PARTIALLY_COMPLETED if delivered_some else OrderStatus.REFUNDED
    if share.empty:
        finished = _finish(state, final, reason)
        return Decision(finished.state, (*extra, *finished.send), finished.changes)
    refunding = state.evolve(
        refund_money=share.money,
        refund_credits=share.credits,
        refund_key=share.key,
        refund_reason=reason,
        after_refund=final,
    )
    refunding = refunding.evolve(awaiting=_refund_replies(refunding))
    return Decision(
        _goto(refunding, Step.REFUNDING, now, timing),
        (*extra, *_refund_commands(refunding)),
        changes=((state.status, f"{reason}; refunding their share"),),
    )


def _refund_late_payment(state: SagaState, now: datetime, timing: Timing) -> Decision:
    """Money came in for an order being (or already) cancelled: it goes back, never lost."""
    reason = "payment arrived after the order was cancelled; refunding it"
    refunding = state.evolve(
        refund_money=state.amount_paid,
        refund_credits=0,
        refund_key="late-payment",
        refund_reason=reason,
        after_refund=OrderStatus.REFUNDED,
        awaiting=(*state.awaiting, c.PaymentRefunded.TYPE),
    )
    # A compensation still in progress keeps its step and also waits for the refund.
    step = Step.COMPENSATING if state.step is Step.COMPENSATING else Step.REFUNDING
    return Decision(
        _goto(refunding, step, now, timing),
        _refund_commands(refunding),
        changes=((state.status, reason),),
    )


def _refund_mismatched_payment(
    state: SagaState, reason: str, now: datetime, timing: Timing
) -> Decision:
    """Stripe took another sum (or currency) than the order costs: nothing is captured or
    provisioned; what was paid goes back in full, the job is cancelled, the credits released,
    and the order ends `refunded` (`cancelled` if nothing was taken) once all is confirmed."""
    refunding = state.evolve(
        status=OrderStatus.COMPENSATING,
        refund_money=state.amount_paid,
        refund_credits=0,
        refund_key="amount-mismatch",
        refund_reason=reason,
        after_refund=OrderStatus.REFUNDED,
        cancel_reason=reason,
    )
    send = list(_refund_commands(refunding))
    awaiting = list(_refund_replies(refunding))
    # A payment is only asked for once the job exists, so there is always one to cancel.
    send.append(c.CancelJob(order_id=state.order_id, reason=reason))
    awaiting.append(c.JobCancelled.TYPE)
    if state.credits_reserved:
        send.append(c.ReleaseCredits(order_id=state.order_id, user_id=state.user_id))
        awaiting.append(c.CreditsReleased.TYPE)
    return Decision(
        _goto(refunding.evolve(awaiting=tuple(awaiting)), Step.COMPENSATING, now, timing),
        tuple(send),
        changes=((OrderStatus.COMPENSATING, reason),),
    )


def _refund_replies(state: SagaState) -> tuple[str, ...]:
    replies = []
    if state.refund_money > 0:
        replies.append(c.PaymentRefunded.TYPE)
    if state.refund_credits > 0:
        replies.append(c.CreditsRefunded.TYPE)
    return tuple(replies)


def _refund_commands(state: SagaState) -> tuple[Contract, ...]:
    """The refunds decided, always with the same key *and* parameters: a re-send that differed
    (another reason in Stripe's metadata) would be refused by Stripe as an idempotency error."""
    key = state.refund_key or "refund"
    reason = state.refund_reason or "refund"
    commands: list[Contract] = []
    if state.refund_money > 0:
        commands.append(
            c.RefundPayment(
                order_id=state.order_id, refund_key=key, amount=state.refund_money, reason=reason
            )
        )
    if state.refund_credits > 0:
        commands.append(
            c.RefundCredits(
                order_id=state.order_id,
                user_id=state.user_id,
                refund_key=key,
                credits=state.refund_credits,
                reason=reason,
            )
        )
    return tuple(commands)


def _owed(state: SagaState) -> tuple[Contract, ...]:
    """The commands whose replies the saga still awaits, sent again after a deadline."""
    owed: list[Contract] = [m for m in _refund_commands(state) if _reply_of(m) in state.awaiting]
    if c.JobCancelled.TYPE in state.awaiting:
        owed.append(c.CancelJob(order_id=state.order_id, reason=state.cancel_reason or "cancelled"))
    if c.CreditsReleased.TYPE in state.awaiting:
        owed.append(c.ReleaseCredits(order_id=state.order_id, user_id=state.user_id))
    return tuple(owed)


def _reply_of(command: Contract) -> str:
    return (
        c.PaymentRefunded.TYPE if isinstance(command, c.RefundPayment) else c.CreditsRefunded.TYPE
    )


def _finish(state: SagaState, status: OrderStatus, reason: str) -> Decision:
    done = state.evolve(step=Step.DONE, status=status, deadline=None)
    # The cart hears how the order ended for the shopper's goods (`outcome_of`, also used to
    # say it again when the cart asks).
    outcome = outcome_of(done, reason=reason)
    assert outcome is not None, "a saga that is done has an outcome"
    return Decision(done, (outcome,), changes=((status, reason),))


def _cancel(state: SagaState, reason: str) -> Decision:
    cancelled = state.evolve(cancel_reason=reason)
    return _finish(cancelled, OrderStatus.CANCELLED, reason)
