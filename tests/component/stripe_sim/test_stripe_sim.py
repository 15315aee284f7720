"""The Stripe simulator, driven over real HTTP by the official `stripe` SDK (never mocked)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import stripe

from simulators.stripe.app import parse_params
from simulators.stripe.objects import (
    TEMPLATES_PATH,
    TEMPLATES_SOURCE,
    ParamError,
    extract_templates,
)
from tests.support.stripe_sim import (
    API_KEY,
    FIXTURES_PATH,
    WEBHOOK_SECRET,
    Delivery,
    Receiver,
    Sim,
    raw_json,
    running_sim,
    session_params,
    webhook_receiver,
)


def pay_via_page(sim: Sim, session_id: str) -> httpx.Response:
    return httpx.post(f"{sim.url}/pay/{session_id}", data={"outcome": "pay"})


def next_event(receiver: Receiver, type_: str, object_id: str) -> Delivery:
    """The next delivery of ``type_`` for ``object_id``; other tests' events are skipped."""
    deadline = time.monotonic() + 5
    while True:
        delivery = receiver.next(timeout=max(deadline - time.monotonic(), 0.01))
        event = json.loads(delivery.body)
        if event["type"] == type_ and event["data"]["object"]["id"] == object_id:
            return delivery


# --- 1. created session, parsed by the SDK -----------------------------------------


def test_create_session_is_parsed_by_sdk(sim: Sim, client: stripe.StripeClient) -> None:
    session = client.v1.checkout.sessions.create(session_params(currency="eur"))

    assert isinstance(session, stripe.checkout.Session)
    assert session.id.startswith("cs_test_")
    assert session.amount_subtotal == session.amount_total == 2 * 1500 + 499
    assert session.currency == "eur"
    assert session.url == f"{sim.url}/pay/{session.id}"
    assert (session.status, session.payment_status) == ("open", "unpaid")
    assert session.client_reference_id == "order-123"
    assert session.metadata is not None
    assert session.metadata.to_dict() == {"order_id": "order-123"}
    assert session.payment_intent is None  # created lazily, on payment
    assert session.livemode is False
    now = time.time()
    assert now + 23 * 3600 < session.expires_at <= now + 24 * 3600 + 5


def test_retrieve_accepts_expand_payment_intent(sim: Sim, client: stripe.StripeClient) -> None:
    created = client.v1.checkout.sessions.create(session_params())
    open_session = client.v1.checkout.sessions.retrieve(created.id, {"expand": ["payment_intent"]})
    assert open_session.payment_intent is None

    pay_via_page(sim, created.id)
    paid = client.v1.checkout.sessions.retrieve(created.id, {"expand": ["payment_intent"]})
    assert isinstance(paid.payment_intent, stripe.PaymentIntent)
    assert paid.payment_intent.status == "succeeded"
    assert paid.payment_intent.amount == paid.amount_total
    assert client.v1.payment_intents.retrieve(paid.payment_intent.id).id == paid.payment_intent.id


async def test_async_create_with_default_and_httpx_clients(sim: Sim) -> None:
    # StripeClient's default http client is requests-based with an httpx async fallback;
    # an explicit HTTPXClient must work too.
    for client in (sim.client(), sim.client(http_client=stripe.HTTPXClient())):
        session = await client.v1.checkout.sessions.create_async(session_params())
        assert isinstance(session, stripe.checkout.Session)
        fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
        assert fetched.amount_total == 3499


# --- 2. field sets match Stripe's example objects ---------------------------------


def test_templates_json_is_extracted_from_the_fixture() -> None:
    fixtures = json.loads(FIXTURES_PATH.read_text(encoding="utf-8"))
    templates = json.loads(TEMPLATES_PATH.read_text(encoding="utf-8"))
    assert templates == extract_templates(fixtures)
    assert templates["_source"] == TEMPLATES_SOURCE


def test_session_and_event_have_every_fixture_field(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver, fixtures: dict[str, Any]
) -> None:
    # Equality, not just inclusion: the simulator must not invent fields either.
    session = client.v1.checkout.sessions.create(session_params())
    assert set(raw_json(session)) == set(fixtures["checkout.session"])

    pay_via_page(sim, session.id)
    event = json.loads(next_event(receiver, "checkout.session.completed", session.id).body)
    assert set(event) == set(fixtures["event"])
    assert set(event["data"]["object"]) == set(fixtures["checkout.session"])

    retrieved = client.v1.events.retrieve(event["id"])
    assert set(raw_json(retrieved)) == set(fixtures["event"])
    expanded = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["payment_intent"]})
    assert set(raw_json(expanded)["payment_intent"]) == set(fixtures["payment_intent"])


