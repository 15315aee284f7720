"""HTTP API of the provisioning service: read a job, read my entitlements."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from services.provisioning import repository
from services.provisioning.models import Entitlement, Job
from shared.auth import Shopper, may_see
from shared.errors import not_found
from shared.runtime import ServiceRuntime, runtime_of

router = APIRouter(tags=["provisioning"])
Runtime = Annotated[ServiceRuntime, Depends(runtime_of)]


class JobUnitOut(BaseModel):
    unit_no: int
    status: str
    detail: str
    external_ref: str | None


class JobItemOut(BaseModel):
    line_no: int
    item_id: str
    kind: str
    name: str
    quantity: int
    units_per_item: int
    status: str
    detail: str
    external_ref: str | None
    units_failed: int
    # Each unit's own outcome, for lines made one unit at a time (servers); else empty.
    units: list[JobUnitOut]


class JobOut(BaseModel):
    job_id: str
    order_id: str
    user_id: str
    status: str
    due_at: datetime | None
    created_at: datetime
    updated_at: datetime
    cancel_reason: str | None
    items: list[JobItemOut]

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            job_id=str(job.id),
            order_id=job.order_id,
            user_id=job.user_id,
            status=job.status,
            due_at=job.due_at,
            created_at=job.created_at,
            updated_at=job.updated_at,
            cancel_reason=job.cancel_reason,
            items=[JobItemOut.model_validate(item, from_attributes=True) for item in job.items],
        )


class EntitlementOut(BaseModel):
    order_id: str
    line_no: int
    item_id: str
    sessions: int
    created_at: datetime

    @classmethod
    def of(cls, entitlement: Entitlement) -> EntitlementOut:
        return cls.model_validate(entitlement, from_attributes=True)


class EntitlementsOut(BaseModel):
    user_id: str
    total_sessions: int
    entitlements: list[EntitlementOut]


@router.get("/jobs/{order_id}", response_model=JobOut)
async def get_job(order_id: str, principal: Shopper, runtime: Runtime) -> JobOut:
    """The order's fulfilment job; a shopper sees only their own (another's is a 404)."""
    async with runtime.sessionmaker() as session:
        job = await repository.job_by_order(session, order_id)
    if job is None or not may_see(principal, job.user_id):
        raise not_found("job")
    return JobOut.of(job)


@router.get("/entitlements/me", response_model=EntitlementsOut)
async def my_entitlements(principal: Shopper, runtime: Runtime) -> EntitlementsOut:
    """The sessions the caller may book, per order line, and their total."""
    async with runtime.sessionmaker() as session:
        rows = await repository.entitlements_of(session, principal.user_id)
    return EntitlementsOut(
        user_id=principal.user_id,
        total_sessions=sum(row.sessions for row in rows),
        entitlements=[EntitlementOut.of(row) for row in rows],
    )
