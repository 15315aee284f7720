"""The checkout saga, step by step, with no I/O."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.orders.saga.machine import (
    cancel,
    on_deadline,
    react,
    record_refund_elsewhere,
    retry_refund,
    start,
)
from services.orders.saga.state import OrderStatus, SagaState, Step, Timing
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


def paid(amount: int, currency: str = "eur") -> c.PaymentSucceeded:
    return c.PaymentSucceeded(
        order_id="order-1",
        session_id="cs_1",
        payment_intent_id="pi_1",
        amount=amount,
        currency=currency,
    )


def test_credit_only_checkout_reserves_creates_job_captures_provisions_and_completes() -> None:
    first = start(checkout(line(1, paid_with="credits")), now=NOW, timing=TIMING)
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
    first = start(checkout(line(1, paid_with="money", credits=None)), now=NOW, timing=TIMING)
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
        paid(3000, "EUR"),
    )
    assert types(sent) == ["ProvisionOrder"]
    assert state.status is OrderStatus.PROVISIONING
    assert state.amount_paid == 3000


def test_mixed_checkout_pays_only_money_lines_by_card_then_captures_credits() -> None:
    first = start(
        checkout(line(1, paid_with="credits"), line(2, paid_with="money", credits=None)),
        now=NOW,
        timing=TIMING,
    )
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
        paid(3000, "EUR"),
    )
    assert types(sent) == ["CaptureCredits"]
    assert state.status is OrderStatus.PAID


def test_insufficient_credits_cancels_without_touching_anything_else() -> None:
    first = start(checkout(line(1, paid_with="credits")), now=NOW, timing=TIMING)
    state, sent = run(
        first.state,
        c.CreditsRejected(order_id="order-1", reason="insufficient_credits", available=5),
    )
    assert types(sent) == ["OrderCancelled"]
    assert state.status is OrderStatus.CANCELLED
    assert state.cancel_reason is not None and "insufficient_credits" in state.cancel_reason


def test_job_rejected_releases_reserved_credits_before_cancelling() -> None:
    first = start(checkout(line(1, paid_with="credits")), now=NOW, timing=TIMING)
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


def awaiting_payment_order() -> SagaState:
    first = start(
        checkout(line(1, paid_with="credits"), line(2, paid_with="money", credits=None)),
        now=NOW,
        timing=TIMING,
    )
    state, _ = run(
        first.state,
        c.CreditsReserved(order_id="order-1", credits=240),
        c.JobCreated(order_id="order-1", job_id="job-1"),
        c.PaymentSessionCreated(order_id="order-1", session_id="cs_1", url="u", expires_at=NOW),
    )
    assert state.step is Step.AWAITING_PAYMENT
    return state


def test_expired_payment_cancels_job_and_releases_credits_then_cancels() -> None:
    state, sent = run(
        awaiting_payment_order(), c.PaymentExpired(order_id="order-1", session_id="cs_1")
    )
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
    first = start(checkout(line(1, paid_with="credits")), now=NOW, timing=TIMING)
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


def test_partial_provisioning_refunds_exactly_the_failed_lines_then_is_partially_completed() -> (
    None
):
    first = start(
        checkout(
            line(1, paid_with="credits"),
            line(2, paid_with="credits"),
            line(3, paid_with="money", credits=None),
        ),
        now=NOW,
        timing=TIMING,
    )
    state, sent = run(
        first.state,
        c.CreditsReserved(order_id="order-1", credits=480),
        c.JobCreated(order_id="order-1", job_id="job-1"),
        c.PaymentSessionCreated(order_id="order-1", session_id="cs_1", url="u", expires_at=NOW),
        paid(3000, "EUR"),
        c.CreditsCaptured(order_id="order-1", credits=480),
        c.OrderProvisioned(
            order_id="order-1",
            job_id="job-1",
            results=(
                c.ItemResult(line_no=1, item_id="item-1", status="delivered"),
                c.ItemResult(line_no=2, item_id="item-2", status="failed", detail="panel said no"),
                c.ItemResult(line_no=3, item_id="item-3", status="failed", detail="panel said no"),
            ),
        ),
    )
    assert state.step is Step.REFUNDING
    refunds = [m for m in sent if isinstance(m, c.RefundPayment | c.RefundCredits)]
    assert refunds == [
        c.RefundPayment(
            order_id="order-1", refund_key="failed-lines-2-3", amount=3000, reason=refunds[0].reason
        ),
        c.RefundCredits(
            order_id="order-1",
            user_id="alice",
            refund_key="failed-lines-2-3",
            credits=240,
            reason=refunds[1].reason,
        ),
    ]
    state, sent = run(
        state, c.PaymentRefunded(order_id="order-1", refund_key="failed-lines-2-3", amount=3000)
    )
    assert state.step is Step.REFUNDING and sent == []
    state, sent = run(
        state, c.CreditsRefunded(order_id="order-1", refund_key="failed-lines-2-3", credits=240)
    )
    assert state.status is OrderStatus.PARTIALLY_COMPLETED
    completed = sent[-1]
    assert isinstance(completed, c.OrderCompleted) and completed.status == "partially_completed"


def test_when_every_item_fails_everything_is_refunded_and_the_order_is_refunded() -> None:
    first = start(checkout(line(1, paid_with="money", credits=None)), now=NOW, timing=TIMING)
    state, sent = run(
        first.state,
        c.JobCreated(order_id="order-1", job_id="job-1"),
        paid(3000, "EUR"),
        c.ProvisioningFailed(order_id="order-1", reason="job_cancelled"),
    )
    assert next(m for m in sent if isinstance(m, c.RefundPayment)).amount == 3000
    state, sent = run(
        state, c.PaymentRefunded(order_id="order-1", refund_key=state.refund_key or "", amount=3000)
    )
    assert state.status is OrderStatus.REFUNDED
    assert types(sent) == ["OrderCancelled"]


def test_every_status_the_order_passes_through_is_recorded_in_order() -> None:
    first = start(checkout(line(1, paid_with="money", credits=None)), now=NOW, timing=TIMING)
    statuses = [status for status, _ in first.changes]
    state = first.state
    for reply in (
        c.JobCreated(order_id="order-1", job_id="job-1"),
        c.PaymentSessionCreated(order_id="order-1", session_id="cs_1", url="u", expires_at=NOW),
        paid(3000, "EUR"),
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


def test_a_step_that_gets_no_reply_is_compensated_at_its_deadline_including_the_uncertain_step() -> (
    None
):
    first = start(checkout(line(1, paid_with="credits")), now=NOW, timing=TIMING)
    state, _ = run(first.state, c.CreditsReserved(order_id="order-1", credits=240))
    assert state.step is Step.CREATING_JOB and state.deadline == NOW + TIMING.step_timeout
    early = on_deadline(state, now=NOW + TIMING.step_timeout - timedelta(seconds=1), timing=TIMING)
    assert early.ignored
    late = on_deadline(state, now=NOW + TIMING.step_timeout, timing=TIMING)
    # The job may exist (CreateJob in flight), so it is cancelled too; credits are released.
    assert types(late.send) == ["CancelJob", "ReleaseCredits"]
    assert late.state.status is OrderStatus.COMPENSATING
    state, sent = run(
        late.state,
        c.JobCancelled(order_id="order-1"),
        c.CreditsReleased(order_id="order-1", credits=240),
    )
    assert state.status is OrderStatus.CANCELLED and types(sent) == ["OrderCancelled"]


def test_capture_is_asked_again_at_its_deadline_never_given_up() -> None:
    first = start(checkout(line(1, paid_with="credits")), now=NOW, timing=TIMING)
    state, _ = run(
        first.state,
        c.CreditsReserved(order_id="order-1", credits=240),
        c.JobCreated(order_id="order-1", job_id="j"),
    )
    assert state.step is Step.CAPTURING_CREDITS
    for attempt in range(1, 6):
        decision = on_deadline(state, now=state.deadline or NOW, timing=TIMING)
        assert types(decision.send) == ["CaptureCredits"]
        state = decision.state
        assert state.attempts == attempt and state.step is Step.CAPTURING_CREDITS


def test_shopper_cancel_while_awaiting_payment_expires_the_session_and_undoes_everything() -> None:
    first = start(
        checkout(line(1, paid_with="credits"), line(2, paid_with="money", credits=None)),
        now=NOW,
        timing=TIMING,
    )
    state, _ = run(
        first.state,
        c.CreditsReserved(order_id="order-1", credits=240),
        c.JobCreated(order_id="order-1", job_id="job-1"),
        c.PaymentSessionCreated(order_id="order-1", session_id="cs_1", url="u", expires_at=NOW),
    )
    decision = cancel(state, reason="cancelled by the shopper", now=NOW, timing=TIMING)
    assert decision is not None
    assert types(decision.send) == ["ExpirePaymentSession", "CancelJob", "ReleaseCredits"]
    state, _ = run(
        decision.state,
        c.JobCancelled(order_id="order-1"),
        c.CreditsReleased(order_id="order-1", credits=0),
    )
    assert state.status is OrderStatus.CANCELLED


def test_cancel_after_payment_is_refused() -> None:
    first = start(checkout(line(1, paid_with="money", credits=None)), now=NOW, timing=TIMING)
    state, _ = run(
        first.state,
        c.JobCreated(order_id="order-1", job_id="job-1"),
        paid(3000, "EUR"),
    )
    assert cancel(state, reason="x", now=NOW, timing=TIMING) is None


def test_a_payment_that_arrives_after_cancellation_is_refunded_never_lost() -> None:
    first = start(checkout(line(1, paid_with="money", credits=None)), now=NOW, timing=TIMING)
    state, _ = run(
        first.state,
        c.JobCreated(order_id="order-1", job_id="job-1"),
        c.PaymentSessionCreated(order_id="order-1", session_id="cs_1", url="u", expires_at=NOW),
        c.PaymentExpired(order_id="order-1", session_id="cs_1"),
        c.JobCancelled(order_id="order-1"),
    )
    assert state.status is OrderStatus.CANCELLED
    late = paid(3000, "EUR")
    state, sent = run(state, late)
    assert sent == [
        c.RefundPayment(
            order_id="order-1", refund_key="late-payment", amount=3000, reason=sent[0].reason
        )
    ]  # type: ignore[attr-defined]
    _, resent = run(state, late)  # the same payment reported twice is refunded once
    assert resent == []
    state, sent = run(
        state, c.PaymentRefunded(order_id="order-1", refund_key="late-payment", amount=3000)
    )
    assert state.status is OrderStatus.REFUNDED


def test_a_server_plan_with_one_of_three_servers_failed_refunds_exactly_one_server() -> None:
    plan = line(1, paid_with="money", price=1500, credits=None).model_copy(update={"quantity": 3})
    first = start(checkout(plan), now=NOW, timing=TIMING)
    state, sent = run(
        first.state,
        c.JobCreated(order_id="order-1", job_id="job-1"),
        paid(4500, "EUR"),
        c.OrderProvisionedV2(
            order_id="order-1",
            job_id="job-1",
            results=(
                c.ItemResultV2(
                    line_no=1,
                    item_id="item-1",
                    status="partially_delivered",
                    detail="2 of 3 servers active",
                    units=3,
                    units_failed=1,
                ),
            ),
        ),
    )
    [refund] = [m for m in sent if isinstance(m, c.RefundPayment)]
    assert (refund.amount, refund.refund_key) == (1500, "failed-lines-1x1")
    assert state.after_refund is OrderStatus.PARTIALLY_COMPLETED
    state, sent = run(
        state, c.PaymentRefunded(order_id="order-1", refund_key="failed-lines-1x1", amount=1500)
    )
    assert state.status is OrderStatus.PARTIALLY_COMPLETED
    assert types(sent) == ["OrderCompleted"]


def test_a_saga_row_stored_with_version_1_results_still_loads() -> None:
    state = start(checkout(line(1, paid_with="money", credits=None)), now=NOW, timing=TIMING).state
    stored = state.model_dump(mode="json")
    stored["results"] = [{"line_no": 1, "item_id": "item-1", "status": "failed", "detail": "x"}]

    loaded = SagaState.model_validate_json(json.dumps(stored))

    assert [(r.status, r.units, r.units_failed) for r in loaded.results] == [("failed", 1, 1)]


def test_a_payment_for_less_than_the_order_never_provisions_and_is_refunded_with_its_reason() -> (
    None
):
    first = start(
        checkout(line(1, paid_with="credits"), line(2, paid_with="money", credits=None)),
        now=NOW,
        timing=TIMING,
    )
    state, _ = run(
        first.state,
        c.CreditsReserved(order_id="order-1", credits=240),
        c.JobCreated(order_id="order-1", job_id="job-1"),
        c.PaymentSessionCreated(order_id="order-1", session_id="cs_1", url="u", expires_at=NOW),
    )
    decision = react(state, paid(1), now=NOW, timing=TIMING)

    # Nothing is captured or provisioned: what was paid goes back, the job and credits are undone.
    assert types(decision.send) == ["RefundPayment", "CancelJob", "ReleaseCredits"]
    refund = decision.send[0]
    assert isinstance(refund, c.RefundPayment)
    assert (refund.amount, refund.refund_key) == (1, "amount-mismatch")
    reason = "amount_mismatch: paid 1 EUR, expected 3000 EUR"
    assert decision.changes == ((OrderStatus.COMPENSATING, reason),)
    assert decision.state.status is OrderStatus.COMPENSATING

    state, sent = run(
        decision.state,
        c.JobCancelled(order_id="order-1"),
        paid(1),  # Stripe's retry of the same event: refunded once
        c.CreditsReleased(order_id="order-1", credits=240),
    )
    assert sent == []
    state, sent = run(
        state, c.PaymentRefunded(order_id="order-1", refund_key="amount-mismatch", amount=1)
    )
    assert types(sent) == ["OrderCancelled"]
    assert state.status is OrderStatus.REFUNDED
    assert state.amount_paid == 1


def test_a_payment_of_the_right_amount_in_another_currency_is_refunded_too() -> None:
    first = start(checkout(line(1, paid_with="money", credits=None)), now=NOW, timing=TIMING)
    state, _ = run(first.state, c.JobCreated(order_id="order-1", job_id="job-1"))
    decision = react(state, paid(3000, "usd"), now=NOW, timing=TIMING)

    assert types(decision.send) == ["RefundPayment", "CancelJob"]
    assert decision.changes == (
        (OrderStatus.COMPENSATING, "amount_mismatch: paid 3000 USD, expected 3000 EUR"),
    )
    state, sent = run(
        decision.state,
        c.JobCancelled(order_id="order-1"),
        c.PaymentRefunded(order_id="order-1", refund_key="amount-mismatch", amount=3000),
    )
    assert state.status is OrderStatus.REFUNDED
    assert types(sent) == ["OrderCancelled"]


def test_the_right_amount_in_stripes_lower_case_currency_is_a_match() -> None:
    first = start(checkout(line(1, paid_with="money", credits=None)), now=NOW, timing=TIMING)
    state, _ = run(first.state, c.JobCreated(order_id="order-1", job_id="job-1"))
    state, sent = run(state, paid(3000, "eur"))
    assert types(sent) == ["ProvisionOrder"]
    assert state.status is OrderStatus.PROVISIONING


def test_an_overpayment_is_refunded_in_full_too() -> None:
    first = start(checkout(line(1, paid_with="money", credits=None)), now=NOW, timing=TIMING)
    state, _ = run(first.state, c.JobCreated(order_id="order-1", job_id="job-1"))
    decision = react(state, paid(3001), now=NOW, timing=TIMING)
    refund = decision.send[0]
    assert isinstance(refund, c.RefundPayment) and refund.amount == 3001
    assert "ProvisionOrder" not in types(decision.send)


def test_a_mismatched_refund_still_owed_at_its_deadline_is_sent_again() -> None:
    first = start(checkout(line(1, paid_with="money", credits=None)), now=NOW, timing=TIMING)
    state, _ = run(first.state, c.JobCreated(order_id="order-1", job_id="job-1"), paid(1))
    later = on_deadline(state, now=state.deadline or NOW, timing=TIMING)
    assert types(later.send) == ["RefundPayment", "CancelJob"]
    assert later.send[0] == c.RefundPayment(
        order_id="order-1",
        refund_key="amount-mismatch",
        amount=1,
        # The same parameters as the first time: Stripe refuses a key reused with others.
        reason="amount_mismatch: paid 1 EUR, expected 3000 EUR",
    )


# --- never on silence alone: the step's owner is asked, and its answer is acted on ------------


def provisioning_card_order() -> SagaState:
    """A card order that was paid and whose ProvisionOrder went out."""
    first = start(checkout(line(1, paid_with="money", credits=None)), now=NOW, timing=TIMING)
    state, sent = run(first.state, c.JobCreated(order_id="order-1", job_id="job-1"), paid(3000))
    assert types(sent)[-1] == "ProvisionOrder" and state.step is Step.PROVISIONING
    return state


def all_delivered() -> c.OrderProvisionedV2:
    """Provisioning's results for the card order: its one line, both units delivered."""
    return c.OrderProvisionedV2(
        order_id="order-1",
        job_id="job-1",
        results=(
            c.ItemResultV2(
                line_no=1, item_id="item-1", status="delivered", units=2, units_failed=0
            ),
        ),
    )


