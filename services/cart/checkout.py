"""Turning a checkout session into a `CheckoutRequested`, exactly once per idempotency key and
at most once per session."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.cart import domain
from services.cart import repository as repo
from services.cart.checkout_sessions.rules import priced_from
from services.cart.checkout_sessions.service import check_out_session, session_for_checkout
from services.cart.deps import CartRuntime
from services.cart.models import utcnow
from shared.messages.contracts import CheckoutRequested

ACCEPTED = 202


@dataclass(frozen=True)
class CheckoutResponse:
    checkout_id: str
    status_code: int
    body: dict[str, Any]


def order_url(checkout_id: str) -> str:
    return f"/api/orders/orders/{checkout_id}"


def accepted_body(checkout_id: str, session_id: str, totals: domain.Totals) -> dict[str, Any]:
    return {
        "checkout_id": checkout_id,
        "order_id": checkout_id,
        "session_id": session_id,
        "status": "requested",
        "totals": asdict(totals),
        "order_url": order_url(checkout_id),
    }


async def request_checkout(
    runtime: CartRuntime,
    *,
    user_id: str,
    cart_id: str,
    key: str,
    use_credits: bool | None,
    session_id: str | None = None,
) -> CheckoutResponse:
    """Starts a checkout, or answers a retry with the response its first attempt got.

    Without `session_id` the cart's active session is used (renewed or issued as needed), as
    before sessions existed; with it, exactly that session must still be good to check out.
    Refusals are domain errors (`domain`, `checkout_sessions.rules`).
    """
    if session_id is None and use_credits is None:
        use_credits = True
    digest = domain.request_hash(cart_id, use_credits=use_credits, session_id=session_id)
    try:
        # One transaction: the key is looked up in it, then (not found) the checkout is made.
        async with runtime.transaction() as db:
            existing = await repo.checkout_by_key(db, user_id=user_id, key=key)
            if existing is None:
                await runtime.deps.admission.admit(runtime.bus)
                return await _start(
                    db,
                    runtime,
                    user_id=user_id,
                    cart_id=cart_id,
                    key=key,
                    use_credits=use_credits,
                    session_id=session_id,
                    digest=digest,
                )
    except (IntegrityError, domain.CartError):
        # A concurrent request with the same key may have committed first, so this one hit the
        # unique key or found the cart already checking out: then it is that request's retry.
        async with runtime.sessionmaker() as db:
            existing = await repo.checkout_by_key(db, user_id=user_id, key=key)
        if existing is None:
            raise
    return _replay(existing, digest)


def _replay(existing: Row[str, str, str], digest: str) -> CheckoutResponse:
    if existing.request_hash != digest:
        raise domain.IdempotencyKeyReused()
    return CheckoutResponse(existing.id, ACCEPTED, json.loads(existing.response))


async def _start(
    db: AsyncSession,
    runtime: CartRuntime,
    *,
    user_id: str,
    cart_id: str,
    key: str,
    use_credits: bool | None,
    session_id: str | None,
    digest: str,
) -> CheckoutResponse:
    """Makes the checkout in the caller's transaction, which commits it."""
    now = utcnow()
    cart = await repo.get_cart(db, cart_id=cart_id, user_id=user_id, for_update=True)
    if cart is None:
        raise domain.CartNotFound()
    chosen = await session_for_checkout(
        db,
        cart=cart,
        user_id=user_id,
        session_id=session_id,
        use_credits=use_credits,
        now=now,
        ttl_seconds=runtime.settings.session_ttl_seconds,
    )
    priced = priced_from(chosen.row.snapshot)
    checkout_id = str(uuid.uuid4())
    body = accepted_body(checkout_id, chosen.row.id, priced.totals)
    # Inserted before the cart moves: a same-key twin then fails on the unique key (and is
    # answered as a retry) rather than on the cart's version.
    await repo.add_checkout(
        db,
        checkout_id=checkout_id,
        cart_id=cart.id,
        user_id=user_id,
        key=key,
        request_hash=digest,
        response=json.dumps(body),
    )
    await check_out_session(db, chosen, checkout_id=checkout_id, now=now)
    if not await repo.start_cart_checkout(db, cart_id=cart.id, version=cart.version):
        raise domain.StaleCart()
    await runtime.emit(
        db,
        CheckoutRequested(
            checkout_id=checkout_id,
            cart_id=cart.id,
            user_id=user_id,
            currency=priced.currency,
            lines=priced.lines,
            money_total=priced.totals.money_total,
            credits_total=priced.totals.credits_total,
        ),
        correlation_id=checkout_id,
    )
    return CheckoutResponse(checkout_id, ACCEPTED, body)
