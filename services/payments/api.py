"""Credit accounts over HTTP: a shopper reads their balance; operators grant and audit."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import ledger
from services.payments.deps import PaymentsRuntime
from services.payments.domain import Balance, as_utc
from services.payments.models import LedgerEntry
from shared.auth import Operator, Shopper
from shared.errors import ApiError
from shared.limits import MAX_GRANT_CREDITS
from shared.messages.contracts import CreditsGranted
from shared.runtime import runtime_of

router = APIRouter(tags=["credits"])
Runtime = Annotated[PaymentsRuntime, Depends(runtime_of)]

IDEMPOTENCY_KEY_MAX = 100


class BalanceOut(BaseModel):
    user_id: str
    available: int
    reserved: int

    @classmethod
    def of(cls, user_id: str, balance: Balance) -> BalanceOut:
        return cls(user_id=user_id, available=balance.available, reserved=balance.reserved)


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credits: int = Field(gt=0, le=MAX_GRANT_CREDITS)
    reason: str = Field(min_length=1, max_length=500)


class EntryOut(BaseModel):
    id: int
    kind: str
    amount: int
    debit_account: str
    credit_account: str
    order_id: str | None
    reference: str
    trace_id: str
    memo: str | None
    created_at: datetime

    @classmethod
    def of(cls, entry: LedgerEntry) -> EntryOut:
        out = cls.model_validate(entry, from_attributes=True)
        return out.model_copy(update={"created_at": as_utc(entry.created_at)})


class LedgerOut(BaseModel):
    user_id: str
    entries: list[EntryOut]
    # Pass as ?after_id= to read the next page; null on the last page.
    next_after_id: int | None


@router.get("/accounts/me")
async def my_balance(principal: Shopper, runtime: Runtime) -> BalanceOut:
    async with runtime.sessionmaker() as db:
        balance = await ledger.balance_of(db, principal.user_id)
    return BalanceOut.of(principal.user_id, balance)


@router.post("/accounts/{user_id}/grants")
async def grant_credits(
    user_id: str,
    grant_in: GrantIn,
    principal: Operator,
    runtime: Runtime,
    request: Request,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> BalanceOut:
    if not idempotency_key or len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
        raise ApiError(
            400,
            "idempotency_key_required",
            f"send an Idempotency-Key header of 1..{IDEMPOTENCY_KEY_MAX} characters",
        )
    grant_id = f"api:{idempotency_key}"
    trace_id: str = request.state.trace_id
    async with runtime.transaction() as db:
        granted = await ledger.add_credits(
            db,
            user_id=user_id,
            credits=grant_in.credits,
            reference=f"grant:{grant_id}",
            trace_id=trace_id,
            memo=f"{grant_in.reason} (by operator {principal.user_id})",
        )
        if granted:
            await runtime.emit(
                db,
                CreditsGranted(grant_id=grant_id, user_id=user_id, credits=grant_in.credits),
                correlation_id=trace_id,
            )
        else:
            await _same_grant_or_conflict(db, grant_id, user_id, grant_in.credits)
        balance = await ledger.balance_of(db, user_id)
    return BalanceOut.of(user_id, balance)


async def _same_grant_or_conflict(
    db: AsyncSession, grant_id: str, user_id: str, credits: int
) -> None:
    first = await ledger.entry_by_reference(db, f"grant:{grant_id}")
    if first is None or first.user_id != user_id or first.amount != credits:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different grant",
        )


@router.get("/accounts/{user_id}/ledger")
async def account_ledger(
    user_id: str,
    _operator: Operator,
    runtime: Runtime,
    after_id: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> LedgerOut:
    async with runtime.sessionmaker() as db:
        entries = await ledger.entries_of(db, user_id, after_id=after_id, limit=limit)
    return LedgerOut(
        user_id=user_id,
        entries=[EntryOut.of(e) for e in entries],
        next_after_id=entries[-1].id if len(entries) == limit else None,
    )