def past_deadlines(state: SagaState, count: int) -> tuple[SagaState, list[Contract], list[str]]:
    """Lets `count` deadlines pass with no reply at all; what was sent and the reasons recorded."""
    sent: list[Contract] = []
    reasons: list[str] = []
    for _ in range(count):
        assert state.deadline is not None
        decision = on_deadline(state, now=state.deadline, timing=TIMING)
        assert not decision.ignored
        state = decision.state
        sent.extend(decision.send)
        reasons.extend(reason for _, reason in decision.changes)
    return state, sent, reasons


def test_provisioning_silent_past_its_last_deadline_is_fenced_and_nothing_is_refunded_yet() -> None:
    # Before: the last deadline refunded everything and sent CancelJob in the same breath; a
    # provisioning that came back then ran the queued ProvisionOrder: goods and a full refund.
    state, sent, reasons = past_deadlines(provisioning_card_order(), TIMING.max_attempts)
    assert types(sent) == ["ProvisionOrder"] * (TIMING.max_attempts - 1) + ["CancelJob"]
    assert state.status is OrderStatus.PROVISIONING and state.step is Step.FENCING_JOB
    assert any("asking provisioning to cancel" in r for r in reasons)
    # Silence goes on: the cancel is asked again, ever more slowly, and nothing is refunded.
    later, resent, reasons = past_deadlines(state, 6)
    assert types(resent) == ["CancelJob"] * 6
    assert later.status is OrderStatus.PROVISIONING and later.refund_money == 0
    assert (later.deadline or NOW) - NOW > timedelta(minutes=30)
    assert any(r.startswith("needs attention") for r in reasons)


