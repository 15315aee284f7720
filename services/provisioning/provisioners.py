"""Provisioners: one per item kind, each turning an order line into a delivered, scheduled or
failed item. Built in bootstrap and handed to the handlers as a registry (kind -> provisioner)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from services.provisioning import repository
from services.provisioning.domain import ResendTiming
from shared.dispatch import MessageContext
from shared.messages import Contract
from shared.messages.contracts import GrantCredits

OutcomeStatus = Literal["delivered", "partially_delivered", "scheduled", "failed"]
UnitStatus = Literal["delivered", "failed"]


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
        """Stable per order line: the idempotency key of an effect the whole line causes once."""
        return f"{self.order_id}:{self.line_no}"

    def unit_key(self, unit_no: int) -> str:
        """Stable per unit of the line, for effects made one unit at a time. Unit 1 keeps the
        line's key, so a line provisioned before units were counted is not made twice."""
        return self.key if unit_no == 1 else f"{self.key}:{unit_no}"


@dataclass(frozen=True)
class UnitOutcome:
    unit_no: int
    status: UnitStatus
    detail: str = ""
    external_ref: str | None = None


@dataclass(frozen=True)
class ItemOutcome:
    """A line's outcome. `units_failed` of the line's quantity were not delivered (all of them
    when it failed); `units` holds each unit's own outcome when units were made one by one."""

    status: OutcomeStatus
    detail: str = ""
    external_ref: str | None = None
    due_at: datetime | None = None
    units_failed: int = 0
    units: tuple[UnitOutcome, ...] = ()


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
        return ItemOutcome("failed", detail="no provisioner", units_failed=item.quantity)
    outcome = await provisioner.provision(item, ctx)
    if outcome.status == "failed" and outcome.units_failed == 0:
        # A provisioner that fails a line as a whole fails every unit of it.
        return replace(outcome, units_failed=item.quantity)
    return outcome


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
    """Books the work for later: the line's `quantity` jobs become due `lead_hours` from now."""

    lead_hours: int

    async def provision(self, item: ItemToProvision, ctx: ProvisionContext) -> ItemOutcome:
        due_at = ctx.now + timedelta(hours=self.lead_hours)
        jobs = "1 job" if item.quantity == 1 else f"{item.quantity} jobs"
        return ItemOutcome("scheduled", detail=f"{jobs} due {due_at.isoformat()}", due_at=due_at)


@dataclass(frozen=True)
class CreditPackProvisioner:
    """Credits live in payments: the grant goes through the outbox, so it reaches payments
    exactly when this transaction commits, and its grant_id makes payments apply it once.
    It is recorded in the same transaction, unconfirmed until payments answers CreditsGranted:
    a GrantCredits lost on its way is sent again (grant_resender.py)."""

    # The default is the settings' default; bootstrap passes the configured one.
    resend: ResendTiming = field(default_factory=ResendTiming)

    async def provision(self, item: ItemToProvision, ctx: ProvisionContext) -> ItemOutcome:
        grant = GrantCredits(
            grant_id=item.key,
            user_id=item.user_id,
            credits=item.units,
            reason="credit pack",
            order_id=item.order_id,
        )
        await ctx.emit(grant)
        await repository.add_credit_grant(
            ctx.db,
            grant_id=grant.grant_id,
            order_id=item.order_id,
            user_id=grant.user_id,
            credits=grant.credits,
            reason=grant.reason,
            now=ctx.now,
            next_send_at=self.resend.next_send_at(sends=1, sent_at=ctx.now),
        )
        return ItemOutcome("delivered", detail=f"{item.units} credits granted")
