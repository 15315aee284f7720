"""Helpers of the provisioning tests: the service on a temp SQLite file with the in-process bus,
the server panel simulator served by uvicorn on a free port, message and line builders."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from sqlalchemy import select

from services.provisioning.models import outbox
from shared.auth import issue_token
from shared.messages import Contract, Envelope, payload_of
from shared.messages.contracts import CheckoutLine, ItemKind
from shared.runtime import ServiceRuntime
from simulators.panel import PanelState

SECRET = "provisioning-test-secret-long-enough-for-hs256"
DOOMED_PLAN = "srv-doomed"


@dataclass
class Panel:
    url: str
    state: PanelState

    def creations_for(self, order_id: str) -> int:
        return sum(1 for s in list(self.state.servers.values()) if s["order_id"] == order_id)


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


def new_order_id() -> str:
    return str(uuid.uuid4())


@dataclass
class ProvisioningRig:
    runtime: ServiceRuntime
    http: httpx.AsyncClient

    @staticmethod
    def as_user(user_id: str, *, operator: bool = False) -> dict[str, str]:
        roles = ("operator",) if operator else ()
        return {"Authorization": f"Bearer {issue_token(SECRET, user_id, roles=roles)}"}

    async def send(self, message: Contract, *, correlation_id: str) -> Envelope:
        envelope = Envelope.wrap(message, correlation_id=correlation_id)
        await self.runtime.dispatcher(envelope)
        return envelope

    async def emitted(self, order_id: str) -> list[Contract]:
        """Every message written to the outbox for this order (trace), oldest first."""
        async with self.runtime.sessionmaker() as session:
            rows = await session.execute(
                select(outbox.c.body)
                .where(outbox.c.correlation_id == order_id)
                .order_by(outbox.c.seq)
            )
            return [payload_of(Envelope.model_validate_json(body)) for (body,) in rows]


MakeRig = Callable[..., Awaitable[ProvisioningRig]]
