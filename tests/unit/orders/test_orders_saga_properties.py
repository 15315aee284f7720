"""The saga under random replies: duplicated, reordered, late, interleaved with deadlines and
shopper cancels. Whatever happens, the invariants of the design hold for what the saga sends."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import event, given, settings
from hypothesis import strategies as st

from services.orders.saga.machine import cancel, on_deadline, react, start
from services.orders.saga.state import TERMINAL, OrderStatus, SagaState, Step, Timing
from shared.messages import Contract
from shared.messages import contracts as c

T0 = datetime(2026, 11, 23, tzinfo=UTC)
# One attempt: the first provisioning deadline already fences the job, so a script reaches it.
TIMING = Timing(
    step_timeout=timedelta(seconds=10), provisioning_timeout=timedelta(seconds=10), max_attempts=1
)
ORDER = "order-1"


def the_checkout(use_money: bool, use_credits: bool) -> c.CheckoutRequested:
    lines = []
    if use_credits:
        lines.append(
            c.CheckoutLine(
                line_no=1,
                item_id="pkg",
                kind="session_package",
                name="p",
                quantity=1,
                unit_price=5000,
                unit_credits=400,
                paid_with="credits",
            )
        )
    if use_money or not lines:
        lines.append(
            c.CheckoutLine(
                line_no=len(lines) + 1,
                item_id="vps",
                kind="server_plan",
                name="v",
                quantity=2,
                unit_price=1500,
                paid_with="money",
            )
        )
    return c.CheckoutRequested(
        checkout_id=ORDER,
        cart_id="cart",
        user_id="u",
        currency="EUR",
        lines=tuple(lines),
        money_total=sum(x.money for x in lines),
        credits_total=sum(x.credits for x in lines),
    )


def replies(checkout: c.CheckoutRequested) -> list[Contract]:
    """Every reply the services could send for this order, good and bad."""
    n = len(checkout.lines)
    return [
        c.CreditsReserved(order_id=ORDER, credits=checkout.credits_total),
        c.CreditsRejected(order_id=ORDER, reason="insufficient_credits", available=1),
        c.JobCreated(order_id=ORDER, job_id="job"),
        c.JobRejected(order_id=ORDER, reason="bad"),
        c.PaymentSessionCreated(order_id=ORDER, session_id="cs", url="u", expires_at=T0),
        c.PaymentSessionFailed(order_id=ORDER, reason="stripe down"),
        c.PaymentSucceeded(
            order_id=ORDER,
            session_id="cs",
            payment_intent_id="pi",
            amount=checkout.money_total,
            currency="EUR",
        ),
        c.PaymentFailed(order_id=ORDER, session_id="cs", reason="declined"),
        c.PaymentExpired(order_id=ORDER, session_id="cs"),
        c.CreditsCaptured(order_id=ORDER, credits=checkout.credits_total),
        c.CreditsReleased(order_id=ORDER, credits=checkout.credits_total),
        c.JobCancelled(order_id=ORDER),
        c.OrderProvisioned(
            order_id=ORDER,
            job_id="job",
            results=tuple(
                c.ItemResult(line_no=i + 1, item_id="x", status="delivered") for i in range(n)
            ),
        ),
        c.OrderProvisioned(
            order_id=ORDER,
            job_id="job",
            results=tuple(
                c.ItemResult(line_no=i + 1, item_id="x", status="failed" if i == 0 else "delivered")
                for i in range(n)
            ),
        ),
        c.ProvisioningFailed(order_id=ORDER, reason="job_cancelled"),
        c.PaymentRefunded(order_id=ORDER, refund_key="k", amount=1),
        c.CreditsRefunded(order_id=ORDER, refund_key="k", credits=1),
        # Version 2: one unit of the last line (two servers) failed, the rest delivered.
        c.OrderProvisionedV2(
            order_id=ORDER,
            job_id="job",
            results=tuple(
                c.ItemResultV2(
                    line_no=x.line_no,
                    item_id=x.item_id,
                    status="partially_delivered" if x.line_no == n else "delivered",
                    units=x.quantity,
                    units_failed=1 if x.line_no == n else 0,
                )
                for x in checkout.lines
            ),
        ),
        # A charge that is not what the order costs (a tampered or misconfigured payment).
        c.PaymentSucceeded(
            order_id=ORDER, session_id="cs", payment_intent_id="pi", amount=1, currency="EUR"
        ),
        # Payments' answer to an inquiry while the money is still on its way.
        c.PaymentPending(order_id=ORDER, session_id="cs", status="processing"),
        # A money refund Stripe rejected, or that failed after it was accepted.
        c.RefundFailed(order_id=ORDER, refund_key="k", amount=1, status="failed", reason="x"),
    ]


def expected(state: SagaState, pool: list[Contract], variant: int) -> Contract | None:
    """The reply the current step waits for (variant picks between good and partial outcomes)."""
    by_step: dict[Step, list[int]] = {
        Step.RESERVING_CREDITS: [0],
        Step.CREATING_JOB: [2],
        Step.CREATING_PAYMENT_SESSION: [4],
        Step.AWAITING_PAYMENT: [6],
        Step.CAPTURING_CREDITS: [9],
        Step.PROVISIONING: [12, 12, 13, 17],
        # Asked to cancel, provisioning answers cancelled or with what it had delivered.
        Step.FENCING_JOB: [11, 12, 13, 17],
    }
    if state.step in by_step:
        choices = by_step[state.step]
        return pool[choices[variant % len(choices)]]
    awaited = {
        c.CreditsReleased.TYPE: 10,
        c.JobCancelled.TYPE: 11,
        c.PaymentRefunded.TYPE: 15,
        c.CreditsRefunded.TYPE: 16,
    }
    for message_type in state.awaiting:
        return pool[awaited[message_type]]
    return None


Action = tuple[str, int]
actions = st.lists(
    st.one_of(
        # Mostly the reply the saga waits for; sometimes any reply (duplicate, late, wrong),
        # a deadline passing, or the shopper cancelling.
        st.tuples(st.just("progress"), st.integers(min_value=0, max_value=3)),
        st.tuples(st.just("progress"), st.integers(min_value=0, max_value=3)),
        st.tuples(st.just("progress"), st.integers(min_value=0, max_value=3)),
        st.tuples(st.just("reply"), st.integers(min_value=0, max_value=20)),
        st.tuples(st.just("deadline"), st.just(0)),
        st.tuples(st.just("cancel"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=1000, deadline=None)
@given(use_money=st.booleans(), use_credits=st.booleans(), script=actions)
def test_invariants_hold_for_any_sequence_of_replies_deadlines_and_cancels(
    use_money: bool, use_credits: bool, script: list[Action]
) -> None:
    checkout = the_checkout(use_money, use_credits)
    pool = replies(checkout)
    now = T0
    first = start(checkout, now=now, timing=TIMING)
    state: SagaState = first.state
    sent: list[Contract] = list(first.send)
    received: list[Contract] = []
    statuses: list[OrderStatus] = [s for s, _ in first.changes]

    for kind, index in script:
        now += timedelta(seconds=4)
        if kind in ("reply", "progress"):
            chosen = pool[index] if kind == "reply" else expected(state, pool, index)
            if chosen is None:
                continue
            reply = chosen
            refund_reply = c.PaymentRefunded | c.CreditsRefunded | c.RefundFailed
            if isinstance(reply, refund_reply) and state.refund_key:
                # Refund replies name the refund the saga asked for.
                reply = reply.model_copy(update={"refund_key": state.refund_key})
            received.append(reply)
            decision = react(state, reply, now=now, timing=TIMING)
        elif kind == "deadline":
            decision = on_deadline(state, now=now + timedelta(seconds=300), timing=TIMING)
        else:
            maybe = cancel(state, reason="shopper", now=now, timing=TIMING)
            if maybe is None:
                assert state.step not in {Step.RESERVING_CREDITS, Step.CREATING_JOB}
                continue
            decision = maybe
        if decision.ignored:
            assert decision.send == () and decision.changes == () and decision.state == state
        if kind == "deadline":
            # Silence alone never refunds: a deadline only re-sends a refund already decided
            # on an owner's answer, and once money may be on its way it undoes nothing.
            for m in decision.send:
                if isinstance(m, c.RefundPayment | c.RefundCredits):
                    assert m.refund_key == state.refund_key
            if state.step is Step.AWAITING_PAYMENT:
                assert all(isinstance(m, c.InquirePayment) for m in decision.send)
        state = decision.state
        sent.extend(decision.send)
        statuses.extend(s for s, _ in decision.changes)

        # No payment session unless the saga has seen its job (invariant 3).
        if any(isinstance(m, c.CreatePaymentSession) for m in sent):
            assert any(isinstance(r, c.JobCreated) for r in received)
        # Credits are captured only after they were reserved (invariant 1).
        if any(isinstance(m, c.CaptureCredits) for m in sent):
            assert any(isinstance(r, c.CreditsReserved) for r in received)
        # Nothing is provisioned unless it was paid for (money and credits).
        if any(isinstance(m, c.ProvisionOrder) for m in sent):
            if checkout.money_total:
                assert any(
                    isinstance(r, c.PaymentSucceeded) and r.amount == checkout.money_total
                    for r in received
                )
            if checkout.credits_total:
                assert any(isinstance(r, c.CreditsCaptured) for r in received)
        # Money refunded never exceeds money paid, per refund key at most once in amount (inv. 2).
        by_key = {m.refund_key: m.amount for m in sent if isinstance(m, c.RefundPayment)}
        # One set of parameters per refund key: Stripe refuses a key reused with others.
        refunds = [m for m in sent if isinstance(m, c.RefundPayment | c.RefundCredits)]
        assert len({(type(m), m.refund_key) for m in refunds}) == len(set(refunds))
        charged = max((r.amount for r in received if isinstance(r, c.PaymentSucceeded)), default=0)
        assert sum(by_key.values()) <= charged
        if by_key:
            assert any(isinstance(r, c.PaymentSucceeded) for r in received)
        credit_refunds = {m.refund_key: m.credits for m in sent if isinstance(m, c.RefundCredits)}
        assert sum(credit_refunds.values()) <= checkout.credits_total
        if credit_refunds:
            assert any(isinstance(r, c.CreditsCaptured) for r in received)
        # A partly failed line refunds exactly its failed unit: one server of two, never more.
        unit_keys = [k for k in by_key if "x" in k]
        if unit_keys:
            assert [by_key[k] for k in unit_keys] == [1500]
            assert not credit_refunds or all("x" not in k for k in credit_refunds)

    # A finished order stays finished: the only move out of a terminal status is a cancelled
    # order refunding a payment that arrived late.
    for before, after in itertools.pairwise(statuses):
        if before in TERMINAL:
            assert (before, after) in {
                (OrderStatus.CANCELLED, OrderStatus.CANCELLED),
                (OrderStatus.CANCELLED, OrderStatus.REFUNDED),
                # A refund that fails after it was accepted reopens nothing but the money state.
                (OrderStatus.REFUNDED, OrderStatus.REFUND_FAILED),
                (OrderStatus.PARTIALLY_COMPLETED, OrderStatus.REFUND_FAILED),
                (OrderStatus.CANCELLED, OrderStatus.REFUND_FAILED),
            }, statuses
    # Every paid order that is done is completed, partially completed with refunds, or refunded.
    event(f"final: {state.step}/{state.status}, paid={bool(state.amount_paid)}")
    if state.step is Step.DONE and state.amount_paid:
        assert state.status in {
            OrderStatus.COMPLETED,
            OrderStatus.PARTIALLY_COMPLETED,
            OrderStatus.REFUNDED,
            OrderStatus.REFUND_FAILED,
        }
        if state.status is OrderStatus.REFUND_FAILED:
            assert state.refund_failed and any(isinstance(r, c.RefundFailed) for r in received)
        if state.status is OrderStatus.REFUNDED:
            assert sum(by_key.values()) == state.amount_paid
