"""The checkout saga, step by step, with no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.orders.saga import OrderStatus, SagaState, Step, Timing, react, start
from shared.messages import Contract
from shared.messages import contracts as c

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TIMING = Timing(payment_window=timedelta(hours=1))


def line(
    line_no: int, *, paid_with: str, price: int = 1500, credits: int | None = 120
) -> c.CheckoutLine:
    return c.CheckoutLine(
        line_no=line_no,
        item_id=f"item-{line_no}",
        kind="server_plan",
        name=f"Item {line_no}",
        quantity=2,
        unit_price=price,
        unit_credits=credits,
        paid_with=paid_with,  # type: ignore[arg-type]
    )


def checkout(*lines: c.CheckoutLine) -> c.CheckoutRequested:
    return c.CheckoutRequested(
        checkout_id="order-1",
        cart_id="cart-1",
        user_id="alice",
        currency="EUR",
        lines=lines,
        money_total=sum(x.money for x in lines),
        credits_total=sum(x.credits for x in lines),
    )


def run(state: SagaState, *replies: Contract) -> tuple[SagaState, list[Contract]]:
    sent: list[Contract] = []
    for reply in replies:
        decision = react(state, reply, now=NOW, timing=TIMING)
        state = decision.state
        sent.extend(decision.send)
    return state, sent


def types(messages: list[Contract] | tuple[Contract, ...]) -> list[str]:
    return [type(m).__name__ for m in messages]


def test_credit_only_checkout_reserves_creates_job_captures_provisions_and_completes() -> None:
    first = start(checkout(line(1, paid_with="credits")))
    assert types(first.send) == ["ReserveCredits"]
    assert first.send[0] == c.ReserveCredits(order_id="order-1", user_id="alice", credits=240)
    assert first.state.status is OrderStatus.PENDING

    state, sent = run(
        first.state,
        c.CreditsReserved(order_id="order-1", credits=240),
        c.JobCreated(order_id="order-1", job_id="job-1"),
        c.CreditsCaptured(order_id="order-1", credits=240),
        c.OrderProvisioned(
            order_id="order-1",
            job_id="job-1",
            results=(c.ItemResult(line_no=1, item_id="item-1", status="delivered"),),
        ),
    )
    assert types(sent) == ["CreateJob", "CaptureCredits", "ProvisionOrder", "OrderCompleted"]
    assert state.status is OrderStatus.COMPLETED
    assert state.step is Step.DONE
    assert state.job_id == "job-1"


def test_card_checkout_skips_credits_and_waits_for_payment() -> None:
    first = start(checkout(line(1, paid_with="money", credits=None)))
    assert types(first.send) == ["CreateJob"]  # nothing to reserve

    state, sent = run(first.state, c.JobCreated(order_id="order-1", job_id="job-1"))
    assert types(sent) == ["CreatePaymentSession"]
    session = sent[0]
    assert isinstance(session, c.CreatePaymentSession)
    assert session.amount_total == 3000
    assert session.expires_at == NOW + timedelta(hours=1)

    state, sent = run(
        state,
        c.PaymentSessionCreated(
            order_id="order-1", session_id="cs_1", url="http://pay/cs_1", expires_at=NOW
        ),
    )
    assert state.status is OrderStatus.AWAITING_PAYMENT
    assert state.payment_url == "http://pay/cs_1"
    assert sent == []

    state, sent = run(
        state,
        c.PaymentSucceeded(
            order_id="order-1",
            session_id="cs_1",
            payment_intent_id="pi_1",
            amount=3000,
            currency="EUR",
        ),
    )
    assert types(sent) == ["ProvisionOrder"]
    assert state.status is OrderStatus.PROVISIONING
    assert state.amount_paid == 3000


def test_mixed_checkout_pays_only_money_lines_by_card_then_captures_credits() -> None:
    first = start(checkout(line(1, paid_with="credits"), line(2, paid_with="money", credits=None)))
    state, sent = run(
        first.state,
        c.CreditsReserved(order_id="order-1", credits=240),
        c.JobCreated(order_id="order-1", job_id="job-1"),
    )
    session = sent[-1]
    assert isinstance(session, c.CreatePaymentSession)
    assert [(p.name, p.quantity, p.unit_amount) for p in session.lines] == [("Item 2", 2, 1500)]
    state, sent = run(
        state,
        c.PaymentSucceeded(
            order_id="order-1",
            session_id="cs_1",
            payment_intent_id="pi_1",
            amount=3000,
            currency="EUR",
        ),
    )
    assert types(sent) == ["CaptureCredits"]
    assert state.status is OrderStatus.PAID


def test_insufficient_credits_cancels_without_touching_anything_else() -> None:
    first = start(checkout(line(1, paid_with="credits")))
    state, sent = run(
        first.state,
        c.CreditsRejected(order_id="order-1", reason="insufficient_credits", available=5),
    )
    assert types(sent) == ["OrderCancelled"]
    assert state.status is OrderStatus.CANCELLED
    assert state.cancel_reason is not None and "insufficient_credits" in state.cancel_reason


def test_job_rejected_releases_reserved_credits_before_cancelling() -> None:
    first = start(checkout(line(1, paid_with="credits")))
    state, sent = run(
        first.state,
        c.CreditsReserved(order_id="order-1", credits=240),
        c.JobRejected(order_id="order-1", reason="recipient unknown"),
    )
    assert types(sent) == ["CreateJob", "ReleaseCredits"]
    assert state.status is OrderStatus.COMPENSATING
    state, sent = run(state, c.CreditsReleased(order_id="order-1", credits=240))
    assert types(sent) == ["OrderCancelled"]
    assert state.status is OrderStatus.CANCELLED


def test_expired_payment_cancels_job_and_releases_credits_then_cancels() -> None:
    first = start(checkout(line(1, paid_with="credits"), line(2, paid_with="money", credits=None)))
    state, _ = run(
        first.state,
        c.CreditsReserved(order_id="order-1", credits=240),
        c.JobCreated(order_id="order-1", job_id="job-1"),
        c.PaymentSessionCreated(order_id="order-1", session_id="cs_1", url="u", expires_at=NOW),
    )
    state, sent = run(state, c.PaymentExpired(order_id="order-1", session_id="cs_1"))
    assert types(sent) == ["CancelJob", "ReleaseCredits"]
    state, sent = run(state, c.JobCancelled(order_id="order-1"))
    assert sent == [] and state.status is OrderStatus.COMPENSATING
    state, sent = run(state, c.CreditsReleased(order_id="order-1", credits=240))
    assert types(sent) == ["OrderCancelled"]
    assert state.status is OrderStatus.CANCELLED


@pytest.mark.parametrize(
    "late_reply",
    [
        c.CreditsReserved(order_id="order-1", credits=240),
        c.JobCreated(order_id="order-1", job_id="job-2"),
        c.CreditsCaptured(order_id="order-1", credits=240),
    ],
)
def test_a_repeated_or_out_of_step_reply_changes_nothing(late_reply: Contract) -> None:
    first = start(checkout(line(1, paid_with="credits")))
    state, _ = run(
        first.state,
        c.CreditsReserved(order_id="order-1", credits=240),
        c.JobCreated(order_id="order-1", job_id="job-1"),
        c.CreditsCaptured(order_id="order-1", credits=240),
    )
    decision = react(state, late_reply, now=NOW, timing=TIMING)
    assert decision.ignored
    assert decision.state == state
    assert decision.send == ()


def test_partial_provisioning_is_reported_as_partially_completed() -> None:
    first = start(checkout(line(1, paid_with="credits"), line(2, paid_with="credits")))
    state, sent = run(
        first.state,
        c.CreditsReserved(order_id="order-1", credits=480),
        c.JobCreated(order_id="order-1", job_id="job-1"),
        c.CreditsCaptured(order_id="order-1", credits=480),
        c.OrderProvisioned(
            order_id="order-1",
            job_id="job-1",
            results=(
                c.ItemResult(line_no=1, item_id="item-1", status="delivered"),
                c.ItemResult(line_no=2, item_id="item-2", status="failed", detail="panel said no"),
            ),
        ),
    )
    assert state.status is OrderStatus.PARTIALLY_COMPLETED
    completed = sent[-1]
    assert isinstance(completed, c.OrderCompleted) and completed.status == "partially_completed"


def test_every_status_the_order_passes_through_is_recorded_in_order() -> None:
    first = start(checkout(line(1, paid_with="money", credits=None)))
    statuses = [status for status, _ in first.changes]
    state = first.state
    for reply in (
        c.JobCreated(order_id="order-1", job_id="job-1"),
        c.PaymentSessionCreated(order_id="order-1", session_id="cs_1", url="u", expires_at=NOW),
        c.PaymentSucceeded(
            order_id="order-1",
            session_id="cs_1",
            payment_intent_id="pi",
            amount=3000,
            currency="EUR",
        ),
        c.OrderProvisioned(
            order_id="order-1",
            job_id="job-1",
            results=(c.ItemResult(line_no=1, item_id="item-1", status="delivered"),),
        ),
    ):
        decision = react(state, reply, now=NOW, timing=TIMING)
        statuses.extend(status for status, _ in decision.changes)
        state = decision.state
    assert statuses == ["pending", "awaiting_payment", "paid", "provisioning", "completed"]
    assert state.status == statuses[-1]
