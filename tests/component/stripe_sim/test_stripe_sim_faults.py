"""Fault injection of the Stripe simulator (``/_sim/faults``), observed the way a client
sees it: through the official `stripe` SDK and a real webhook receiver, never mocked.

Every test runs its own simulator and receiver: faults are global to a simulator.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe

from tests.support.stripe_sim import (
    WEBHOOK_SECRET,
    Delivery,
    Receiver,
    Sim,
    running_sim,
    session_params,
    webhook_receiver,
)


@pytest.fixture
def rig() -> Iterator[tuple[Sim, Receiver]]:
    with webhook_receiver() as receiver, running_sim(receiver=receiver) as sim:
        yield sim, receiver


def set_faults(sim: Sim, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{sim.url}/_sim/faults", json=body)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def get_faults(sim: Sim) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(f"{sim.url}/_sim/faults").json()
    return state


def pay(sim: Sim, session_id: str, payment_method: str = "card") -> dict[str, Any]:
    response = httpx.post(
        f"{sim.url}/_sim/sessions/{session_id}/pay", json={"payment_method": payment_method}
    )
    assert response.status_code == 200, response.text
    event: dict[str, Any] = response.json()
    return event


def verified(delivery: Delivery) -> stripe.Event:
    return stripe.Webhook.construct_event(
        delivery.body, delivery.headers["stripe-signature"], WEBHOOK_SECRET
    )


def assert_no_delivery(receiver: Receiver, within: float = 0.5) -> None:
    with pytest.raises(queue.Empty):
        extra = receiver.next(timeout=within)
        pytest.fail(f"unexpected delivery: {json.loads(extra.body)['type']}")


# --- API faults -------------------------------------------------------------------------


def test_api_errors_fail_exactly_count_calls_and_do_nothing(rig: tuple[Sim, Receiver]) -> None:
    sim, receiver = rig
    state = set_faults(
        sim,
        api_errors=[
            {"method": "POST", "path_prefix": "/v1/checkout/sessions", "count": 2, "status": 500}
        ],
    )
    assert state["api_errors"][0]["count"] == 2
    client = sim.client(max_network_retries=0)  # the SDK would otherwise retry the 500s
    key = "order-1:create_session"

    for _ in range(2):
        with pytest.raises(stripe.APIError) as err:
            client.v1.checkout.sessions.create(session_params(), {"idempotency_key": key})
        assert type(err.value) is stripe.APIError
        assert err.value.http_status == 500
        assert isinstance(err.value.json_body, dict)
        assert err.value.json_body["error"]["type"] == "api_error"
        assert err.value.request_id is not None and err.value.request_id.startswith("req_")

    # Nothing was created, and GETs (another method) neither failed nor used up the rule.
    assert client.v1.checkout.sessions.list().data == []
    assert client.v1.events.list().data == []
    created = client.v1.checkout.sessions.create(session_params(), {"idempotency_key": key})
    assert created.last_response is not None
    # The failed calls did not store anything under the key: this one ran for real.
    assert "Idempotent-Replayed" not in created.last_response.headers
    assert [s.id for s in client.v1.checkout.sessions.list().data] == [created.id]

    after = get_faults(sim)
    assert after["api_errors"] == []
    assert after["counters"]["api_errors"] == 2
    assert_no_delivery(receiver, within=0.2)


def test_api_errors_are_absorbed_by_sdk_retries_with_one_result(
    rig: tuple[Sim, Receiver],
) -> None:
    sim, _ = rig
    set_faults(sim, api_errors=[{"path_prefix": "/v1/refunds", "count": 2, "status": 503}])
    client = sim.client(max_network_retries=2)
    session = client.v1.checkout.sessions.create(session_params())  # other path: unaffected
    pi_id = pay(sim, session.id)["data"]["object"]["payment_intent"]

    refund = client.v1.refunds.create({"payment_intent": pi_id, "amount": 100})

    assert refund.amount == 100
    assert get_faults(sim)["counters"]["api_errors"] == 2
    # The SDK retried with its own Idempotency-Key; exactly one refund exists.
    refunds = client.v1.events.list({"type": "refund.created"}).data
    assert [e.data.object["id"] for e in refunds] == [refund.id]


def test_timeout_after_commit_then_retry_returns_the_same_session(
    rig: tuple[Sim, Receiver],
) -> None:
    sim, _ = rig
    set_faults(
        sim,
        timeout_after_commit=[
            {
                "method": "POST",
                "path_prefix": "/v1/checkout/sessions",
                "count": 1,
                "delay_seconds": 30,
            }
        ],
    )
    impatient = sim.client(max_network_retries=0, http_client=stripe.RequestsClient(timeout=0.5))
    key = "order-2:create_session"

    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError):
        impatient.v1.checkout.sessions.create(session_params(), {"idempotency_key": key})
    assert time.monotonic() - started < 5

    # Stripe did it although the client never heard back.
    committed = sim.client().v1.checkout.sessions.list().data
    assert len(committed) == 1
    retry = impatient.v1.checkout.sessions.create(session_params(), {"idempotency_key": key})
    assert retry.id == committed[0].id
    assert retry.last_response is not None
    assert retry.last_response.headers["Idempotent-Replayed"] == "true"
    assert [s.id for s in sim.client().v1.checkout.sessions.list().data] == [retry.id]

    state = get_faults(sim)
    assert state["timeout_after_commit"] == []
    assert state["counters"]["timeout_after_commit"] == 1


def test_timeout_after_commit_skips_requests_that_did_nothing(sim_alone: Sim) -> None:
    set_faults(sim_alone, timeout_after_commit=[{"path_prefix": "/v1/checkout/sessions"}])
    impatient = sim_alone.client(
        max_network_retries=0, http_client=stripe.RequestsClient(timeout=0.5)
    )
    # A rejected request commits nothing, so it is answered at once and the rule stays.
    with pytest.raises(stripe.InvalidRequestError):
        impatient.v1.checkout.sessions.create(session_params(success_url="not a url"))
    assert get_faults(sim_alone)["timeout_after_commit"][0]["count"] == 1
    with pytest.raises(stripe.APIConnectionError):
        impatient.v1.checkout.sessions.create(session_params())
    assert get_faults(sim_alone)["timeout_after_commit"] == []


@pytest.fixture
def sim_alone() -> Iterator[Sim]:
    with running_sim() as sim:
        yield sim


# --- webhook faults -------------------------------------------------------------------------


def test_duplicate_delivers_n_copies_of_the_same_event(rig: tuple[Sim, Receiver]) -> None:
    sim, receiver = rig
    set_faults(sim, webhooks={"duplicate": 3})
    session = sim.client().v1.checkout.sessions.create(session_params())
    event = pay(sim, session.id)

    copies = [verified(receiver.next()) for _ in range(3)]

    assert {c.id for c in copies} == {event["id"]}
    assert all(c.type == "checkout.session.completed" for c in copies)
    assert_no_delivery(receiver)
    assert get_faults(sim)["counters"]["webhook_duplicates"] == 2


def test_drop_next_loses_the_webhook_but_lists_the_event(rig: tuple[Sim, Receiver]) -> None:
    sim, receiver = rig
    client = sim.client()
    set_faults(sim, webhooks={"drop_next": 1})
    lost = pay(sim, client.v1.checkout.sessions.create(session_params()).id)
    kept = pay(sim, client.v1.checkout.sessions.create(session_params()).id)

    assert verified(receiver.next()).id == kept["id"]  # only the drop was "next"
    assert_no_delivery(receiver)
    listed = client.v1.events.list({"type": "checkout.session.completed"}).data
    assert [e.id for e in listed] == [kept["id"], lost["id"]]
    assert client.v1.events.retrieve(lost["id"]).pending_webhooks == 1  # never delivered
    state = get_faults(sim)
    assert (state["webhooks"]["drop_next"], state["counters"]["webhook_dropped"]) == (0, 1)


def test_redeliver_sends_an_event_again_signed_anew(rig: tuple[Sim, Receiver]) -> None:
    sim, receiver = rig
    client = sim.client()
    set_faults(sim, webhooks={"drop_next": 1})
    lost = pay(sim, client.v1.checkout.sessions.create(session_params()).id)
    assert_no_delivery(receiver, within=0.3)

    response = httpx.post(f"{sim.url}/_sim/events/{lost['id']}/redeliver")
    assert response.status_code == 200
    assert response.json()["id"] == lost["id"]
    delivery = receiver.next()
    event = verified(delivery)
    assert (event.id, event.type) == (lost["id"], "checkout.session.completed")
    signed_at = int(delivery.headers["stripe-signature"].split(",")[0].removeprefix("t="))
    assert abs(signed_at - time.time()) < 5
    deadline = time.monotonic() + 5
    while client.v1.events.retrieve(lost["id"]).pending_webhooks != 0:
        assert time.monotonic() < deadline, "redelivered event still pending"
        time.sleep(0.05)

    # Redelivering an event that already arrived sends it once more (receivers dedupe).
    httpx.post(f"{sim.url}/_sim/events/{lost['id']}/redeliver").raise_for_status()
    assert verified(receiver.next()).id == lost["id"]
    assert get_faults(sim)["counters"]["webhook_redeliveries"] == 2

    missing = httpx.post(f"{sim.url}/_sim/events/evt_nope/redeliver")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "resource_missing"


def test_redeliver_without_a_webhook_endpoint_is_refused(sim_alone: Sim) -> None:
    session = sim_alone.client().v1.checkout.sessions.create(session_params())
    event = pay(sim_alone, session.id)
    response = httpx.post(f"{sim_alone.url}/_sim/events/{event['id']}/redeliver")
    assert response.status_code == 400
    assert "No webhook endpoint" in response.json()["error"]["message"]


def test_reorder_sends_a_sessions_events_newest_first() -> None:
    # A generous hold window keeps the test independent of machine speed.
    with (
        webhook_receiver() as receiver,
        running_sim(webhook_url=receiver.url, webhook_reorder_hold_seconds=1.0) as sim,
    ):
        set_faults(sim, webhooks={"reorder": True})
        session = sim.client().v1.checkout.sessions.create(session_params())
        completed = pay(sim, session.id, "delayed")
        succeeded = httpx.post(
            f"{sim.url}/_sim/sessions/{session.id}/async_result", json={"outcome": "succeeded"}
        ).json()

        received = [verified(receiver.next()) for _ in range(2)]

        assert [e.id for e in received] == [succeeded["id"], completed["id"]]
        assert [e.type for e in received] == [
            "checkout.session.async_payment_succeeded",
            "checkout.session.completed",
        ]
        assert get_faults(sim)["counters"]["webhook_reordered"] == 2


def test_delay_holds_every_delivery(rig: tuple[Sim, Receiver]) -> None:
    sim, receiver = rig
    set_faults(sim, webhooks={"delay_seconds": 0.5, "duplicate": 2})
    session = sim.client().v1.checkout.sessions.create(session_params())
    started = time.monotonic()
    event = pay(sim, session.id)

    copies = [verified(receiver.next()) for _ in range(2)]

    assert time.monotonic() - started >= 0.5
    assert {c.id for c in copies} == {event["id"]}
    assert get_faults(sim)["counters"]["webhook_delayed"] == 2


# --- the control endpoint itself -------------------------------------------------------------


def test_faults_endpoint_sets_replaces_and_clears(sim_alone: Sim) -> None:
    base = f"{sim_alone.url}/_sim/faults"
    initial = get_faults(sim_alone)
    assert initial["api_errors"] == [] and initial["timeout_after_commit"] == []
    assert initial["webhooks"] == {
        "duplicate": 1,
        "delay_seconds": 0.0,
        "reorder": False,
        "drop_next": 0,
    }
    assert set(initial["counters"].values()) == {0}

    set_faults(sim_alone, api_errors=[{"method": "get", "path_prefix": "/v1/events"}])
    state = set_faults(sim_alone, webhooks={"drop_next": 2})
    # Each key replaces its own kind of fault only; absent keys are left alone.
    assert state["api_errors"] == [
        {"method": "GET", "path_prefix": "/v1/events", "count": 1, "status": 500}
    ]
    assert state["webhooks"]["drop_next"] == 2

    with pytest.raises(stripe.APIError):
        sim_alone.client(max_network_retries=0).v1.events.list()
    assert get_faults(sim_alone)["counters"]["api_errors"] == 1

    bad_bodies: list[dict[str, Any]] = [
        {"api_errors": [{"count": 0}]},
        {"api_errors": [{"status": 200}]},
        {"webhooks": {"duplicate": 0}},
        {"webhooks": {"dropnext": 1}},  # typos are rejected, not ignored
        {"timeouts": []},
    ]
    for bad in bad_bodies:
        assert httpx.post(base, json=bad).status_code == 422, bad

    cleared = httpx.delete(base).json()
    assert cleared == initial
    assert get_faults(sim_alone) == initial
