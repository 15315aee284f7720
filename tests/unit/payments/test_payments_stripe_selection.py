"""How `./run stack` and the demo pick the Stripe payments talks to, from the environment: the
bundled simulator unless a Stripe test key (sk_test_…) is given without PAYMENTS_STRIPE_API_BASE;
then Stripe's own API in test mode, with the webhook secret `stripe listen` prints. Live keys are
refused: neither ever charges real money. Whatever is picked passes payments' own startup checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from demo.app import DEMO_STRIPE_KEY, demo_stripe
from devstack.stack import Stack, real_stripe_env
from services.payments.settings import STRIPE_API_BASE, PaymentsSettings, StripeChoiceRefused

TEST_KEY = "sk_test_51Abc_real_test_mode_key"
LISTEN_SECRET = "whsec_from_stripe_listen"


def real_test_mode(**extra: str) -> dict[str, str]:
    return {
        "PAYMENTS_STRIPE_API_KEY": TEST_KEY,
        "PAYMENTS_STRIPE_WEBHOOK_SECRET": LISTEN_SECRET,
        **extra,
    }


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> PaymentsSettings:
    """Payments' settings as the process would read them from `env`."""
    for name in [n for n in os.environ if n.startswith("PAYMENTS_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("PAYMENTS_"):
            monkeypatch.setenv(name, value)
    return PaymentsSettings()


# --- ./run stack -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"PAYMENTS_STRIPE_API_KEY": "sk_test_sim"} | {"PAYMENTS_STRIPE_API_BASE": "http://x"},
        real_test_mode(PAYMENTS_STRIPE_API_BASE="https://stripe-proxy.example"),
    ],
)
def test_the_stack_keeps_the_simulator_unless_a_test_key_comes_without_a_base(
    environ: dict[str, str],
) -> None:
    assert real_stripe_env(environ) is None


def test_a_test_key_without_a_base_selects_stripes_test_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = real_stripe_env(real_test_mode())

    assert env is not None
    assert env["PAYMENTS_STRIPE_API_BASE"] == STRIPE_API_BASE
    assert env["PAYMENTS_ALLOW_INSECURE_STRIPE_BASE"] == "false"
    settings = settings_from(env, monkeypatch)
    assert settings.stripe_api_key.get_secret_value() == TEST_KEY
    assert settings.stripe_webhook_secret.get_secret_value() == LISTEN_SECRET
    assert settings.missing_settings() == []


def test_a_success_page_of_ones_own_is_kept_in_test_mode() -> None:
    env = real_stripe_env(real_test_mode(PAYMENTS_CHECKOUT_SUCCESS_URL="https://me.example/ok"))
    assert env is not None and env["PAYMENTS_CHECKOUT_SUCCESS_URL"] == "https://me.example/ok"


def test_test_mode_without_the_webhook_secret_is_refused_saying_where_it_comes_from() -> None:
    with pytest.raises(StripeChoiceRefused, match="stripe listen --print-secret"):
        real_stripe_env({"PAYMENTS_STRIPE_API_KEY": TEST_KEY})


@pytest.mark.parametrize("key", ["sk_live_51Abc", "rk_live_51Abc"])
def test_the_stack_refuses_a_live_key(key: str) -> None:
    with pytest.raises(StripeChoiceRefused, match="test mode") as refused:
        real_stripe_env(real_test_mode(PAYMENTS_STRIPE_API_KEY=key))
    assert key not in str(refused.value)


def test_the_stacks_payments_pass_payments_startup_checks_on_the_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = Stack(
        "unit",
        {s: f"postgresql+asyncpg://x/{s}" for s in ("cart", "orders", "payments", "provisioning")},
        "amqp://guest:guest@127.0.0.1:5672/",
        tmp_path,
    )
    stack.prepare()

    settings = settings_from(stack.procs["payments"].env, monkeypatch)

    assert settings.stripe_api_base == stack.url("stripe_sim")
    assert settings.allow_insecure_stripe_base
    assert settings.missing_settings() == []


# --- the demo --------------------------------------------------------------------------------

BASE = "http://127.0.0.1:8000"


def demo_settings(fields: dict[str, Any]) -> PaymentsSettings:
    return PaymentsSettings(demo_mode=True, **fields)


def test_the_demo_uses_its_bundled_simulator_by_default() -> None:
    choice = demo_stripe({}, BASE)

    assert not choice.real
    settings = demo_settings(choice.settings)
    assert settings.stripe_api_base == f"{BASE}/stripe"
    assert settings.stripe_api_key.get_secret_value() == DEMO_STRIPE_KEY


def test_the_demo_uses_stripes_test_mode_for_a_test_key_without_a_base() -> None:
    choice = demo_stripe(real_test_mode(), BASE)

    assert choice.real
    settings = demo_settings(choice.settings)
    assert settings.stripe_api_base == STRIPE_API_BASE
    assert settings.stripe_api_key.get_secret_value() == TEST_KEY
    assert settings.stripe_webhook_secret.get_secret_value() == LISTEN_SECRET
    # Stripe sends the shopper back to the demo's own pages.
    assert settings.checkout_success_url.startswith(f"{BASE}/done?order=")


def test_the_demo_refuses_a_live_key_and_test_mode_without_its_webhook_secret() -> None:
    with pytest.raises(StripeChoiceRefused, match="test mode"):
        demo_stripe(real_test_mode(PAYMENTS_STRIPE_API_KEY="sk_live_51Abc"), BASE)
    with pytest.raises(StripeChoiceRefused, match="PAYMENTS_STRIPE_WEBHOOK_SECRET"):
        demo_stripe({"PAYMENTS_STRIPE_API_KEY": TEST_KEY}, BASE)
