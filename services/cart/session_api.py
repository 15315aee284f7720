"""HTTP routes of checkout sessions: issue, validate, recover (see `session_domain` for the rules).

Responses carry the session as validated now (`views.session_view`): `valid`, and when it is not,
the `code` a checkout with it would be refused with.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict

from services.cart import repository as repo
from services.cart import session_domain as rules
from services.cart import sessions
from services.cart.models import utcnow
from services.cart.settings import CartSettings
from services.cart.views import domain_errors, owned_cart, owned_session, session_view
from shared.auth import Shopper
from shared.errors import not_found
from shared.runtime import ServiceRuntime, runtime_of

router = APIRouter(tags=["checkout sessions"])

Runtime = Annotated[ServiceRuntime, Depends(runtime_of)]

CREATED, OK = 201, 200


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    use_credits: bool = True


def _ttl(runtime: ServiceRuntime) -> int:
    return cast(CartSettings, runtime.settings).session_ttl_seconds


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
    async with runtime.transaction() as session:
        cart = await owned_cart(session, cart_id, principal.user_id, for_update=True)
        with domain_errors():
            issued = await sessions.issue(
                session, cart=cart, use_credits=use_credits, now=now, ttl_seconds=_ttl(runtime)
            )
        body = session_view(issued.row, now=now, problem=None, cart_matches=True)
    response.status_code = CREATED if issued.created else OK
    return body


@router.get("/sessions/{session_id}")
async def validate_session(session_id: str, principal: Shopper, runtime: Runtime) -> dict[str, Any]:
    """Always 200 for the owner: whether the session can be checked out now, and why not."""
    now = utcnow()
    async with runtime.sessionmaker() as session:
        row = await owned_session(session, session_id, principal.user_id)
        cart = await repo.get_cart(session, cart_id=row.cart_id, user_id=row.user_id)
        if cart is None:  # the foreign key makes this impossible; answer as if never issued
            raise not_found("session")
        cart_now = await sessions.cart_facts(session, cart)
    problem = rules.checkout_problem(sessions.facts(row), cart_now, now)
    matches = rules.current_hash(cart_now, use_credits=row.use_credits) == row.content_hash
    return session_view(row, now=now, problem=problem, cart_matches=matches)


@router.post("/sessions/{session_id}/recover", status_code=CREATED)
async def recover_session(
    session_id: str, principal: Shopper, runtime: Runtime, response: Response
) -> dict[str, Any]:
    """An expired session whose cart is unchanged and still checkout-able: 201 with a new active
    session (200 if an earlier recovery already made it). Anything else: 409 with the reason."""
    now = utcnow()
    async with runtime.transaction() as session:
        old = await owned_session(session, session_id, principal.user_id)
        cart = await owned_cart(session, old.cart_id, principal.user_id, for_update=True)
        await session.refresh(old)  # as it is now that the cart is locked
        with domain_errors(status_code=409):
            issued = await sessions.recover(
                session, old=old, cart=cart, now=now, ttl_seconds=_ttl(runtime)
            )
        body = session_view(issued.row, now=now, problem=None, cart_matches=True)
    response.status_code = CREATED if issued.created else OK
    return body
