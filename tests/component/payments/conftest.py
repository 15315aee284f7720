"""A payments service per test: temp SQLite file, in-process bus, real migrations; and one Stripe
simulator per test module for the tests that talk to Stripe."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from services.payments.bootstrap import build
from tests.support.payments import payments_settings, settings_on_sim
from tests.support.rig import Rigs, ServiceRig, sqlite_url
from tests.support.stripe_sim import Sim, running_sim, webhook_receiver


@pytest_asyncio.fixture
async def payments(tmp_path: Path) -> AsyncIterator[ServiceRig]:
    settings = payments_settings(sqlite_url(tmp_path / "payments.db"))
    async with Rigs() as rigs:
        yield await rigs.start(ServiceRig, build, settings)


@pytest.fixture(scope="module")
def stripe_sim() -> Iterator[Sim]:
    """The simulator sends its webhooks to a receiver: tests forward what it received, so each
    test decides when and how often an event reaches the service."""
    with webhook_receiver() as receiver, running_sim(receiver=receiver) as sim:
        yield sim


@pytest_asyncio.fixture
async def payments_on_sim(tmp_path: Path, stripe_sim: Sim) -> AsyncIterator[ServiceRig]:
    settings = settings_on_sim(sqlite_url(tmp_path / "payments.db"), stripe_sim)
    async with Rigs() as rigs:
        yield await rigs.start(ServiceRig, build, settings)
