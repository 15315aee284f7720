"""The provisioning service on the one rig, next to the server panel simulator it calls."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from services.provisioning import repository
from services.provisioning.models import CreditGrant, Job
from services.provisioning.settings import ProvisioningSettings
from shared.messages import Contract, payload_of
from shared.messages.contracts import CheckoutLine, CreateJob, ItemKind, ProvisionOrder
from simulators.panel import PanelState, create_panel_app
from tests.support.rig import ServiceRig, new_order_id, settings_for
from tests.support.serving import serving

# A plan the panel simulator of these tests refuses to build.
DOOMED_PLAN = "srv-doomed"


def provisioning_settings(database_url: str, **overrides: Any) -> ProvisioningSettings:
    """Short panel timeouts and backoff: a retried panel call costs the test milliseconds."""
    values: dict[str, Any] = {
        "panel_timeout_seconds": 2.0,
        "panel_backoff_base_seconds": 0.01,
        "panel_backoff_max_seconds": 0.05,
        **overrides,
    }
    return settings_for(ProvisioningSettings, database_url, **values)


@dataclass
class Panel:
    """The served panel simulator and its state, which tests read and steer."""

    url: str
    state: PanelState

    def creations_for(self, order_id: str) -> int:
        return sum(1 for s in list(self.state.servers.values()) if s["order_id"] == order_id)


@contextmanager
def served_panel() -> Iterator[Panel]:
    """The server panel simulator on a loopback port, refusing to build DOOMED_PLAN."""
    app = create_panel_app(fail_plans={DOOMED_PLAN})
    with serving(app, lifespan="off") as url:
        yield Panel(url=url, state=app.state.panel)


def closed_port_url() -> str:
    """A URL nobody listens on: the port was free a moment ago and is closed again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def line(
    line_no: int, kind: ItemKind, item_id: str, *, quantity: int = 1, units_per_item: int = 1
) -> CheckoutLine:
    return CheckoutLine(
        line_no=line_no,
        item_id=item_id,
        kind=kind,
        name=f"{kind} {item_id}",
        quantity=quantity,
        unit_price=1000,
        units_per_item=units_per_item,
        paid_with="money",
    )


class ProvisioningRig(ServiceRig):
    async def messages_for(self, order_id: str) -> list[Contract]:
        """Every message the service wrote to its outbox for this order, oldest first."""
        return [payload_of(e) for e in await self.emitted(correlation_id=order_id)]

    async def credit_grant(self, grant_id: str) -> CreditGrant | None:
        """The service's record of a credit grant it sent to payments, as stored."""
        async with self.runtime.sessionmaker() as db:
            return await db.get(CreditGrant, grant_id)


async def job_created(rig: ProvisioningRig, *lines: CheckoutLine, user_id: str = "alice") -> str:
    """A new order whose job was created from `lines`; its id."""
    order_id = new_order_id()
    await rig.deliver(
        CreateJob(order_id=order_id, user_id=user_id, lines=lines), correlation_id=order_id
    )
    return order_id


async def provision(rig: ProvisioningRig, order_id: str) -> Contract:
    """Delivers a ProvisionOrder; the last message the service wrote for the order."""
    await rig.deliver(ProvisionOrder(order_id=order_id), correlation_id=order_id)
    return (await rig.messages_for(order_id))[-1]


async def load_job(rig: ProvisioningRig, order_id: str) -> Job:
    async with rig.runtime.sessionmaker() as session:
        job = await repository.job_by_order(session, order_id)
    assert job is not None
    return job


MakeRig = Callable[..., Awaitable[ProvisioningRig]]
