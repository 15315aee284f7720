"""HTTP routes of checkout sessions: issue, validate, recover (see `rules` for the rules).

Responses carry the session as validated now (`session_view`): `valid`, and when it is not,
the `code` a checkout with it would be refused with. Domain errors raised under a route are
answered by `CartRoute` (`services.cart.http_errors`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from services.cart import domain
from services.cart.api import Runtime
from services.cart.checkout_sessions import rules, store
from services.cart.checkout_sessions.service import facts, issue, recover, validate
from services.cart.http_errors import CartRoute
from services.cart.models import CheckoutSession, utcnow
from services.cart.views import iso, owned_cart
from shared.auth import Shopper

router = APIRouter(tags=["checkout sessions"], route_class=CartRoute)

CREATED, OK = 201, 200


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    use_credits: bool = True


def session_view(
    row: CheckoutSession,
    *,
    now: datetime,
    problem: domain.CartError | None,
    cart_matches: bool,
) -> dict[str, Any]:
    """A session as validated now: `valid` with `code` null, or the code a checkout would get."""
    return {
        "session_id": row.id,
        "cart_id": row.cart_id,
        "status": rules.effective_status(facts(row), now),
        "valid": problem is None,
        "code": problem.code if problem is not None else None,
        "message": str(problem) if problem is not None else None,
        "cart_matches": cart_matches,
        "use_credits": row.use_credits,
        "lines": row.snapshot["lines"],
        "totals": row.snapshot["totals"],
        "expires_at": iso(row.expires_at),
        "created_at": iso(row.created_at),
        "checkout_id": row.checkout_id,
        "replaced_by": row.replaced_by,
    }


async def _owned_session(db: AsyncSession, session_id: str, user_id: str) -> CheckoutSession:
    row = await store.get_session(db, session_id=session_id, user_id=user_id)
    if row is None:
        raise rules.SessionNotFound()
    return row


@router.post("/carts/{cart_id}/sessions", status_code=CREATED)
async def open_session(
    cart_id: str,
    principal: Shopper,
    runtime: Runtime,
    response: Response,
    session_in: SessionIn | None = None,
) -> dict[str, Any]:
    """The cart's active session for this payment choice: 200 with the existing one while it
    still stands for the cart, else 201 with a new one (replacing the old)."""
    use_credits = (session_in or SessionIn()).use_credits
    now = utcnow()
    async with runtime.transaction() as db:
        cart = await owned_cart(db, cart_id, principal.user_id, for_update=True)
        issued = await issue(
            db,
            cart=cart,
            use_credits=use_credits,
            now=now,
            ttl_seconds=runtime.settings.session_ttl_seconds,
        )
        body = session_view(issued.row, now=now, problem=None, cart_matches=True)
    response.status_code = CREATED if issued.created else OK
    return body


@router.get("/sessions/{session_id}")
async def validate_session(session_id: str, principal: Shopper, runtime: Runtime) -> dict[str, Any]:
    """Always 200 for the owner: whether the session can be checked out now, and why not."""
    now = utcnow()
    async with runtime.sessionmaker() as db:
        row = await _owned_session(db, session_id, principal.user_id)
        validation = await validate(db, row=row, now=now)
    return session_view(
        row, now=now, problem=validation.problem, cart_matches=validation.cart_matches
    )


@router.post("/sessions/{session_id}/recover", status_code=CREATED)
async def recover_session(
    session_id: str, principal: Shopper, runtime: Runtime, response: Response
) -> dict[str, Any]:
    """An expired session whose cart is unchanged and still checkout-able: 201 with a new active
    session (200 if an earlier recovery already made it). Anything else: 409 with the reason."""
    now = utcnow()
    async with runtime.transaction() as db:
        old = await _owned_session(db, session_id, principal.user_id)
        cart = await owned_cart(db, old.cart_id, principal.user_id, for_update=True)
        await db.refresh(old)  # as it is now that the cart is locked
        issued = await recover(
            db, old=old, cart=cart, now=now, ttl_seconds=runtime.settings.session_ttl_seconds
        )
        body = session_view(issued.row, now=now, problem=None, cart_matches=True)
    response.status_code = CREATED if issued.created else OK
    return body
