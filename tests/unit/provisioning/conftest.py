"""Fixtures of the provisioning tests; the helpers live in provisioning_rig.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from provisioning_rig import (
    DOOMED_PLAN,
    SECRET,
    MakeRig,
    Panel,
    ProvisioningRig,
)
from pydantic import SecretStr

from services.provisioning.bootstrap import build
from services.provisioning.provisioners import Provisioners
from services.provisioning.settings import ProvisioningSettings
from shared.memory_bus import MemoryBus
from shared.runtime import ServiceRuntime
from simulators.panel import create_panel_app
from tests.support.serving import serving


@pytest.fixture(scope="session")
def panel() -> Iterator[Panel]:
    app = create_panel_app(fail_plans={DOOMED_PLAN})
    with serving(app, lifespan="off") as url:
        yield Panel(url=url, state=app.state.panel)


@pytest_asyncio.fixture
async def make_rig(tmp_path: Path, panel: Panel) -> AsyncIterator[MakeRig]:
    """Factory: a started service; keyword arguments override settings, `provisioners` the
    registry bootstrap would build."""
    started: list[tuple[ServiceRuntime, MemoryBus, httpx.AsyncClient]] = []

    async def make(
        *, provisioners: Provisioners | None = None, **overrides: Any
    ) -> ProvisioningRig:
        settings = ProvisioningSettings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/provisioning-{len(started)}.db",
            broker_url="memory://",
            jwt_secret=SecretStr(SECRET),
            panel_url=overrides.pop("panel_url", panel.url),
            panel_timeout_seconds=2.0,
            panel_backoff_base_seconds=0.01,
            panel_backoff_max_seconds=0.05,
            **overrides,
        )
        bus = MemoryBus()
        runtime = build(settings, bus=bus, auto_migrate=True, provisioners=provisioners)
        await runtime.start()
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=runtime.app(manage_lifecycle=False)),
            base_url="http://provisioning",
        )
        started.append((runtime, bus, http))
        return ProvisioningRig(runtime, http)

    yield make
    for runtime, bus, http in reversed(started):
        await http.aclose()
        await runtime.stop()
        await bus.close()


@pytest_asyncio.fixture
async def rig(make_rig: MakeRig) -> ProvisioningRig:
    return await make_rig()
