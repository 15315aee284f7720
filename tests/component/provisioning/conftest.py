"""Fixtures of the provisioning tests: the server panel simulator, and the service on a temp
SQLite file with the in-process bus calling it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from services.provisioning.bootstrap import build
from services.provisioning.provisioners import Provisioners
from tests.support.provisioning import (
    MakeRig,
    Panel,
    ProvisioningRig,
    provisioning_settings,
    served_panel,
)
from tests.support.rig import Rigs, sqlite_url


@pytest.fixture(scope="session")
def panel() -> Iterator[Panel]:
    with served_panel() as served:
        yield served


@pytest_asyncio.fixture
async def make_rig(tmp_path: Path, panel: Panel) -> AsyncIterator[MakeRig]:
    """Factory: a started service; keyword arguments override settings, `provisioners` the
    registry bootstrap would build."""
    async with Rigs() as rigs:

        async def make(
            *, provisioners: Provisioners | None = None, **overrides: Any
        ) -> ProvisioningRig:
            database_url = sqlite_url(tmp_path / f"provisioning-{len(rigs)}.db")
            overrides.setdefault("panel_url", panel.url)
            settings = provisioning_settings(database_url, **overrides)
            return await rigs.start(ProvisioningRig, build, settings, provisioners=provisioners)

        yield make


@pytest_asyncio.fixture
async def rig(make_rig: MakeRig) -> ProvisioningRig:
    return await make_rig()
