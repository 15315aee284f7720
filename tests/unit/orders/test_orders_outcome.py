"""The outcome an ended saga announces to the cart, derived from its state alone: the answer
to an `InquireOrder` is exactly what the saga sent when it ended, and a saga still running
answers nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.orders.saga.machine import cancel, react, start
from services.orders.saga.outcome import outcome_of
from services.orders.saga.state import Decision, OrderStatus, SagaState, Step, Timing
from shared.messages import Contract
from shared.messages import contracts as c
from tests.support.orders import checkout_of, package_line

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TIMING = Timing(payment_window=timedelta(hours=1))
ORDER = "order-1"


def started(*lines: c.CheckoutLine) -> SagaState:
    return start(checkout_of(ORDER, *lines), now=NOW, timing=TIMING).state


def play(state: SagaState, *replies: Contract) -> Decision:
    """The saga's decision on the last of `replies`, each applied to the state before."""
    decision = Decision(state)
    for reply in replies:
        decision = react(decision.state, reply, now=NOW, timing=TIMING)
    return decision


def provisioned(*failed_lines: int, lines: int = 1) -> c.OrderProvisionedV2:
    return c.OrderProvisionedV2(
        order_id=ORDER,
        job_id="job-1",
        results=tuple(
            c.ItemResultV2(
                line_no=n,
                item_id=f"pkg-{n}",
                status="failed" if n in failed_lines else "delivered",
                units=1,
                units_failed=int(n in failed_lines),
            )
            for n in range(1, lines + 1)
        ),
    )


RESERVED = c.CreditsReserved(order_id=ORDER, credits=400)
JOB = c.JobCreated(order_id=ORDER, job_id="job-1")
CAPTURED = c.CreditsCaptured(order_id=ORDER, credits=400)


def the_announcement(decision: Decision) -> Contract:
    """What the saga sent as it ended: its last message, an order outcome."""
    assert decision.state.step is Step.DONE, decision.state.step
    outcome = decision.send[-1]
    assert isinstance(outcome, c.OrderCompleted | c.OrderCancelled)
    return outcome


def reason_of(decision: Decision) -> str:
    """The reason the ending decision gave the order (what its status_reason column holds)."""
    return decision.changes[-1][1]


def test_a_completed_order_answers_with_the_completion_it_announced() -> None:
    ended = play(started(package_line(1)), RESERVED, JOB, CAPTURED, provisioned())

    outcome = outcome_of(ended.state, reason=reason_of(ended))

    assert outcome == c.OrderCompleted(order_id=ORDER, cart_id="cart-1", status="completed")
    assert outcome == the_announcement(ended)


def test_a_partially_completed_order_answers_with_that_status() -> None:
    state = started(package_line(1), package_line(2))
    refunding = play(
        state,
        c.CreditsReserved(order_id=ORDER, credits=800),
        JOB,
        c.CreditsCaptured(order_id=ORDER, credits=800),
        provisioned(2, lines=2),
    )
    key = refunding.state.refund_key
    assert key is not None
    ended = play(refunding.state, c.CreditsRefunded(order_id=ORDER, refund_key=key, credits=400))

    assert ended.state.status is OrderStatus.PARTIALLY_COMPLETED
    assert outcome_of(ended.state, reason=reason_of(ended)) == the_announcement(ended)
    assert outcome_of(ended.state, reason="any") == c.OrderCompleted(
        order_id=ORDER, cart_id="cart-1", status="partially_completed"
    )


def test_a_cancelled_order_answers_with_the_cancellation_and_its_reason() -> None:
    ended = play(
        started(package_line(1)),
        c.CreditsRejected(order_id=ORDER, reason="insufficient_credits", available=0),
    )

    outcome = outcome_of(ended.state, reason=reason_of(ended))

    assert isinstance(outcome, c.OrderCancelled)
    assert outcome == the_announcement(ended)
    assert outcome.reason == reason_of(ended)


def test_a_refunded_order_answers_with_a_cancellation_carrying_the_refund_reason() -> None:
    refunding = play(
        started(package_line(1)),
        RESERVED,
        JOB,
        CAPTURED,
        c.ProvisioningFailed(order_id=ORDER, reason="panel down"),
    )
    key = refunding.state.refund_key
    assert key is not None
    ended = play(refunding.state, c.CreditsRefunded(order_id=ORDER, refund_key=key, credits=400))

    assert ended.state.status is OrderStatus.REFUNDED
    # The refund's reason is the order's status reason, not something the state remembers:
    # which is why the caller hands it in.
    assert ended.state.cancel_reason is None
    assert outcome_of(ended.state, reason=reason_of(ended)) == the_announcement(ended)


@pytest.mark.parametrize(
    "replies",
    [
        pytest.param((), id="pending"),
        pytest.param((RESERVED,), id="creating_job"),
        pytest.param((RESERVED, JOB, CAPTURED), id="provisioning"),
    ],
)
def test_a_running_order_has_no_outcome_yet(replies: tuple[Contract, ...]) -> None:
    running = play(started(package_line(1)), *replies)

    assert outcome_of(running.state, reason="whatever the order row says") is None


