"""`payment_method_types` on Checkout Session creation: the simulator keeps the list it was
given and offers the buyer only those methods; without one, whatever the account enables (a card
or a delayed bank debit) may pay."""

from __future__ import annotations

import httpx
import pytest
import stripe

from tests.support.stripe_sim import Sim, raw_json, session_params


def pay(sim: Sim, session_id: str, payment_method: str) -> httpx.Response:
    return httpx.post(
        f"{sim.url}/_sim/sessions/{session_id}/pay", json={"payment_method": payment_method}
    )


def test_a_card_only_session_refuses_a_delayed_bank_debit(
    sim: Sim, client: stripe.StripeClient
) -> None:
    session = client.v1.checkout.sessions.create(session_params(payment_method_types=["card"]))
    assert raw_json(session)["payment_method_types"] == ["card"]

    refused = pay(sim, session.id, "delayed")

    assert refused.status_code == 400
    assert refused.json()["error"]["type"] == "invalid_request_error"
    assert "card" in refused.json()["error"]["message"]
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"
    assert pay(sim, session.id, "card").status_code == 200


def test_a_bank_debit_only_session_refuses_a_card(sim: Sim, client: stripe.StripeClient) -> None:
    session = client.v1.checkout.sessions.create(
        session_params(payment_method_types=["sepa_debit"])
    )
    assert raw_json(session)["payment_method_types"] == ["sepa_debit"]

    assert pay(sim, session.id, "card").status_code == 400
    assert pay(sim, session.id, "card_refund_fails").status_code == 400
    paid = pay(sim, session.id, "delayed")

    assert paid.status_code == 200
    assert paid.json()["data"]["object"]["payment_status"] == "unpaid"  # processing, as SEPA is


def test_the_hosted_page_cannot_pay_by_card_what_allows_no_card(
    sim: Sim, client: stripe.StripeClient
) -> None:
    session = client.v1.checkout.sessions.create(
        session_params(payment_method_types=["sepa_debit"])
    )

    page = httpx.post(f"{sim.url}/pay/{session.id}", data={"outcome": "pay"})

    assert page.status_code == 400
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"


def test_without_a_list_any_method_the_account_enables_may_pay(
    sim: Sim, client: stripe.StripeClient
) -> None:
    card = client.v1.checkout.sessions.create(session_params())
    delayed = client.v1.checkout.sessions.create(session_params())

    assert pay(sim, card.id, "card").status_code == 200
    assert pay(sim, delayed.id, "delayed").status_code == 200


def test_an_unknown_method_type_is_refused_by_index(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.checkout.sessions.create(
            session_params(payment_method_types=["card", "carrier_pigeon"])
        )
    assert (err.value.http_status, err.value.param) == (400, "payment_method_types[1]")


def test_a_bank_debit_in_a_currency_it_cannot_collect_is_refused(
    client: stripe.StripeClient,
) -> None:
    # SEPA Direct Debit collects euros only; the session's lines are in euros, so ask in dollars.
    usd = session_params(payment_method_types=["sepa_debit"])
    for line in usd["line_items"]:
        line["price_data"]["currency"] = "usd"

    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.checkout.sessions.create(usd)
    assert (err.value.http_status, err.value.param) == (400, "payment_method_types")
    assert "usd" in str(err.value.user_message)