def test_a_fenced_job_that_had_delivered_answers_its_results_and_nothing_is_refunded() -> None:
    state, _, _ = past_deadlines(provisioning_card_order(), TIMING.max_attempts)
    state, sent = run(state, all_delivered())
    assert types(sent) == ["OrderCompleted"]
    assert state.status is OrderStatus.COMPLETED and state.refund_money == 0


def test_a_fenced_job_confirmed_cancelled_is_refunded_in_full() -> None:
    state, _, _ = past_deadlines(provisioning_card_order(), TIMING.max_attempts)
    state, sent = run(state, c.JobCancelled(order_id="order-1"))
    assert types(sent) == ["RefundPayment"]
    assert state.step is Step.REFUNDING and state.refund_money == 3000
    # A ProvisionOrder still queued is refused by the fence; its answer changes nothing now.
    state, sent = run(
        state,
        c.ProvisioningFailed(order_id="order-1", reason="job_cancelled"),
        c.PaymentRefunded(order_id="order-1", refund_key=state.refund_key or "", amount=3000),
    )
    assert types(sent) == ["OrderCancelled"] and state.status is OrderStatus.REFUNDED


def test_the_payment_deadline_asks_payments_and_undoes_nothing_on_silence() -> None:
    # Before: the deadline expired the session, cancelled the job and released the credits; a
    # PaymentSucceeded delayed past it was kept (or refunded) instead of provisioned.
    state, sent, reasons = past_deadlines(awaiting_payment_order(), 5)
    assert types(sent) == ["InquirePayment"] * 5
    assert sent[0] == c.InquirePayment(order_id="order-1")
    assert state.status is OrderStatus.AWAITING_PAYMENT and state.step is Step.AWAITING_PAYMENT
    assert any("asking payments" in r for r in reasons)
    assert any(r.startswith("needs attention") for r in reasons)


