"""Fixtures of the Stripe simulator's own tests (tests/component/stripe_sim/): one simulator
and one webhook receiver per test module, and Stripe's example objects."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from tests.support.stripe_sim import Receiver, Sim, running_sim, stripe_fixtures, webhook_receiver


@pytest.fixture(scope="module")
def fixtures() -> dict[str, Any]:
    return stripe_fixtures()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as r:
        yield r


@pytest.fixture(scope="module")
def sim(receiver: Receiver) -> Iterator[Sim]:
    with running_sim(receiver=receiver) as s:
        yield s


@pytest.fixture
def client(sim: Sim) -> stripe.StripeClient:
    return sim.client()
