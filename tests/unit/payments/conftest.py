"""A payments service per test: temp SQLite file, in-process bus, real migrations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from payments_support import payments_settings

from services.payments.bootstrap import build
from shared.memory_bus import MemoryBus
from shared.runtime import ServiceRuntime


@pytest_asyncio.fixture
async def payments(tmp_path: Path) -> AsyncIterator[ServiceRuntime]:
    runtime = build(payments_settings(tmp_path), bus=MemoryBus(), auto_migrate=True)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