def test_payments_answering_that_the_payment_succeeded_goes_on_to_provision() -> None:
    state, _, _ = past_deadlines(awaiting_payment_order(), 1)
    state, sent = run(state, paid(3000))
    assert types(sent) == ["CaptureCredits"] and state.status is OrderStatus.PAID


def test_payments_answering_expired_compensates() -> None:
    state, _, _ = past_deadlines(awaiting_payment_order(), 1)
    state, sent = run(state, c.PaymentExpired(order_id="order-1", session_id="cs_1"))
    assert types(sent) == ["CancelJob", "ReleaseCredits"]
    assert state.status is OrderStatus.COMPENSATING


def test_payments_answering_pending_keeps_the_order_waiting_and_asks_again_later() -> None:
    state, _, _ = past_deadlines(awaiting_payment_order(), 1)
    decision = react(
        state,
        c.PaymentPending(order_id="order-1", session_id="cs_1", status="open"),
        now=NOW,
        timing=TIMING,
    )
    assert decision.send == () and decision.state.step is Step.AWAITING_PAYMENT
    assert decision.state.status is OrderStatus.AWAITING_PAYMENT
    assert decision.changes == (
        (OrderStatus.AWAITING_PAYMENT, "payments says the payment is open; asking again later"),
    )
    assert decision.state.deadline == NOW + TIMING.pending_recheck


