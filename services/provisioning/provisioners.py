"""Provisioners: one per item kind, each turning an order line into a delivered, scheduled or
failed item. Built in bootstrap and handed to the handlers as a registry (kind -> provisioner)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from services.provisioning import repository
from shared.dispatch import MessageContext
from shared.messages import Contract
from shared.messages.contracts import GrantCredits

OutcomeStatus = Literal["delivered", "scheduled", "failed"]


@dataclass(frozen=True)
class ItemToProvision:
    order_id: str
    job_id: uuid.UUID
    user_id: str
    line_no: int
    item_id: str
    kind: str
    name: str
    quantity: int
    units_per_item: int

    @property
    def units(self) -> int:
        return self.units_per_item * self.quantity

    @property
    def key(self) -> str:
        """Stable per order line: the idempotency key of every effect this line causes."""
        return f"{self.order_id}:{self.line_no}"


@dataclass(frozen=True)
class ItemOutcome:
    status: OutcomeStatus
    detail: str = ""
    external_ref: str | None = None
    due_at: datetime | None = None


@dataclass(frozen=True)
class ProvisionContext:
    """The handler's open transaction and outbox, and the time the provisioning runs at."""

    message: MessageContext
    now: datetime

    @property
    def db(self) -> AsyncSession:
        return self.message.db

    async def emit(self, message: Contract) -> None:
        await self.message.emit(message)


class Provisioner(Protocol):
    async def provision(self, item: ItemToProvision, ctx: ProvisionContext) -> ItemOutcome: ...


Provisioners = Mapping[str, Provisioner]


async def provision_item(
    provisioners: Provisioners, item: ItemToProvision, ctx: ProvisionContext
) -> ItemOutcome:
    provisioner = provisioners.get(item.kind)
    if provisioner is None:
        return ItemOutcome("failed", detail="no provisioner")
    return await provisioner.provision(item, ctx)


class SessionPackageProvisioner:
    """Grants the recipient bookable sessions; the (order, line) unique key makes it once-only."""

    async def provision(self, item: ItemToProvision, ctx: ProvisionContext) -> ItemOutcome:
        await repository.add_entitlement(
            ctx.db,
            user_id=item.user_id,
            order_id=item.order_id,
            line_no=item.line_no,
            item_id=item.item_id,
            sessions=item.units,
            now=ctx.now,
        )
        return ItemOutcome("delivered", detail=f"{item.units} sessions")


@dataclass(frozen=True)
class ServiceJobProvisioner:
    """Books the work for later: the job becomes due `lead_hours` from now."""

    lead_hours: int

    async def provision(self, item: ItemToProvision, ctx: ProvisionContext) -> ItemOutcome:
        due_at = ctx.now + timedelta(hours=self.lead_hours)
        return ItemOutcome("scheduled", detail=f"due {due_at.isoformat()}", due_at=due_at)


class CreditPackProvisioner:
    """Credits live in payments: the grant goes through the outbox, so it reaches payments
    exactly when this transaction commits, and its grant_id makes payments apply it once."""

    async def provision(self, item: ItemToProvision, ctx: ProvisionContext) -> ItemOutcome:
        await ctx.emit(
            GrantCredits(
                grant_id=item.key,
                user_id=item.user_id,
                credits=item.units,
                reason="credit pack",
                order_id=item.order_id,
            )
        )
        return ItemOutcome("delivered", detail=f"{item.units} credits granted")
