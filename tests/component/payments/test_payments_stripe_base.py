"""Which Stripe payments talks to, and where it sends the shopper back. Outside demo mode that is
never the simulator's plain-HTTP address by default: the API base is Stripe's own unless one is
given, a given one must be https:// unless the setup declares itself a development one
(PAYMENTS_ALLOW_INSECURE_STRIPE_BASE, as the dev stack and the tests do), and the page Stripe
sends the shopper to after paying must be configured."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from services.payments.bootstrap import StripeNotConfigured, build
from services.payments.settings import STRIPE_API_BASE, PaymentsSettings
from shared.memory_bus import MemoryBus

SECRET_KEY = "sk_test_do_not_print_me_4711"
SIMULATOR = "http://127.0.0.1:12111"


def production_like(**fields: Any) -> PaymentsSettings:
    """Settings as a deployment gives them: a key, a webhook secret and a success page."""
    values: dict[str, Any] = {
        "database_url": "sqlite+aiosqlite:///:memory:",
        "broker_url": "memory://",
        "stripe_api_key": SecretStr(SECRET_KEY),
        "stripe_webhook_secret": SecretStr("whsec_x"),
        "checkout_success_url": "https://shop.example/paid?order={ORDER_ID}",
        **fields,
    }
    return PaymentsSettings(**values)


@pytest.fixture(autouse=True)
def no_payments_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PAYMENTS_"):
            monkeypatch.delenv(name)


def test_without_an_api_base_payments_talks_to_stripes_own_api() -> None:
    assert production_like().stripe_api_base == STRIPE_API_BASE == "https://api.stripe.com"


def test_a_plain_http_api_base_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValidationError) as refused:
        production_like(stripe_api_base=SIMULATOR)

    message = str(refused.value)
    assert "PAYMENTS_STRIPE_API_BASE must be an https:// URL" in message
    assert "PAYMENTS_ALLOW_INSECURE_STRIPE_BASE" in message
    assert SECRET_KEY not in message


def test_an_https_api_base_is_taken_as_given() -> None:
    proxy = "https://stripe-egress.internal.example"
    assert production_like(stripe_api_base=proxy).stripe_api_base == proxy


def test_a_development_setup_may_use_the_simulators_plain_http_address() -> None:
    settings = production_like(stripe_api_base=SIMULATOR, allow_insecure_stripe_base=True)
    assert settings.stripe_api_base == SIMULATOR


def test_stripes_own_api_takes_only_a_stripe_secret_key() -> None:
    with pytest.raises(ValidationError) as refused:
        production_like(stripe_api_key=SecretStr("pk_test_publishable_4711"))

    message = str(refused.value)
    assert "PAYMENTS_STRIPE_API_KEY" in message
    assert "pk_test_publishable_4711" not in message
    assert production_like(stripe_api_key=SecretStr("rk_test_restricted")).stripe_api_base


def test_demo_mode_keeps_the_bundled_simulator_by_default() -> None:
    demo = PaymentsSettings(demo_mode=True)

    assert demo.stripe_api_base == SIMULATOR
    # ... and sends the shopper back to the demo's own pages, which the demo serves.
    assert demo.checkout_success_url.startswith("http://127.0.0.1:8000/done?order={ORDER_ID}")
    assert demo.checkout_cancel_url.startswith("http://127.0.0.1:8000/cancelled?order={ORDER_ID}")
    assert demo.missing_settings() == []


def test_outside_demo_mode_the_success_page_must_be_configured() -> None:
    settings = production_like(checkout_success_url="")

    with pytest.raises(StripeNotConfigured) as refused:
        build(settings, bus=MemoryBus())

    assert refused.value.missing == ["PAYMENTS_CHECKOUT_SUCCESS_URL"]
    assert "PAYMENTS_CHECKOUT_SUCCESS_URL must be set" in str(refused.value)


def test_the_cancel_page_is_optional() -> None:
    assert production_like().checkout_cancel_url == ""
    assert production_like().missing_settings() == []


@pytest.mark.parametrize(
    ("raw", "types"),
    [
        ("", ()),
        ("card", ("card",)),
        (" card , sepa_debit ", ("card", "sepa_debit")),
        ("card,card,us_bank_account", ("card", "us_bank_account")),
    ],
)
def test_the_allowed_payment_method_types_are_a_comma_list(
    raw: str, types: tuple[str, ...]
) -> None:
    assert production_like(payment_method_types=raw).allowed_payment_method_types == types


@pytest.mark.parametrize("raw", ["card,", "Card", "card;sepa_debit", "sepa debit"])
def test_a_malformed_method_list_is_refused(raw: str) -> None:
    with pytest.raises(ValidationError, match="PAYMENTS_PAYMENT_METHOD_TYPES"):
        production_like(payment_method_types=raw)