def processing_order() -> SagaState:
    """Paid by bank debit: payments said the payment is processing."""
    decision = react(
        awaiting_payment_order(),
        c.PaymentPending(order_id="order-1", session_id="cs_1", status="processing"),
        now=NOW,
        timing=TIMING,
    )
    assert decision.send == ()
    return decision.state


def test_a_processing_payment_is_shown_and_waited_for_its_own_window() -> None:
    # Before: the session's deadline compensated a bank debit that settles days later, and the
    # money that then arrived was refunded as a late payment.
    state = processing_order()
    assert state.status is OrderStatus.PAYMENT_PROCESSING and state.step is Step.AWAITING_PAYMENT
    assert state.deadline == NOW + TIMING.processing_window >= NOW + timedelta(days=14)
    assert on_deadline(state, now=NOW + timedelta(days=10), timing=TIMING).ignored
    # Said again within the window: nothing new.
    again = c.PaymentPending(order_id="order-1", session_id="cs_1", status="processing")
    assert react(state, again, now=NOW + timedelta(days=1), timing=TIMING).ignored


def test_a_processing_payment_cannot_be_cancelled_by_the_shopper() -> None:
    assert cancel(processing_order(), reason="shopper", now=NOW, timing=TIMING) is None


def test_a_processing_payment_that_succeeds_continues_and_one_that_fails_compensates() -> None:
    state, sent = run(processing_order(), paid(3000))
    assert types(sent) == ["CaptureCredits"] and state.status is OrderStatus.PAID
    state, sent = run(
        processing_order(),
        c.PaymentFailed(order_id="order-1", session_id="cs_1", reason="insufficient_funds"),
    )
    assert types(sent) == ["CancelJob", "ReleaseCredits"]
    assert state.status is OrderStatus.COMPENSATING