def test_a_compensating_order_has_no_outcome_yet() -> None:
    state = play(started(package_line(1)), RESERVED).state
    compensating = cancel(state, reason="cancelled by the shopper", now=NOW, timing=TIMING)
    assert compensating is not None and compensating.state.status is OrderStatus.COMPENSATING

    assert outcome_of(compensating.state, reason="cancelled by the shopper") is None


def test_a_cancelled_order_refunding_a_late_payment_waits_for_its_refunded_outcome() -> None:
    # Cancelled already (its OrderCancelled sent), then money arrived: the order is `cancelled`
    # but the saga runs again until the refund is confirmed, and then announces `refunded`.
    cancelled = play(
        started(package_line(1, paid_with="money")),
        JOB,
        c.PaymentSessionCreated(order_id=ORDER, session_id="cs_1", url="u", expires_at=NOW),
        c.PaymentExpired(order_id=ORDER, session_id="cs_1"),
        c.JobCancelled(order_id=ORDER),
    )
    assert outcome_of(cancelled.state, reason=reason_of(cancelled)) == the_announcement(cancelled)
    paid = c.PaymentSucceeded(
        order_id=ORDER, session_id="cs_1", payment_intent_id="pi", amount=5000, currency="EUR"
    )
    refunding = play(cancelled.state, paid)
    assert refunding.state.status is OrderStatus.CANCELLED
    assert refunding.state.step is Step.REFUNDING

    assert outcome_of(refunding.state, reason=reason_of(refunding)) is None

    refunded = play(
        refunding.state,
        c.PaymentRefunded(order_id=ORDER, refund_key="late-payment", amount=5000),
    )
    assert outcome_of(refunded.state, reason=reason_of(refunded)) == the_announcement(refunded)


def provisioning_paid_by_card(lines: int) -> SagaState:
    """A card order of `lines` packages, paid, its provisioning under way."""
    money = [package_line(n, paid_with="money") for n in range(1, lines + 1)]
    paid = c.PaymentSucceeded(
        order_id=ORDER,
        session_id="cs_1",
        payment_intent_id="pi",
        amount=sum(line.money for line in money),
        currency="EUR",
    )
    provisioning = play(started(*money), JOB, paid)
    assert provisioning.state.step is Step.PROVISIONING, provisioning.state.step
    return provisioning.state


def refund_failed(state: SagaState, status: str = "rejected") -> c.RefundFailed:
    return c.RefundFailed(
        order_id=ORDER,
        refund_key=state.refund_key or "",
        amount=state.refund_money,
        status=status,  # type: ignore[arg-type]
        reason="charge_disputed",
    )


@pytest.mark.parametrize(
    ("lines", "failed", "announced"),
    [
        pytest.param(2, (2,), c.OrderCompleted, id="some delivered: partially completed"),
        pytest.param(1, (1,), c.OrderCancelled, id="nothing delivered: cancelled"),
    ],
)
def test_a_failed_refund_answers_as_the_refund_would_have_ended_the_order(
    lines: int, failed: tuple[int, ...], announced: type[Contract]
) -> None:
    refunding = play(provisioning_paid_by_card(lines), provisioned(*failed, lines=lines))
    assert refunding.state.step is Step.REFUNDING
    ended = play(refunding.state, refund_failed(refunding.state))
    assert ended.state.status is OrderStatus.REFUND_FAILED

    outcome = outcome_of(ended.state, reason=reason_of(ended))

    assert isinstance(outcome, announced)
    assert outcome == the_announcement(ended)


def test_a_refund_failing_after_the_order_ended_keeps_its_outcome() -> None:
    # Stripe accepted the refund, the order ended `refunded` and said so; days later the refund
    # failed: the order is `refund_failed`, nothing new is said, and an answer stays a cancellation.
    refunding = play(provisioning_paid_by_card(1), provisioned(1))
    key = refunding.state.refund_key or ""
    ended = play(refunding.state, c.PaymentRefunded(order_id=ORDER, refund_key=key, amount=5000))
    assert isinstance(the_announcement(ended), c.OrderCancelled)
    failed_later = play(ended.state, refund_failed(refunding.state, "failed"))
    assert failed_later.state.status is OrderStatus.REFUND_FAILED and failed_later.send == ()

    outcome = outcome_of(failed_later.state, reason=reason_of(failed_later))

    assert outcome == c.OrderCancelled(
        order_id=ORDER, cart_id="cart-1", reason=reason_of(failed_later)
    )


def test_a_disputed_order_answers_with_how_it_ended_before_the_dispute() -> None:
    ended = play(started(package_line(1)), RESERVED, JOB, CAPTURED, provisioned())
    dispute = c.PaymentDisputed(
        order_id=ORDER,
        dispute_id="dp_1",
        status="needs_response",
        amount=1,
        currency="eur",
        reason="fraudulent",
    )
    disputed = react(ended.state, dispute, now=NOW, timing=TIMING)
    assert disputed.state.status is OrderStatus.DISPUTED

    outcome = outcome_of(disputed.state, reason="payment disputed")

    assert outcome == the_announcement(ended)
