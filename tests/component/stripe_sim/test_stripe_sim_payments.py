"""Delayed payment methods and the refund lifecycle of the Stripe simulator, driven by the
official `stripe` SDK and a real webhook receiver (never mocked). Every event's object is
held against Stripe's example object of its type (tests/fixtures/stripe/fixtures3.json).
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import stripe

from simulators.stripe.config import SimConfig
from tests.support.stripe_sim import (
    WEBHOOK_SECRET,
    Receiver,
    Sim,
    raw_json,
    running_sim,
    session_params,
)


def sim_post(sim: Sim, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(f"{sim.url}{path}", json=body) if body else httpx.post(f"{sim.url}{path}")


def received_all(
    receiver: Receiver, wanted: list[tuple[str, str]], fixtures: dict[str, Any]
) -> dict[tuple[str, str], stripe.Event]:
    """The signed deliveries of the ``(event type, object id)`` pairs, parsed by the SDK, in
    whatever order they arrive (concurrent deliveries may overtake each other, as with
    Stripe). The event and its object must have the field sets of Stripe's examples."""
    got: dict[tuple[str, str], stripe.Event] = {}
    deadline = time.monotonic() + 10
    while len(got) < len(wanted):
        delivery = receiver.next(timeout=max(deadline - time.monotonic(), 0.01))
        raw = json.loads(delivery.body)
        key = (raw["type"], raw["data"]["object"]["id"])
        if key not in wanted or key in got:
            continue  # another test's event, or a copy
        assert set(raw) == set(fixtures["event"])
        assert set(raw["data"]["object"]) == set(fixtures[raw["data"]["object"]["object"]]), key
        got[key] = stripe.Webhook.construct_event(
            delivery.body, delivery.headers["stripe-signature"], WEBHOOK_SECRET
        )
    return got


def received(
    receiver: Receiver, type_: str, object_id: str, fixtures: dict[str, Any]
) -> stripe.Event:
    return received_all(receiver, [(type_, object_id)], fixtures)[(type_, object_id)]


# --- delayed payment methods -----------------------------------------------------------


def test_delayed_payment_completes_unpaid_then_succeeds(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver, fixtures: dict[str, Any]
) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    response = sim_post(sim, f"/_sim/sessions/{session.id}/pay", {"payment_method": "delayed"})
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "checkout.session.completed"

    completed = received(receiver, "checkout.session.completed", session.id, fixtures)
    assert (completed.data.object["status"], completed.data.object["payment_status"]) == (
        "complete",
        "unpaid",
    )
    pending = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["payment_intent"]})
    assert (pending.status, pending.payment_status) == ("complete", "unpaid")
    assert isinstance(pending.payment_intent, stripe.PaymentIntent)
    assert (pending.payment_intent.status, pending.payment_intent.amount_received) == (
        "processing",
        0,
    )
    with pytest.raises(stripe.InvalidRequestError, match="successful charge"):
        client.v1.refunds.create({"payment_intent": pending.payment_intent.id})

    result = sim_post(sim, f"/_sim/sessions/{session.id}/async_result", {"outcome": "succeeded"})
    assert result.status_code == 200, result.text
    event = received(
        receiver,
        "checkout.session.async_payment_succeeded",
        session.id,
        fixtures,
    )
    assert event.id == result.json()["id"]
    assert isinstance(event.data.object, stripe.checkout.Session)
    assert event.data.object["payment_status"] == "paid"
    assert event.data.object["payment_intent"] == pending.payment_intent.id

    paid = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["payment_intent"]})
    assert (paid.status, paid.payment_status) == ("complete", "paid")
    assert isinstance(paid.payment_intent, stripe.PaymentIntent)
    assert paid.payment_intent.status == "succeeded"
    assert paid.payment_intent.amount_received == paid.amount_total
    assert set(raw_json(paid)["payment_intent"]) == set(fixtures["payment_intent"])

    again = sim_post(sim, f"/_sim/sessions/{session.id}/async_result", {"outcome": "failed"})
    assert again.status_code == 400
    assert "no delayed payment" in again.json()["error"]["message"]


def test_delayed_payment_can_fail(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver, fixtures: dict[str, Any]
) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    sim_post(sim, f"/_sim/sessions/{session.id}/pay", {"payment_method": "delayed"})
    result = sim_post(sim, f"/_sim/sessions/{session.id}/async_result", {"outcome": "failed"})
    assert result.status_code == 200, result.text

    event = received(receiver, "checkout.session.async_payment_failed", session.id, fixtures)
    assert (event.data.object["status"], event.data.object["payment_status"]) == (
        "complete",
        "unpaid",
    )
    failed = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["payment_intent"]})
    assert failed.payment_status == "unpaid"
    assert isinstance(failed.payment_intent, stripe.PaymentIntent)
    assert failed.payment_intent.status == "requires_payment_method"
    assert failed.payment_intent.last_payment_error is not None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.create({"payment_intent": failed.payment_intent.id})


def test_pay_and_async_result_reject_bad_requests(sim: Sim, client: stripe.StripeClient) -> None:
    def status_of(session_id: str, action: str, body: dict[str, Any]) -> int:
        return sim_post(sim, f"/_sim/sessions/{session_id}/{action}", body).status_code

    card = client.v1.checkout.sessions.create(session_params())
    # No body is the original card payment (what existing callers send).
    paid = sim_post(sim, f"/_sim/sessions/{card.id}/pay").json()["data"]["object"]
    assert paid["payment_status"] == "paid"
    assert status_of(card.id, "async_result", {"outcome": "succeeded"}) == 400  # not delayed

    still_open = client.v1.checkout.sessions.create(session_params())
    assert status_of(still_open.id, "async_result", {"outcome": "succeeded"}) == 400
    assert status_of(still_open.id, "pay", {"payment_method": "cash"}) == 422
    assert status_of(still_open.id, "async_result", {"outcome": "maybe"}) == 422
    assert status_of("cs_test_nope", "async_result", {"outcome": "failed"}) == 404
    assert client.v1.checkout.sessions.retrieve(still_open.id).status == "open"