def test_a_payment_still_processing_after_its_window_needs_attention_once() -> None:
    state = processing_order()
    state, sent, _ = past_deadlines(state, 1)
    assert types(sent) == ["InquirePayment"]
    later = (state.deadline or NOW) + timedelta(seconds=1)
    still = c.PaymentPending(order_id="order-1", session_id="cs_1", status="processing")
    decision = react(state, still, now=later, timing=TIMING)
    assert decision.changes == (
        (
            OrderStatus.PAYMENT_PROCESSING,
            "needs attention: the payment is still processing after 21 days; still asking",
        ),
    )
    assert decision.state.deadline == later + TIMING.pending_recheck
    state, _, _ = past_deadlines(decision.state, 1)
    repeated = react(state, still, now=(state.deadline or NOW), timing=TIMING)
    assert repeated.changes == () and not repeated.ignored


# --- refunds that do not reach the shopper -----------------------------------------------------


def refunding_order() -> SagaState:
    """A paid card order nothing of which could be provisioned: its refund is in flight."""
    state, sent = run(
        provisioning_card_order(), c.ProvisioningFailed(order_id="order-1", reason="panel down")
    )
    assert types(sent) == ["RefundPayment"] and state.step is Step.REFUNDING
    return state


def refund_failed(state: SagaState, status: str = "rejected") -> c.RefundFailed:
    return c.RefundFailed(
        order_id="order-1",
        refund_key=state.refund_key or "",
        amount=state.refund_money,
        status=status,  # type: ignore[arg-type]
        reason="charge_disputed",
    )


