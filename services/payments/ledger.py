"""The credit ledger in the database: every balance change is one conditional UPDATE of the cached
balance plus one ledger entry, in the caller's transaction.

The database, not Python, keeps balances from going negative: a reserve only matches the account
row while `available >= n`, and CHECK constraints back every column. Idempotency comes from unique
keys (the entry's `reference`, the reservation's order id) and status-conditional updates, so a
redelivered or concurrent duplicate either matches nothing, finds the first one's row and replays
it, or fails and is retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.domain import (
    Balance,
    InsufficientCredits,
    Posting,
    RefundExceedsCapture,
    RefundKeyReused,
    ReservationNotCapturable,
    posting,
    split_capture,
)
from services.payments.models import CreditAccount, CreditReservation, LedgerEntry
from shared.db import insert_or_nothing, is_postgres, rowcount


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Reservation:
    order_id: str
    user_id: str
    credits: int
    status: str


# --- statements ------------------------------------------------------------------------------
# Every saga command runs these, so they are built once and run with bound parameters: building
# a statement and its cache key costs about as much CPU as running it. They go through the Core
# tables: no account or reservation is ever loaded as an ORM object, so there is no identity map
# to keep in step. The ON CONFLICT ones are spelled per dialect, keyed by `is_postgres`.

_accounts = cast(Table, CreditAccount.__table__)
_entries = cast(Table, LedgerEntry.__table__)
_reservations = cast(Table, CreditReservation.__table__)
_ENSURE_ACCOUNT = insert_or_nothing(_accounts, "user_id")


def _move_statement(guard_available: bool, guard_reserved: bool) -> Any:
    """The balance UPDATE; a guarded bucket (one the posting takes from) must hold what it gives."""
    stmt = (
        update(_accounts)
        .where(_accounts.c.user_id == bindparam("b_user_id"))
        .values(
            available=_accounts.c.available + bindparam("b_available_delta"),
            reserved=_accounts.c.reserved + bindparam("b_reserved_delta"),
            updated_at=bindparam("b_now"),
        )
    )
    if guard_available:
        stmt = stmt.where(_accounts.c.available >= bindparam("b_takes_available"))
    if guard_reserved:
        stmt = stmt.where(_accounts.c.reserved >= bindparam("b_takes_reserved"))
    return stmt


_MOVES = {(a, r): _move_statement(a, r) for a in (False, True) for r in (False, True)}
_ADD_ENTRY = insert(_entries)
_ADD_ENTRY_ONCE = insert_or_nothing(_entries, "reference")
_CLAIM_RESERVATION = insert_or_nothing(_reservations, "order_id")
_DROP_RESERVATION = delete(_reservations).where(_reservations.c.order_id == bindparam("b_order_id"))
_ADD_RESERVATION = insert(_reservations)


def _transition_statement(*, records_capture: bool) -> Any:
    stmt = (
        update(_reservations)
        .where(
            _reservations.c.order_id == bindparam("b_order_id"),
            _reservations.c.status == "reserved",
        )
        .values(status=bindparam("b_to"), updated_at=bindparam("b_now"))
        .returning(_reservations.c.user_id, _reservations.c.credits)
    )
    if records_capture:
        stmt = stmt.where(_reservations.c.credits >= bindparam("b_captured")).values(
            captured=bindparam("b_captured")
        )
    return stmt


_TRANSITION = _transition_statement(records_capture=False)
_TRANSITION_CAPTURING = _transition_statement(records_capture=True)
_HOLD_REFUND = (
    update(_reservations)
    .where(
        _reservations.c.order_id == bindparam("b_order_id"),
        _reservations.c.user_id == bindparam("b_user_id"),
        _reservations.c.status == "captured",
        _reservations.c.refunded + bindparam("b_credits") <= _reservations.c.captured,
    )
    .values(
        refunded=_reservations.c.refunded + bindparam("b_credits"), updated_at=bindparam("b_now")
    )
)
_RESERVATION = select(
    _reservations.c.order_id,
    _reservations.c.user_id,
    _reservations.c.credits,
    _reservations.c.status,
).where(_reservations.c.order_id == bindparam("b_order_id"))
_BALANCE = select(_accounts.c.available, _accounts.c.reserved).where(
    _accounts.c.user_id == bindparam("b_user_id")
)
_ENTRY_BY_REFERENCE = select(LedgerEntry).where(LedgerEntry.reference == bindparam("b_reference"))


# --- low-level postings ----------------------------------------------------------------------


async def _ensure_account(db: AsyncSession, user_id: str) -> None:
    await db.execute(
        _ENSURE_ACCOUNT[is_postgres(db)],
        {"user_id": user_id, "available": 0, "reserved": 0, "updated_at": _now()},
    )


async def _move(db: AsyncSession, p: Posting) -> bool:
    """Applies the posting's deltas to the cached balance; False if a bucket would go negative."""
    stmt = _MOVES[p.available_delta < 0, p.reserved_delta < 0]
    result = await db.execute(
        stmt,
        {
            "b_user_id": p.user_id,
            "b_available_delta": p.available_delta,
            "b_reserved_delta": p.reserved_delta,
            "b_takes_available": -p.available_delta,
            "b_takes_reserved": -p.reserved_delta,
            "b_now": _now(),
        },
    )
    return rowcount(result) == 1


