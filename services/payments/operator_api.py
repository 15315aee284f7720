"""Operator endpoints for Stripe: replay stored webhook events, reconcile sessions or refunds
now, list the disputes of our payments."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from services.payments import recovery, repository
from services.payments.deps import PaymentsRuntime
from services.payments.domain import ORDER_ID_MAX_LENGTH, DisputeStatus
from shared.auth import Operator
from shared.runtime import runtime_of

router = APIRouter(prefix="/operator", tags=["operator"])
Runtime = Annotated[PaymentsRuntime, Depends(runtime_of)]


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Empty: every stored event not applied yet. Named events are applied again even if they
    # were (harmless: a session or refund only moves forward).
    event_ids: list[str] = Field(default_factory=list, max_length=500)


class ReplayOut(BaseModel):
    applied: list[str]
    unprocessed: list[str]
    missing: list[str]
    # Events about no payment of ours, marked ignored now; in the answer only when there are
    # (the route leaves out defaults), so answers without any keep the shape they always had.
    ignored: list[str] = Field(default_factory=list)


class ReconciledOut(BaseModel):
    order_id: str
    session_id: str
    status_before: str
    status: str


class ReconcileOut(BaseModel):
    checked: int
    changed: list[ReconciledOut]
    errors: list[str]


class RefundReconciledOut(BaseModel):
    order_id: str
    refund_key: str
    stripe_refund_id: str
    status: str


class RefundReconcileOut(BaseModel):
    checked: int
    changed: list[RefundReconciledOut]
    # Stripe refund ids Stripe could not be asked about (asked again next round).
    errors: list[str]


class DisputeOut(BaseModel):
    dispute_id: str
    order_id: str
    payment_intent_id: str
    charge_id: str | None
    amount: int
    currency: str
    reason: str
    # Stripe's status, from its newest event (domain.dispute_supersedes).
    status: str
    # When the cardholder opened it, and when Stripe reported the status shown.
    created_at: datetime
    status_at: datetime
    updated_at: datetime


class DisputesOut(BaseModel):
    disputes: list[DisputeOut]


# Overrides the setting's minimum age (0: everything still waiting).
OlderThan = Annotated[float | None, Query(ge=0)]


def _min_age(older_than_seconds: float | None) -> timedelta | None:
    return None if older_than_seconds is None else timedelta(seconds=older_than_seconds)


@router.post("/stripe-events/replay", response_model_exclude_defaults=True)
async def replay_stripe_events(
    _operator: Operator, runtime: Runtime, replay_in: ReplayIn | None = None
) -> ReplayOut:
    result = await recovery.replay_events(runtime, replay_in.event_ids if replay_in else ())
    return ReplayOut.model_validate(asdict(result))


@router.post("/reconcile")
async def reconcile_now(
    _operator: Operator, runtime: Runtime, older_than_seconds: OlderThan = None
) -> ReconcileOut:
    """Runs one reconciliation round now; `older_than_seconds` overrides the minimum age."""
    result = await recovery.reconcile(
        runtime, runtime.deps.stripe, min_age=_min_age(older_than_seconds)
    )
    return ReconcileOut.model_validate(asdict(result))


@router.post("/refunds/reconcile")
async def reconcile_refunds_now(
    _operator: Operator, runtime: Runtime, older_than_seconds: OlderThan = None
) -> RefundReconcileOut:
    """Asks Stripe now about refunds still pending; `older_than_seconds` overrides
    refund_reconcile_after_seconds."""
    result = await recovery.reconcile_refunds(
        runtime, runtime.deps.stripe, min_age=_min_age(older_than_seconds)
    )
    return RefundReconcileOut.model_validate(asdict(result))


@router.get("/disputes")
async def list_disputes(
    _operator: Operator,
    runtime: Runtime,
    status: DisputeStatus | None = None,
    order_id: Annotated[str | None, Query(max_length=ORDER_ID_MAX_LENGTH)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DisputesOut:
    """Disputes of our payments, newest opened first; `status`: only those Stripe has in it."""
    async with runtime.sessionmaker() as db:
        found = await repository.disputes(db, status=status, order_id=order_id, limit=limit)
    return DisputesOut(
        disputes=[DisputeOut.model_validate(row, from_attributes=True) for row in found]
    )
