"""Checkout Session creation within Stripe's documented limits, through the official `stripe`
SDK: at most 100 line items, idempotency keys of at most 255 characters, a total between the
currency's minimum charge and eight digits. A request past a limit is refused with Stripe's error
type and code, creates nothing and leaves its idempotency key unused."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from tests.support.stripe_sim import session_params


def lines(count: int, unit_amount: int = 100, currency: str = "eur") -> list[dict[str, Any]]:
    return [
        {
            "price_data": {
                "currency": currency,
                "unit_amount": unit_amount,
                "product_data": {"name": f"item {i}"},
            },
            "quantity": 1,
        }
        for i in range(count)
    ]


def created_sessions(client: stripe.StripeClient, reference: str) -> int:
    listed = client.v1.checkout.sessions.list({"limit": 100}).data
    return sum(1 for s in listed if s.client_reference_id == reference)


def test_a_session_takes_at_most_100_line_items(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError, match="at most 100 line items") as err:
        client.v1.checkout.sessions.create(
            session_params(line_items=lines(101), client_reference_id="too-many-lines")
        )
    assert (err.value.http_status, err.value.param) == (400, "line_items")
    assert created_sessions(client, "too-many-lines") == 0

    made = client.v1.checkout.sessions.create(session_params(line_items=lines(100)))
    assert made.amount_total == 100 * 100


def test_an_idempotency_key_longer_than_255_characters_is_refused(
    client: stripe.StripeClient,
) -> None:
    too_long = "k" * 256
    with pytest.raises(stripe.InvalidRequestError, match="1-255 characters") as err:
        client.v1.checkout.sessions.create(
            session_params(client_reference_id="long-key"), {"idempotency_key": too_long}
        )
    assert err.value.http_status == 400
    assert created_sessions(client, "long-key") == 0

    longest = "k" * 255
    first = client.v1.checkout.sessions.create(session_params(), {"idempotency_key": longest})
    again = client.v1.checkout.sessions.create(session_params(), {"idempotency_key": longest})
    assert again.id == first.id


@pytest.mark.parametrize(
    ("currency", "minimum"),
    [("eur", 50), ("usd", 50), ("gbp", 30), ("chf", 50), ("jpy", 50), ("sek", 300)],
)
def test_a_total_below_the_currencys_minimum_charge_is_amount_too_small(
    client: stripe.StripeClient, currency: str, minimum: int
) -> None:
    reference = f"small-{currency}"
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.checkout.sessions.create(
            session_params(
                line_items=lines(1, minimum - 1, currency), client_reference_id=reference
            )
        )
    assert (err.value.http_status, err.value.code) == (400, "amount_too_small")
    assert currency in str(err.value.user_message)
    assert created_sessions(client, reference) == 0

    made = client.v1.checkout.sessions.create(
        session_params(line_items=lines(1, minimum, currency))
    )
    assert (made.amount_total, made.currency) == (minimum, currency)


def test_a_total_of_more_than_eight_digits_is_amount_too_large(
    client: stripe.StripeClient,
) -> None:
    # Two lines under the limit each: it is what the session would charge that counts.
    over = lines(2, 50_000_000)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.checkout.sessions.create(
            session_params(line_items=over, client_reference_id="too-large")
        )
    assert (err.value.http_status, err.value.code) == (400, "amount_too_large")
    assert created_sessions(client, "too-large") == 0

    made = client.v1.checkout.sessions.create(session_params(line_items=lines(1, 99_999_999)))
    assert made.amount_total == 99_999_999


def test_a_refused_total_leaves_the_idempotency_key_unused(client: stripe.StripeClient) -> None:
    key = "order-limits:create_session"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.create(
            session_params(line_items=lines(1, 10)), {"idempotency_key": key}
        )
    # Stripe keeps no answer for a request that failed validation: the corrected one runs.
    made = client.v1.checkout.sessions.create(session_params(), {"idempotency_key": key})
    assert made.amount_total == 3499
