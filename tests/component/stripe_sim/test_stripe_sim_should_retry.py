"""`Stripe-Should-Retry` and the 5xx Stripe keeps for an idempotency key, as a client sees them
through the official `stripe` SDK.

A 5xx at Stripe's edge, before the request ran, did nothing: Stripe says to retry, and a retry
with the same key runs the request for real. A 5xx after the request ran is kept for its key
like any other answer: the same key gets the same 500 back (`Idempotent-Replayed`), and Stripe
says not to retry, as nothing but a new key could change the answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe

from tests.support.stripe_sim import Sim, running_sim, session_params

SESSIONS = "/v1/checkout/sessions"


@pytest.fixture
def sim_alone() -> Iterator[Sim]:
    # Faults are global to a simulator: each test has its own.
    with running_sim() as sim:
        yield sim


def set_faults(sim: Sim, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{sim.url}/_sim/faults", json=body)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def header(err: stripe.StripeError, name: str) -> str | None:
    found = {k.lower(): v for k, v in (err.headers or {}).items()}
    return found.get(name.lower())


def test_a_5xx_before_the_request_ran_says_retry(sim_alone: Sim) -> None:
    set_faults(sim_alone, api_errors=[{"method": "POST", "path_prefix": SESSIONS}])
    client = sim_alone.client(max_network_retries=0)

    with pytest.raises(stripe.APIError) as err:
        client.v1.checkout.sessions.create(session_params(), {"idempotency_key": "k-edge"})

    assert err.value.http_status == 500
    assert header(err.value, "Stripe-Should-Retry") == "true"
    assert client.v1.checkout.sessions.list().data == []
    made = client.v1.checkout.sessions.create(session_params(), {"idempotency_key": "k-edge"})
    assert made.last_response is not None
    assert "Idempotent-Replayed" not in made.last_response.headers


def test_a_5xx_after_the_request_ran_uses_up_its_key_and_is_replayed(sim_alone: Sim) -> None:
    state = set_faults(
        sim_alone, api_errors_after_execution=[{"method": "POST", "path_prefix": SESSIONS}]
    )
    assert state["api_errors_after_execution"] == [
        {"method": "POST", "path_prefix": SESSIONS, "count": 1, "status": 500}
    ]
    client = sim_alone.client(max_network_retries=0)

    with pytest.raises(stripe.APIError) as first:
        client.v1.checkout.sessions.create(session_params(), {"idempotency_key": "k-ran"})
    with pytest.raises(stripe.APIError) as again:
        client.v1.checkout.sessions.create(session_params(), {"idempotency_key": "k-ran"})

    # The session was made: Stripe acted, only its answer is an error.
    assert len(client.v1.checkout.sessions.list().data) == 1
    for err in (first.value, again.value):
        assert err.http_status == 500
        assert header(err, "Stripe-Should-Retry") == "false"
    assert header(first.value, "Idempotent-Replayed") is None
    assert header(again.value, "Idempotent-Replayed") == "true"
    assert header(again.value, "Original-Request") == first.value.request_id
    assert first.value.json_body == again.value.json_body
    counters = httpx.get(f"{sim_alone.url}/_sim/faults").json()["counters"]
    assert counters["api_errors_after_execution"] == 1
    # Another key is another request: it runs (the rule was used up by the first).
    client.v1.checkout.sessions.create(session_params(), {"idempotency_key": "k-new"})
    assert len(client.v1.checkout.sessions.list().data) == 2


def test_the_sdk_honours_stripes_advice_not_to_retry(sim_alone: Sim) -> None:
    set_faults(sim_alone, api_errors_after_execution=[{"method": "POST", "path_prefix": SESSIONS}])
    client = sim_alone.client(max_network_retries=3)

    with pytest.raises(stripe.APIError):
        client.v1.checkout.sessions.create(session_params(), {"idempotency_key": "k-sdk"})

    # One request only: the SDK did not ask again for an answer Stripe said would not change.
    assert len(client.v1.checkout.sessions.list().data) == 1


def test_a_request_that_failed_validation_does_not_use_up_an_after_execution_fault(
    sim_alone: Sim,
) -> None:
    set_faults(sim_alone, api_errors_after_execution=[{"method": "POST", "path_prefix": SESSIONS}])
    client = sim_alone.client(max_network_retries=0)

    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.create(session_params(mode="setup"))

    # Nothing ran, so nothing was answered with the fault: it waits for a request that runs.
    assert client.v1.checkout.sessions.list().data == []
    armed = httpx.get(f"{sim_alone.url}/_sim/faults").json()["api_errors_after_execution"]
    assert [rule["count"] for rule in armed] == [1]
