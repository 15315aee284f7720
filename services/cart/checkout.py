"""Turning a checkout session into a `CheckoutRequested`, exactly once per idempotency key and
at most once per session."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any, cast

from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.cart import domain, sessions
from services.cart import repository as repo
from services.cart import session_domain as rules
from services.cart.admission import Admission
from services.cart.models import utcnow
from services.cart.settings import CartSettings
from shared.errors import ApiError, not_found
from shared.messages.contracts import CheckoutRequested
from shared.runtime import ServiceRuntime

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
    runtime: ServiceRuntime,
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
    """
    if session_id is None and use_credits is None:
        use_credits = True
    digest = domain.request_hash(cart_id, use_credits=use_credits, session_id=session_id)
    try:
        # One transaction: the key is looked up in it, then (not found) the checkout is made.
        async with runtime.transaction() as session:
            existing = await repo.checkout_by_key(session, user_id=user_id, key=key)
            if existing is None:
                admission: Admission = runtime.spec.state["admission"]
                await admission.admit(runtime.bus)
                return await _start(
                    session,
                    runtime,
                    user_id=user_id,
                    cart_id=cart_id,
                    key=key,
                    use_credits=use_credits,
                    session_id=session_id,
                    digest=digest,
                )
    except (IntegrityError, ApiError, domain.CartError):
        # A concurrent request with the same key may have committed first, so this one hit the
        # unique key or found the cart already checking out: then it is that request's retry.
        async with runtime.sessionmaker() as session:
            existing = await repo.checkout_by_key(session, user_id=user_id, key=key)
        if existing is None:
            raise
    return _replay(existing, digest)


def _replay(existing: Row[str, str, str], digest: str) -> CheckoutResponse:
    if existing.request_hash != digest:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different checkout request",
        )
    return CheckoutResponse(existing.id, ACCEPTED, json.loads(existing.response))


async def _start(
    session: AsyncSession,
    runtime: ServiceRuntime,
    *,
    user_id: str,
    cart_id: str,
    key: str,
    use_credits: bool | None,
    session_id: str | None,
    digest: str,
) -> CheckoutResponse:
    """Makes the checkout in the caller's transaction, which commits it."""
    settings = cast(CartSettings, runtime.settings)
    now = utcnow()
    cart = await repo.get_cart(session, cart_id=cart_id, user_id=user_id, for_update=True)
    if cart is None:
        raise not_found("cart")
    chosen: sessions.Issued
    if session_id is None:
        chosen = await sessions.choose(
            session,
            cart=cart,
            use_credits=bool(use_credits),
            now=now,
            ttl_seconds=settings.session_ttl_seconds,
        )
    else:
        found = await repo.get_session(session, session_id=session_id, user_id=user_id)
        if found is None or found.cart_id != cart.id:
            raise not_found("session")
        if use_credits is not None and use_credits != found.use_credits:
            raise rules.UseCreditsConflict()
        problem = rules.checkout_problem(
            sessions.facts(found), await sessions.cart_facts(session, cart), now
        )
        if problem is not None:
            raise problem
        chosen = sessions.Issued(found, created=False)
    priced = rules.priced_from(chosen.row.snapshot)
    checkout_id = str(uuid.uuid4())
    body = accepted_body(checkout_id, chosen.row.id, priced.totals)
    # Inserted before the cart moves: a same-key twin then fails on the unique key (and is
    # answered as a retry) rather than on the cart's version.
    await repo.add_checkout(
        session,
        checkout_id=checkout_id,
        cart_id=cart.id,
        user_id=user_id,
        key=key,
        request_hash=digest,
        response=json.dumps(body),
    )
    if chosen.created:
        # Issued for this checkout and seen by no one else: stored completed straight away
        # (after the checkout row it names) rather than stored active and then completed.
        chosen.row.status = rules.COMPLETED
        chosen.row.checkout_id = checkout_id
        await repo.add_session(session, chosen.row)
    elif not await repo.complete_session(
        session, session_id=chosen.row.id, checkout_id=checkout_id, now=now
    ):
        raise rules.SessionNotActive()
    if not await repo.start_cart_checkout(session, cart_id=cart.id, version=cart.version):
        raise ApiError(
            409,
            "cart_not_open",
            "the cart changed or is already being checked out; reload it and retry",
        )
    await runtime.emit(
        session,
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