async def _write_entry(
    db: AsyncSession,
    p: Posting,
    *,
    reference: str,
    trace_id: str,
    order_id: str | None,
    skip_duplicate: bool = False,
    memo: str | None = None,
) -> bool:
    stmt = _ADD_ENTRY_ONCE[is_postgres(db)] if skip_duplicate else _ADD_ENTRY
    result = await db.execute(
        stmt,
        {
            "user_id": p.user_id,
            "kind": p.kind,
            "amount": p.amount,
            "debit_account": p.debit_account,
            "credit_account": p.credit_account,
            "order_id": order_id,
            "reference": reference,
            "trace_id": trace_id,
            "memo": memo,
            "created_at": _now(),
        },
    )
    return rowcount(result) == 1


async def _post_internal(
    db: AsyncSession, p: Posting, *, reference: str, trace_id: str, order_id: str
) -> None:
    """A move between a user's own buckets whose gate (a status change) has already passed."""
    if not await _move(db, p):
        raise RuntimeError(f"{p.kind} of {p.amount} for {p.user_id} does not fit the balance")
    await _write_entry(db, p, reference=reference, trace_id=trace_id, order_id=order_id)


# --- operations the handlers and routes use --------------------------------------------------


async def add_credits(
    db: AsyncSession,
    *,
    user_id: str,
    credits: int,
    reference: str,
    trace_id: str,
    order_id: str | None = None,
    kind: Literal["grant", "refund"] = "grant",
    memo: str | None = None,
) -> bool:
    """A grant (or refund) posted once per reference; False when the reference was posted before."""
    p = posting(kind, user_id, credits)
    written = await _write_entry(
        db,
        p,
        reference=reference,
        trace_id=trace_id,
        order_id=order_id,
        skip_duplicate=True,
        memo=memo,
    )
    if not written:
        return False
    await _ensure_account(db, user_id)
    await _move(db, p)
    return True


async def reserve(
    db: AsyncSession, *, user_id: str, order_id: str, credits: int, trace_id: str
) -> Reservation:
    """Holds credits for an order; returns the existing reservation when the order has one.

    Raises InsufficientCredits when the conditional update matches no row. The reservation row
    is claimed first, ON CONFLICT rather than read-then-insert: a second reserve of the order
    (a saga retry, or one racing the first) waits for the first one's row and then replays it,
    and never moves the balance. A rejected reserve deletes the row it claimed, so that nothing
    of it stays.
    """
    claim = {
        "order_id": order_id,
        "user_id": user_id,
        "credits": credits,
        "status": "reserved",
        "updated_at": _now(),
    }
    if rowcount(await db.execute(_CLAIM_RESERVATION[is_postgres(db)], claim)) != 1:
        existing = await reservation_of(db, order_id)
        if existing is None:  # never expected: only uncommitted rows are ever deleted
            raise RuntimeError(f"reservation of order {order_id} conflicted but is gone")
        return existing
    p = posting("reserve", user_id, credits)
    if not await _move(db, p):
        await db.execute(_DROP_RESERVATION, {"b_order_id": order_id})
        raise InsufficientCredits(
            available=(await balance_of(db, user_id)).available, requested=credits
        )
    await _write_entry(db, p, reference=f"reserve:{order_id}", trace_id=trace_id, order_id=order_id)
    return Reservation(order_id, user_id, credits, "reserved")


async def _transition(
    db: AsyncSession, order_id: str, *, to: str, captured: int | None = None
) -> tuple[str, int] | None:
    """reserved -> `to`, only from `reserved`; (user_id, credits) when this call made the change.

    With `captured`, the same UPDATE records it, and only matches a reservation that holds it.
    """
    params: dict[str, Any] = {"b_order_id": order_id, "b_to": to, "b_now": _now()}
    stmt = _TRANSITION
    if captured is not None:
        stmt = _TRANSITION_CAPTURING
        params["b_captured"] = captured
    row = (await db.execute(stmt, params)).first()
    return None if row is None else (row[0], row[1])