def test_a_total_changed_on_the_hosted_page_is_what_the_session_and_its_charge_report(
    sim: Sim, client: stripe.StripeClient
) -> None:
    session = client.v1.checkout.sessions.create(session_params())  # EUR 34.99 asked for
    # A promotion code (or tax) at Stripe's hosted page: the buyer paid 1 cent.
    paid = sim_post(sim, f"/_sim/sessions/{session.id}/pay", {"amount_total": 1}).json()
    assert (paid["type"], paid["data"]["object"]["amount_total"]) == (
        "checkout.session.completed",
        1,
    )

    again = client.v1.checkout.sessions.retrieve(session.id)
    assert (again.amount_total, again.amount_subtotal) == (1, 3499)
    assert again.payment_intent is not None
    intent = client.v1.payment_intents.retrieve(str(again.payment_intent))
    assert (intent.amount, intent.amount_received) == (1, 1)
    other = client.v1.checkout.sessions.create(session_params())
    assert sim_post(sim, f"/_sim/sessions/{other.id}/pay", {"amount_total": -1}).status_code == 422


# --- refunds: pending -> succeeded ----------------------------------------------------------


def test_refund_settles_with_refund_updated_and_charge_refunded(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver, fixtures: dict[str, Any]
) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    pi_id = sim_post(sim, f"/_sim/sessions/{session.id}/pay").json()["data"]["object"][
        "payment_intent"
    ]
    charge_id = client.v1.payment_intents.retrieve(pi_id).latest_charge
    assert isinstance(charge_id, str)

    partial = client.v1.refunds.create({"payment_intent": pi_id, "amount": 1000})
    assert partial.status == "pending"
    events = received_all(
        receiver,
        [
            ("refund.created", partial.id),
            ("refund.updated", partial.id),
            ("charge.refunded", charge_id),
        ],
        fixtures,
    )
    created = events["refund.created", partial.id]
    assert created.data.object["status"] == "pending"
    assert created.request is not None and partial.last_response is not None
    assert created.request.id == partial.last_response.request_id

    updated = events["refund.updated", partial.id]
    assert isinstance(updated.data.object, stripe.Refund)
    assert updated.data.object.status == "succeeded"
    assert updated.data.previous_attributes is not None
    assert updated.data.previous_attributes.to_dict() == {"status": "pending"}
    assert updated.request is not None
    assert updated.request.id is None  # settled by Stripe, not by an API request
    assert client.v1.refunds.retrieve(partial.id).status == "succeeded"

    refunded = events["charge.refunded", charge_id]
    charge = refunded.data.object
    assert isinstance(charge, stripe.Charge)
    assert (charge.id, charge.payment_intent, charge.status) == (charge_id, pi_id, "succeeded")
    assert (charge.amount, charge.amount_captured, charge.amount_refunded) == (3499, 3499, 1000)
    assert charge.refunded is False  # partly refunded
    assert charge.refunds is not None
    assert [r.id for r in charge.refunds.data] == [partial.id]
    assert charge.refunds.data[0].status == "succeeded"
    assert set(charge.refunds.data[0].to_dict()) == set(fixtures["refund"])
    assert refunded.data.previous_attributes is not None
    assert refunded.data.previous_attributes.to_dict() == {"amount_refunded": 0}

    rest = client.v1.refunds.create({"payment_intent": pi_id})
    assert (rest.amount, rest.status) == (3499 - 1000, "pending")
    final = received_all(
        receiver,
        [("refund.created", rest.id), ("refund.updated", rest.id), ("charge.refunded", charge_id)],
        fixtures,
    )["charge.refunded", charge_id].data.object
    assert (final["amount_refunded"], final["refunded"]) == (3499, True)
    assert [r["id"] for r in final["refunds"]["data"]] == [rest.id, partial.id]

    # The event stream (newest first): the payment, then each refund's created -> updated ->
    # charge.refunded.
    ours = [
        (e.type, e.data.object["id"])
        for e in client.v1.events.list({"limit": 100}).data
        if e.data.object.to_dict().get("payment_intent") == pi_id
    ]
    assert ours[::-1] == [
        ("checkout.session.completed", session.id),
        ("refund.created", partial.id),
        ("refund.updated", partial.id),
        ("charge.refunded", charge_id),
        ("refund.created", rest.id),
        ("refund.updated", rest.id),
        ("charge.refunded", charge_id),
    ]


def test_refund_settle_delay_is_configurable() -> None:
    with running_sim(refund_settle_seconds=30) as slow:
        client = slow.client()
        session = client.v1.checkout.sessions.create(session_params())
        pi_id = sim_post(slow, f"/_sim/sessions/{session.id}/pay").json()["data"]["object"][
            "payment_intent"
        ]
        refund = client.v1.refunds.create({"payment_intent": pi_id})
        assert client.v1.refunds.retrieve(refund.id).status == "pending"
        assert client.v1.events.list({"type": "refund.updated"}).data == []


def test_new_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SIM_REFUND_SETTLE_SECONDS", "1.5")
    monkeypatch.setenv("STRIPE_SIM_WEBHOOK_REORDER_HOLD_SECONDS", "0.7")
    config = SimConfig()
    assert (config.refund_settle_seconds, config.webhook_reorder_hold_seconds) == (1.5, 0.7)
