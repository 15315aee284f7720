"""Operator endpoints for Stripe recovery: replay stored webhook events, reconcile now."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from services.payments import recovery
from services.payments.deps import PaymentsRuntime
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


class ReconciledOut(BaseModel):
    order_id: str
    session_id: str
    status_before: str
    status: str


class ReconcileOut(BaseModel):
    checked: int
    changed: list[ReconciledOut]
    errors: list[str]


@router.post("/stripe-events/replay")
async def replay_stripe_events(
    _operator: Operator, runtime: Runtime, replay_in: ReplayIn | None = None
) -> ReplayOut:
    result = await recovery.replay_events(runtime, replay_in.event_ids if replay_in else ())
    return ReplayOut(applied=result.applied, unprocessed=result.unprocessed, missing=result.missing)


@router.post("/reconcile")
async def reconcile_now(
    _operator: Operator,
    runtime: Runtime,
    older_than_seconds: Annotated[float | None, Query(ge=0)] = None,
) -> ReconcileOut:
    """Runs one reconciliation round now; `older_than_seconds` overrides the minimum age."""
    min_age = None if older_than_seconds is None else timedelta(seconds=older_than_seconds)
    result = await recovery.reconcile(runtime, runtime.deps.stripe, min_age=min_age)
    return ReconcileOut(
        checked=result.checked,
        changed=[ReconciledOut(**asdict(change)) for change in result.changed],
        errors=result.errors,
    )