async def capture(db: AsyncSession, *, order_id: str, credits: int, trace_id: str) -> int:
    """Spends `credits` of the order's reservation and frees the rest; returns credits captured.

    A repeated capture changes nothing and returns what the first one captured. The status and
    what refunds of this order may give back at most (`captured`, see refund()) change in one
    UPDATE, which only matches a reservation holding at least `credits`.
    """
    changed = await _transition(db, order_id, to="captured", captured=credits)
    if changed is None:
        current = await reservation_of(db, order_id)
        if current is not None and current.status == "reserved":
            split_capture(current.credits, credits)  # raises CaptureExceedsReservation
        if current is None or current.status != "captured":
            raise ReservationNotCapturable(f"order {order_id} has no reservation to capture")
        return await _amount_posted(db, f"capture:{order_id}")
    user_id, reserved = changed
    captured, freed = split_capture(reserved, credits)
    await _post_internal(
        db,
        posting("capture", user_id, captured),
        reference=f"capture:{order_id}",
        trace_id=trace_id,
        order_id=order_id,
    )
    if freed:
        await _post_internal(
            db,
            posting("release", user_id, freed),
            reference=f"release:{order_id}",
            trace_id=trace_id,
            order_id=order_id,
        )
    return captured


async def release(db: AsyncSession, *, order_id: str, user_id: str, trace_id: str) -> int:
    """Returns the order's reserved credits to available; the credits released (0 if none).

    With no reservation yet, a released tombstone is written so that a ReserveCredits arriving
    after its own compensation can no longer hold credits that nobody would ever release.
    """
    changed = await _transition(db, order_id, to="released")
    if changed is not None:
        owner, credits = changed
        await _post_internal(
            db,
            posting("release", owner, credits),
            reference=f"release:{order_id}",
            trace_id=trace_id,
            order_id=order_id,
        )
        return credits
    current = await reservation_of(db, order_id)
    if current is None:
        await db.execute(
            _ADD_RESERVATION,
            {
                "order_id": order_id,
                "user_id": user_id,
                "credits": 0,
                "status": "released",
                "updated_at": _now(),
            },
        )
        return 0
    return current.credits if current.status == "released" else 0


async def refund(
    db: AsyncSession,
    *,
    order_id: str,
    user_id: str,
    refund_key: str,
    credits: int,
    trace_id: str,
    memo: str,
) -> int:
    """Gives captured credits of an order back to available, once per refund key; returns the
    credits that key refunded. The reservation row's conditional UPDATE is the limit: refunds
    of one order never add up to more than it captured (concurrent ones queue on that row)."""
    reference = f"refund:{order_id}:{refund_key}"
    p = posting("refund", user_id, credits)
    written = await _write_entry(
        db,
        p,
        reference=reference,
        trace_id=trace_id,
        order_id=order_id,
        skip_duplicate=True,
        memo=memo,
    )
    if not written:
        first = await entry_by_reference(db, reference)
        if first is None or first.user_id != user_id or first.amount != credits:
            raise RefundKeyReused(f"refund key {refund_key!r} of {order_id} reused differently")
        return first.amount
    hold = {"b_order_id": order_id, "b_user_id": user_id, "b_credits": credits, "b_now": _now()}
    if rowcount(await db.execute(_HOLD_REFUND, hold)) != 1:
        raise RefundExceedsCapture(order_id=order_id, requested=credits)
    await _ensure_account(db, user_id)
    await _move(db, p)
    return credits


# --- reads -----------------------------------------------------------------------------------


async def reservation_of(db: AsyncSession, order_id: str) -> Reservation | None:
    row = (await db.execute(_RESERVATION, {"b_order_id": order_id})).first()
    return None if row is None else Reservation(row[0], row[1], row[2], row[3])


async def balance_of(db: AsyncSession, user_id: str) -> Balance:
    row = (await db.execute(_BALANCE, {"b_user_id": user_id})).first()
    return Balance() if row is None else Balance(row[0], row[1])


async def entry_by_reference(db: AsyncSession, reference: str) -> LedgerEntry | None:
    return (await db.execute(_ENTRY_BY_REFERENCE, {"b_reference": reference})).scalar_one_or_none()


async def _amount_posted(db: AsyncSession, reference: str) -> int:
    entry = await entry_by_reference(db, reference)
    return 0 if entry is None else entry.amount


async def entries_of(
    db: AsyncSession, user_id: str, *, after_id: int = 0, limit: int = 100
) -> list[LedgerEntry]:
    stmt = (
        select(LedgerEntry)
        .where(LedgerEntry.user_id == user_id, LedgerEntry.id > after_id)
        .order_by(LedgerEntry.id)
        .limit(limit)
    )
    return list((await db.execute(stmt)).scalars())