# --- 3. idempotency --------------------------------------------------------------------


def test_idempotent_replay_and_mismatch(client: stripe.StripeClient) -> None:
    key = f"order-create-{time.time_ns()}"
    first = client.v1.checkout.sessions.create(session_params(), {"idempotency_key": key})
    again = client.v1.checkout.sessions.create(session_params(), {"idempotency_key": key})

    assert again.id == first.id
    assert raw_json(again) == raw_json(first)
    assert again.last_response is not None and first.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert again.last_response.headers["Original-Request"] == first.last_response.request_id
    assert again.last_response.idempotency_key == key

    with pytest.raises(stripe.IdempotencyError) as changed:
        client.v1.checkout.sessions.create(
            session_params(client_reference_id="other"), {"idempotency_key": key}
        )
    assert changed.value.http_status == 400
    assert "same parameters" in str(changed.value)

    with pytest.raises(stripe.IdempotencyError, match="same endpoint"):
        client.v1.checkout.sessions.expire(first.id, options={"idempotency_key": key})


def test_failed_validation_does_not_burn_the_idempotency_key(
    client: stripe.StripeClient,
) -> None:
    key = f"retry-after-fix-{time.time_ns()}"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.create(
            session_params(success_url="not a url"), {"idempotency_key": key}
        )
    fixed = client.v1.checkout.sessions.create(session_params(), {"idempotency_key": key})
    assert fixed.status == "open"


# --- 4. hosted page and signed webhooks -----------------------------------------------


def test_pay_on_hosted_page_delivers_a_verifiable_webhook(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    page = httpx.get(f"{sim.url}/pay/{session.id}")
    assert page.status_code == 200
    assert all(f"value='{o}'" in page.text for o in ("pay", "fail", "abandon"))

    response = pay_via_page(sim, session.id)
    assert response.status_code == 303
    assert response.headers["location"] == f"https://shop.example/success?session_id={session.id}"

    delivery = next_event(receiver, "checkout.session.completed", session.id)
    assert delivery.headers["content-type"].startswith("application/json")
    signature = delivery.headers["stripe-signature"]
    assert signature.startswith("t=") and ",v1=" in signature
    event = stripe.Webhook.construct_event(delivery.body, signature, WEBHOOK_SECRET)
    assert isinstance(event, stripe.Event)
    assert event.type == "checkout.session.completed"
    assert event.livemode is False
    assert event.api_version == sim.config.api_version
    assert event.request is not None
    assert event.request.id is None  # caused by the buyer, not by an API request
    completed = event.data.object
    assert completed["id"] == session.id
    assert completed["payment_status"] == "paid"
    assert completed["status"] == "complete"
    assert completed["payment_intent"].startswith("pi_")
    assert completed["client_reference_id"] == "order-123"
    assert completed["metadata"].to_dict() == {"order_id": "order-123"}

    tampered = delivery.body.replace(b'"paid"', b'"unpaid"')
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, signature, WEBHOOK_SECRET)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(delivery.body, signature, "whsec_wrong")

    fetched = client.v1.checkout.sessions.retrieve(session.id)
    assert (fetched.status, fetched.payment_status, fetched.url) == ("complete", "paid", None)
    # Paying twice is impossible.
    assert pay_via_page(sim, session.id).status_code == 400


def test_failed_card_keeps_session_open_and_abandon_redirects_to_cancel_url(
    sim: Sim, client: stripe.StripeClient
) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    failed = httpx.post(f"{sim.url}/pay/{session.id}", data={"outcome": "fail"})
    assert failed.status_code == 200 and "declined" in failed.text
    abandoned = httpx.post(f"{sim.url}/pay/{session.id}", data={"outcome": "abandon"})
    assert abandoned.status_code == 303
    assert abandoned.headers["location"] == "https://shop.example/cancel"

    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"
    events = client.v1.events.list({"limit": 100})
    assert all(e.data.object["id"] != session.id for e in events.data)


