"""A payments service per test: temp SQLite file, in-process bus, real migrations; and one Stripe
simulator per test module for the tests that talk to Stripe."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from payments_support import payments_settings
from sim_support import SIM_KEY, SIM_WEBHOOK_SECRET, Sim, WebhookRecorder, settings_on_sim

from services.payments.bootstrap import build
from shared.memory_bus import MemoryBus
from shared.runtime import ServiceRuntime
from simulators.stripe import app as sim_app
from simulators.stripe.config import SimConfig
from tests.support.serving import loopback_socket, serving, url_of


@pytest_asyncio.fixture
async def payments(tmp_path: Path) -> AsyncIterator[ServiceRuntime]:
    runtime = build(payments_settings(tmp_path), bus=MemoryBus(), auto_migrate=True)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


@pytest.fixture(scope="module")
def stripe_sim() -> Iterator[Sim]:
    hooks = WebhookRecorder()
    with serving(hooks) as receiver_url:
        sock = loopback_socket()
        config = SimConfig(
            webhook_url=f"{receiver_url}/webhooks/stripe",
            webhook_secret=SIM_WEBHOOK_SECRET,
            api_key=SIM_KEY,
            public_url=url_of(sock),
            webhook_backoff_base_seconds=0.05,
        )
        with serving(sim_app.create_app(config), sock=sock) as url:
            yield Sim(url, hooks)


@pytest_asyncio.fixture
async def payments_on_sim(tmp_path: Path, stripe_sim: Sim) -> AsyncIterator[ServiceRuntime]:
    settings = settings_on_sim(tmp_path, stripe_sim)
    runtime = build(settings, bus=MemoryBus(), auto_migrate=True)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
