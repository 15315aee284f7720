"""When a transiently failing message is tried again, and when it is given up."""

from __future__ import annotations

import pytest

from shared.delivery import (
    ATTEMPTS_HEADER,
    DEFAULT_BACKOFF,
    DEFAULT_HORIZON,
    FIRST_FAILURE_HEADER,
    RetryPolicy,
)
from shared.settings import ServiceSettings

NOW = 1_790_000_000.0


def test_the_first_failure_waits_the_first_delay_and_starts_the_clock() -> None:
    plan = RetryPolicy(backoff=(1.0, 5.0), horizon=60.0).plan(
        attempts=0, first_failure=None, now=NOW
    )
    assert (plan.attempt, plan.first_failure, plan.delay) == (1, NOW, 1.0)


def test_delays_grow_along_the_schedule_and_then_stay_at_the_cap() -> None:
    policy = RetryPolicy(backoff=(1.0, 5.0, 30.0), horizon=3600.0)
    delays = [policy.plan(attempts=n, first_failure=NOW, now=NOW + 1).delay for n in range(6)]
    assert delays == [1.0, 5.0, 30.0, 30.0, 30.0, 30.0]


def test_a_failure_at_the_horizon_is_given_up_whatever_the_attempt_count() -> None:
    policy = RetryPolicy(backoff=(1.0,), horizon=60.0)
    assert policy.plan(attempts=1, first_failure=NOW, now=NOW + 59.9).delay == 1.0
    given_up = policy.plan(attempts=1, first_failure=NOW, now=NOW + 60.0)
    assert given_up.delay is None
    assert given_up.attempt == 2


def test_the_headers_carry_the_count_and_the_first_failure_as_integers() -> None:
    plan = RetryPolicy().plan(attempts=2, first_failure=NOW + 0.123, now=NOW + 10)
    headers = plan.headers("ConnectionRefusedError: x" * 100)
    assert headers[ATTEMPTS_HEADER] == 3
    # An integer: a float header may travel as 32 bits, which rounds an epoch to minutes.
    assert headers[FIRST_FAILURE_HEADER] == round((NOW + 0.123) * 1000)
    assert all(isinstance(v, int | str) for v in headers.values())


def test_the_defaults_wait_minutes_for_hours() -> None:
    assert max(DEFAULT_BACKOFF) >= 60
    assert DEFAULT_HORIZON >= 3600
    settings = ServiceSettings()
    assert settings.retry == RetryPolicy()
    assert settings.delivery_limit > 5


@pytest.mark.parametrize(("backoff", "horizon"), [((), 60.0), ((1.0, 0.0), 60.0), ((1.0,), 0.0)])
def test_a_policy_needs_positive_delays_and_horizon(
    backoff: tuple[float, ...], horizon: float
) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(backoff=backoff, horizon=horizon)


def test_the_schedule_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_BACKOFF_SECONDS", "[0.5, 2, 10]")
    monkeypatch.setenv("RETRY_HORIZON_SECONDS", "900")
    assert ServiceSettings().retry == RetryPolicy(backoff=(0.5, 2.0, 10.0), horizon=900.0)
