"""Outside demo mode there are no Stripe defaults: without its key and webhook secret the
service refuses to start, saying which setting is missing and never printing a secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.payments.bootstrap import StripeNotConfigured, build
from services.payments.settings import (
    DEMO_STRIPE_API_KEY,
    DEMO_STRIPE_WEBHOOK_SECRET,
    PaymentsSettings,
)
from shared.memory_bus import MemoryBus
from tests.support.payments import payments_settings
from tests.support.rig import sqlite_url

SECRET_KEY = "sk_test_do_not_print_me_4711"


def clean_env(tmp_path: Path, **payments_env: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_")}
    env["PAYMENTS_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path}/payments.db"
    env.update(payments_env)
    return env


def start_service(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.payments", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_stripe_secrets_the_process_refuses_to_start(tmp_path: Path) -> None:
    refused = start_service(clean_env(tmp_path))

    assert refused.returncode == 2
    assert "payments refuses to start" in refused.stderr
    assert "PAYMENTS_STRIPE_API_KEY and PAYMENTS_STRIPE_WEBHOOK_SECRET must be set" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr


def test_with_only_the_key_it_names_the_missing_secret_and_never_prints_the_key(
    tmp_path: Path,
) -> None:
    refused = start_service(clean_env(tmp_path, PAYMENTS_STRIPE_API_KEY=SECRET_KEY))

    assert refused.returncode == 2
    assert "PAYMENTS_STRIPE_WEBHOOK_SECRET must be set" in refused.stderr
    assert "PAYMENTS_STRIPE_API_KEY" not in refused.stderr
    assert SECRET_KEY not in refused.stderr + refused.stdout


def test_build_refuses_settings_without_secrets(tmp_path: Path) -> None:
    settings = payments_settings(
        sqlite_url(tmp_path / "payments.db"), stripe_api_key="", stripe_webhook_secret=" "
    )

    with pytest.raises(StripeNotConfigured) as refused:
        build(settings, bus=MemoryBus())

    assert refused.value.missing == ["PAYMENTS_STRIPE_API_KEY", "PAYMENTS_STRIPE_WEBHOOK_SECRET"]


def test_demo_mode_falls_back_to_the_simulators_test_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PAYMENTS_STRIPE_API_KEY", "PAYMENTS_STRIPE_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PAYMENTS_DEMO_MODE", "true")

    demo = PaymentsSettings()

    assert demo.stripe_api_key.get_secret_value() == DEMO_STRIPE_API_KEY
    assert demo.stripe_webhook_secret.get_secret_value() == DEMO_STRIPE_WEBHOOK_SECRET
    assert demo.missing_secrets() == []
    assert DEMO_STRIPE_API_KEY not in repr(demo)


def test_demo_mode_keeps_secrets_that_were_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENTS_DEMO_MODE", "true")
    monkeypatch.setenv("PAYMENTS_STRIPE_API_KEY", SECRET_KEY)

    assert PaymentsSettings().stripe_api_key.get_secret_value() == SECRET_KEY


def test_an_insecure_api_base_is_refused_naming_it_and_never_printing_the_key(
    tmp_path: Path,
) -> None:
    env = clean_env(
        tmp_path,
        PAYMENTS_STRIPE_API_KEY=SECRET_KEY,
        PAYMENTS_STRIPE_WEBHOOK_SECRET="whsec_x",
        PAYMENTS_CHECKOUT_SUCCESS_URL="https://shop.example/paid",
        PAYMENTS_STRIPE_API_BASE="http://127.0.0.1:12111",
    )

    refused = start_service(env)

    assert refused.returncode == 2
    assert "payments refuses to start" in refused.stderr
    assert "PAYMENTS_STRIPE_API_BASE must be an https:// URL" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert SECRET_KEY not in refused.stderr + refused.stdout