def test_a_rejected_refund_ends_the_order_refund_failed_with_stripes_reason() -> None:
    # Before: the rejection was retried and re-sent at every refunding deadline, for ever.
    state = refunding_order()
    state, sent = run(state, refund_failed(state))
    assert state.status is OrderStatus.REFUND_FAILED and state.step is Step.DONE
    assert state.refund_failed == "refund of 3000 EUR rejected: charge_disputed"
    # The cart hears how the order ended for the goods: nothing delivered, cancelled.
    assert types(sent) == ["OrderCancelled"]
    assert on_deadline(state, now=NOW + timedelta(days=1), timing=TIMING).ignored


def test_a_refund_that_fails_days_after_it_was_accepted_moves_the_ended_order() -> None:
    state = refunding_order()
    key = state.refund_key or ""
    state, _ = run(state, c.PaymentRefunded(order_id="order-1", refund_key=key, amount=3000))
    assert state.status is OrderStatus.REFUNDED
    decision = react(state, refund_failed(state, "failed"), now=NOW, timing=TIMING)
    assert decision.send == ()
    assert decision.state.status is OrderStatus.REFUND_FAILED
    assert decision.changes == (
        (OrderStatus.REFUND_FAILED, "refund of 3000 EUR failed: charge_disputed"),
    )
    # A second copy of the failure changes nothing.
    assert react(decision.state, refund_failed(state, "failed"), now=NOW, timing=TIMING).ignored