def test_webhook_is_retried_until_the_receiver_accepts_it(client: stripe.StripeClient) -> None:
    with webhook_receiver() as flaky, running_sim(webhook_url=flaky.url) as sim:
        flaky.fail_next = 2
        session = sim.client().v1.checkout.sessions.create(session_params())
        event = httpx.post(f"{sim.url}/_sim/sessions/{session.id}/pay").json()

        attempts = [flaky.next() for _ in range(3)]
        assert {json.loads(a.body)["id"] for a in attempts} == {event["id"]}
        for attempt in attempts:
            stripe.Webhook.construct_event(
                attempt.body, attempt.headers["stripe-signature"], WEBHOOK_SECRET
            )
        deadline = time.monotonic() + 5
        while sim.client().v1.events.retrieve(event["id"]).pending_webhooks != 0:
            assert time.monotonic() < deadline, "event still pending after delivery"
            time.sleep(0.05)


# --- 5. expiry -----------------------------------------------------------------------------


def test_expire_emits_event_and_refuses_non_open_sessions(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    expired = client.v1.checkout.sessions.expire(session.id)
    assert (expired.status, expired.payment_status, expired.url) == ("expired", "unpaid", None)

    event = stripe.Webhook.construct_event(
        (delivery := next_event(receiver, "checkout.session.expired", session.id)).body,
        delivery.headers["stripe-signature"],
        WEBHOOK_SECRET,
    )
    assert expired.last_response is not None
    assert event.request.id == expired.last_response.request_id
    assert event.request.idempotency_key == expired.last_response.idempotency_key
    listed = client.v1.events.list({"type": "checkout.session.expired", "limit": 100})
    assert event.id in {e.id for e in listed.data}

    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.checkout.sessions.expire(session.id)
    assert again.value.http_status == 400

    paid = client.v1.checkout.sessions.create(session_params())
    pay_via_page(sim, paid.id)
    with pytest.raises(stripe.InvalidRequestError, match="status of `complete`"):
        client.v1.checkout.sessions.expire(paid.id)


def test_sim_expire_now_and_clock_driven_expiry(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    forced = client.v1.checkout.sessions.create(session_params())
    event = httpx.post(f"{sim.url}/_sim/sessions/{forced.id}/expire_now").json()
    assert event["type"] == "checkout.session.expired"
    assert event["data"]["object"]["status"] == "expired"
    assert client.v1.checkout.sessions.retrieve(forced.id).status == "expired"

    abandoned = client.v1.checkout.sessions.create(
        session_params(expires_at=int(time.time()) + 1800)
    )
    sim.clock.offset += 1801  # the background sweeper expires it, as Stripe's clock would
    try:
        next_event(receiver, "checkout.session.expired", abandoned.id)
    finally:
        sim.clock.offset -= 1801
    assert client.v1.checkout.sessions.retrieve(abandoned.id).status == "expired"


@pytest.mark.parametrize(
    ("seconds_ahead", "message"),
    [(600, "at least 30 minutes"), (25 * 3600, "less than 24 hours")],
)
def test_expires_at_outside_stripe_bounds_is_rejected(
    client: stripe.StripeClient, seconds_ahead: int, message: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError, match=message) as err:
        client.v1.checkout.sessions.create(
            session_params(expires_at=int(time.time()) + seconds_ahead)
        )
    assert err.value.param == "expires_at"
    assert err.value.http_status == 400


# --- refunds ----------------------------------------------------------------------------


def test_refunds_are_idempotent_and_bounded(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver, fixtures: dict[str, Any]
) -> None:
    session = client.v1.checkout.sessions.create(session_params())
    pi_id = httpx.post(f"{sim.url}/_sim/sessions/{session.id}/pay").json()["data"]["object"][
        "payment_intent"
    ]
    key = f"refund-{time.time_ns()}"
    partial = client.v1.refunds.create(
        {"payment_intent": pi_id, "amount": 1000}, {"idempotency_key": key}
    )
    assert isinstance(partial, stripe.Refund)
    # Card refunds start pending; test_stripe_sim_payments.py follows them to succeeded.
    assert (partial.amount, partial.currency, partial.status) == (1000, "eur", "pending")
    assert partial.payment_intent == pi_id
    assert set(raw_json(partial)) == set(fixtures["refund"])
    replay = client.v1.refunds.create(
        {"payment_intent": pi_id, "amount": 1000}, {"idempotency_key": key}
    )
    assert replay.id == partial.id
    delivery = next_event(receiver, "refund.created", partial.id)
    stripe.Webhook.construct_event(
        delivery.body, delivery.headers["stripe-signature"], WEBHOOK_SECRET
    )

    with pytest.raises(stripe.InvalidRequestError) as too_much:
        client.v1.refunds.create({"payment_intent": pi_id, "amount": 5000})
    assert too_much.value.code == "amount_too_large"
    rest = client.v1.refunds.create({"payment_intent": pi_id})
    assert rest.amount == 3499 - 1000
    assert client.v1.refunds.retrieve(rest.id).amount == rest.amount
    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.refunds.create({"payment_intent": pi_id, "amount": 1})
    assert again.value.code == "charge_already_refunded"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.refunds.create({"payment_intent": "pi_unknown"})
    assert unknown.value.param == "payment_intent"


# --- 6. list pagination ------------------------------------------------------------------


def test_list_pagination_and_filters() -> None:
    with running_sim() as sim:
        client = sim.client()
        created = [client.v1.checkout.sessions.create(session_params()).id for _ in range(5)]
        newest_first = created[::-1]

        first = client.v1.checkout.sessions.list({"limit": 2})
        assert raw_json(first)["object"] == "list"
        assert raw_json(first)["url"] == "/v1/checkout/sessions"
        assert [s.id for s in first.data] == newest_first[:2]
        assert first.has_more is True
        second = client.v1.checkout.sessions.list({"limit": 2, "starting_after": first.data[-1].id})
        assert [s.id for s in second.data] == newest_first[2:4]
        third = client.v1.checkout.sessions.list({"limit": 2, "starting_after": second.data[-1].id})
        assert [s.id for s in third.data] == newest_first[4:]
        assert third.has_more is False
        back = client.v1.checkout.sessions.list({"limit": 2, "ending_before": third.data[0].id})
        assert [s.id for s in back.data] == newest_first[2:4]
        assert [s.id for s in first.auto_paging_iter()] == newest_first

        client.v1.checkout.sessions.expire(created[0])
        event = httpx.post(f"{sim.url}/_sim/sessions/{created[1]}/pay").json()
        pi_id = event["data"]["object"]["payment_intent"]
        assert [s.id for s in client.v1.checkout.sessions.list({"status": "expired"})] == [
            created[0]
        ]
        by_pi = client.v1.checkout.sessions.list({"payment_intent": pi_id})
        assert [s.id for s in by_pi.data] == [created[1]]
        open_page = client.v1.checkout.sessions.list(
            {"status": "open", "limit": 1, "starting_after": created[2]}
        )
        assert [s.id for s in open_page.data] == []  # older ones are expired or complete

        events = client.v1.events.list({"limit": 1})
        assert events.has_more is True
        assert events.data[0].type == "checkout.session.completed"
        older = client.v1.events.list({"limit": 1, "starting_after": events.data[0].id})
        assert older.data[0].type == "checkout.session.expired"
        assert older.has_more is False

        with pytest.raises(stripe.InvalidRequestError) as bad_cursor:
            client.v1.checkout.sessions.list({"starting_after": "cs_test_nope"})
        assert bad_cursor.value.param == "starting_after"
        with pytest.raises(stripe.InvalidRequestError):
            client.v1.checkout.sessions.list({"limit": 101})


# --- 7. authentication and other errors ------------------------------------------------


def test_wrong_api_key_is_an_authentication_error(sim: Sim) -> None:
    with pytest.raises(stripe.AuthenticationError) as err:
        sim.client("sk_test_wrong_key_1234").v1.checkout.sessions.create(session_params())
    assert err.value.http_status == 401
    assert isinstance(err.value.json_body, dict)
    assert err.value.json_body["error"]["type"] == "invalid_request_error"
    assert "sk_test_wrong_key_1234" not in str(err.value)  # the key is masked

    missing = httpx.get(f"{sim.url}/v1/checkout/sessions")
    assert missing.status_code == 401
    assert "did not provide an API key" in missing.json()["error"]["message"]
    basic = httpx.get(f"{sim.url}/v1/checkout/sessions", auth=(API_KEY, ""))
    assert basic.status_code == 200


def test_unknown_ids_params_and_routes(sim: Sim, client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.checkout.sessions.retrieve("cs_test_does_not_exist")
    assert missing.value.http_status == 404
    assert missing.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as no_event:
        client.v1.events.retrieve("evt_nope")
    assert no_event.value.http_status == 404

    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.checkout.sessions.create(session_params(locale="fr"))
    assert unknown.value.code == "parameter_unknown"
    assert unknown.value.param == "locale"

    before = client.v1.checkout.sessions.list({"limit": 1}).data[0].id
    with pytest.raises(stripe.InvalidRequestError) as bad_expand:
        client.v1.checkout.sessions.create(session_params(expand=["line_items"]))
    assert bad_expand.value.param == "expand"
    assert client.v1.checkout.sessions.list({"limit": 1}).data[0].id == before  # nothing created

    with pytest.raises(stripe.InvalidRequestError) as currency:
        client.v1.checkout.sessions.create(session_params(currency="usd"))
    assert currency.value.param == "currency"

    params = session_params()
    del params["success_url"]
    with pytest.raises(stripe.InvalidRequestError) as no_url:
        client.v1.checkout.sessions.create(params)
    assert (no_url.value.code, no_url.value.param) == ("parameter_missing", "success_url")

    params = session_params()
    params["line_items"][0]["quantity"] = "two"
    with pytest.raises(stripe.InvalidRequestError) as bad_int:
        client.v1.checkout.sessions.create(params)
    assert bad_int.value.param == "line_items[0][quantity]"

    route = httpx.get(f"{sim.url}/v1/nothing_here", headers={"Authorization": f"Bearer {API_KEY}"})
    assert route.status_code == 404
    assert route.json()["error"]["type"] == "invalid_request_error"


def test_form_encoding_by_hand(sim: Sim) -> None:
    """curl-style bodies: `[]` arrays, bracketed hashes, expand[] on retrieve."""
    body = (
        "mode=payment&success_url=https%3A%2F%2Fshop.example%2Fok"
        "&line_items[0][price_data][currency]=USD"
        "&line_items[0][price_data][unit_amount]=250"
        "&line_items[0][price_data][product_data][name]=Server"
        "&line_items[0][quantity]=3&metadata[order_id]=o-9&customer_email=a%40b.example"
    )
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    created = httpx.post(f"{sim.url}/v1/checkout/sessions", content=body, headers=headers)
    assert created.status_code == 200, created.text
    session = created.json()
    assert (session["amount_total"], session["currency"]) == (750, "usd")
    assert session["customer_email"] == "a@b.example"
    assert created.headers["request-id"].startswith("req_")
    fetched = httpx.get(
        f"{sim.url}/v1/checkout/sessions/{session['id']}?expand[]=payment_intent", headers=headers
    )
    assert fetched.status_code == 200
    assert fetched.json()["metadata"] == {"order_id": "o-9"}
    assert httpx.get(f"{sim.url}/_sim/health").json() == {"ok": True}


def test_parse_params() -> None:
    pairs = [
        ("line_items[0][price_data][unit_amount]", "100"),
        ("line_items[0][quantity]", "1"),
        ("line_items[1][quantity]", "2"),
        ("expand[]", "a"),
        ("expand[]", "b"),
        ("metadata[0]", "zero"),
        ("mode", "payment"),
    ]
    assert parse_params(pairs) == {
        "line_items": [{"price_data": {"unit_amount": "100"}, "quantity": "1"}, {"quantity": "2"}],
        "expand": ["a", "b"],
        "metadata": {"0": "zero"},
        "mode": "payment",
    }
    with pytest.raises(ParamError):
        parse_params([("a", "1"), ("a[b]", "2")])
    with pytest.raises(ParamError):
        parse_params([("a", "1"), ("a", "2")])
    with pytest.raises(ParamError):
        parse_params([("a]b", "1")])


def test_webhook_attempts_rotate_over_several_receivers_like_a_load_balancer() -> None:
    # Two payments replicas behind one endpoint: while one is down, a retry reaches the other.
    with (
        webhook_receiver() as down,
        webhook_receiver() as up,
        running_sim(webhook_url=f"{down.url},{up.url}") as sim,
    ):
        down.fail_next = 100
        session = sim.client().v1.checkout.sessions.create(session_params())
        event = httpx.post(f"{sim.url}/_sim/sessions/{session.id}/pay").json()

        delivered = up.next()
        assert json.loads(delivered.body)["id"] == event["id"]
        stripe.Webhook.construct_event(
            delivered.body, delivered.headers["stripe-signature"], WEBHOOK_SECRET
        )
        deadline = time.monotonic() + 5
        while sim.client().v1.events.retrieve(event["id"]).pending_webhooks != 0:
            assert time.monotonic() < deadline, "event still pending after delivery"
            time.sleep(0.05)
