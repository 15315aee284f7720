"""When the gateway tries a Stripe call again: Stripe's own `Stripe-Should-Retry` answer first,
the status code only when Stripe gives none (as the official SDKs decide)."""

from __future__ import annotations

import pytest
import stripe

from services.payments.stripe_gateway import is_transient


def api_error(status: int, **headers: str) -> stripe.StripeError:
    return stripe.APIError("stripe says no", http_status=status, headers=headers)


def invalid_request(status: int, **headers: str) -> stripe.StripeError:
    return stripe.InvalidRequestError("stripe says no", None, http_status=status, headers=headers)


def test_a_5xx_stripe_says_not_to_retry_is_final() -> None:
    # Stripe kept this 500 for the idempotency key: the same key gets the same 500 back.
    assert not is_transient(api_error(500, **{"Stripe-Should-Retry": "false"}))


def test_a_status_never_retried_is_retried_when_stripe_says_so() -> None:
    # E.g. a lock timeout: a 400 that Stripe marks safe and worth repeating.
    assert is_transient(invalid_request(400, **{"Stripe-Should-Retry": "true"}))


@pytest.mark.parametrize("name", ["stripe-should-retry", "STRIPE-SHOULD-RETRY"])
def test_the_header_name_is_matched_whatever_its_case(name: str) -> None:
    assert not is_transient(api_error(503, **{name: "false"}))
    assert is_transient(invalid_request(400, **{name: "true"}))


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (api_error(500), True),
        (api_error(503), True),
        (invalid_request(409), True),
        (invalid_request(429), True),
        (invalid_request(400), False),
        (invalid_request(404), False),
        # A value Stripe never sends is no advice: the status decides.
        (api_error(500, **{"Stripe-Should-Retry": "maybe"}), True),
        (stripe.APIConnectionError("connection reset"), True),
    ],
)
def test_without_stripes_advice_the_status_decides(
    error: stripe.StripeError, transient: bool
) -> None:
    assert is_transient(error) is transient