def test_a_failure_of_a_refund_this_order_did_not_ask_for_is_ignored() -> None:
    state = refunding_order()
    other = refund_failed(state).model_copy(update={"refund_key": "someone-else"})
    assert react(state, other, now=NOW, timing=TIMING).ignored


def test_an_operator_retries_a_failed_refund_as_a_new_refund_and_it_completes() -> None:
    state = refunding_order()
    first_key = state.refund_key
    state, _ = run(state, refund_failed(state))
    decision = retry_refund(state, reason="card reissued", now=NOW, timing=TIMING)
    assert decision is not None
    [refund] = decision.send
    assert isinstance(refund, c.RefundPayment)
    assert refund.refund_key == f"{first_key}-retry1" and refund.amount == 3000
    assert decision.changes == (
        (OrderStatus.REFUND_FAILED, "refund retried by an operator: card reissued"),
    )
    state, sent = run(
        decision.state,
        c.PaymentRefunded(order_id="order-1", refund_key=refund.refund_key, amount=3000),
    )
    assert state.status is OrderStatus.REFUNDED and types(sent) == ["OrderCancelled"]


def test_an_operator_records_a_refund_made_elsewhere() -> None:
    state = refunding_order()
    state, _ = run(state, refund_failed(state))
    decision = record_refund_elsewhere(state, reason="bank transfer 2026-11-25")
    assert decision is not None and decision.send == ()
    assert decision.state.status is OrderStatus.REFUNDED
    assert decision.changes == (
        (OrderStatus.REFUNDED, "refund made outside the app: bank transfer 2026-11-25"),
    )
    # A late copy of the failure does not reopen the settled order.
    assert react(decision.state, refund_failed(state), now=NOW, timing=TIMING).ignored


def test_refund_actions_are_refused_unless_a_refund_failed() -> None:
    state = refunding_order()
    assert retry_refund(state, reason="x", now=NOW, timing=TIMING) is None
    assert record_refund_elsewhere(state, reason="x") is None


# --- disputes ----------------------------------------------------------------------------------


def disputed(status: str) -> c.PaymentDisputed:
    return c.PaymentDisputed(
        order_id="order-1",
        dispute_id="dp_1",
        status=status,
        amount=3000,
        currency="eur",
        reason="fraudulent",
    )


def completed_card_order() -> SagaState:
    state, _ = run(provisioning_card_order(), all_delivered())
    assert state.status is OrderStatus.COMPLETED
    return state


def test_a_dispute_of_an_ended_order_shows_on_it_and_a_won_one_gives_its_status_back() -> None:
    # Before: charge.dispute.* events were stored and dropped; the order said completed.
    state, sent = run(completed_card_order(), disputed("needs_response"))
    assert sent == [] and state.status is OrderStatus.DISPUTED and state.dispute == "needs_response"
    state, _ = run(state, disputed("under_review"))
    assert state.status is OrderStatus.DISPUTED
    decision = react(state, disputed("won"), now=NOW, timing=TIMING)
    assert decision.state.status is OrderStatus.COMPLETED
    assert decision.changes == (
        (OrderStatus.COMPLETED, "payment disputed (fraudulent): won, 3000 EUR"),
    )


def test_a_lost_dispute_leaves_the_order_disputed() -> None:
    state, _ = run(completed_card_order(), disputed("needs_response"), disputed("lost"))
    assert state.status is OrderStatus.DISPUTED and state.dispute == "lost"


def test_a_dispute_during_the_saga_is_recorded_and_the_saga_goes_on() -> None:
    decision = react(provisioning_card_order(), disputed("needs_response"), now=NOW, timing=TIMING)
    assert decision.send == () and decision.state.status is OrderStatus.PROVISIONING
    assert decision.changes == (
        (OrderStatus.PROVISIONING, "payment disputed (fraudulent): needs_response, 3000 EUR"),
    )
    assert decision.state.step is Step.PROVISIONING
