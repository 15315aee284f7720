"""Turning an open cart into a `CheckoutRequested`, exactly once per idempotency key."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from services.cart import domain
from services.cart import repository as repo
from services.cart.models import Checkout
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


def accepted_body(checkout_id: str, totals: domain.Totals) -> dict[str, Any]:
    return {
        "checkout_id": checkout_id,
        "order_id": checkout_id,
        "status": "requested",
        "totals": asdict(totals),
        "order_url": order_url(checkout_id),
    }


async def request_checkout(
    runtime: ServiceRuntime, *, user_id: str, cart_id: str, key: str, use_credits: bool
) -> CheckoutResponse:
    """Starts a checkout, or answers a retry with the response its first attempt got."""
    digest = domain.request_hash(cart_id, use_credits=use_credits)
    async with runtime.sessionmaker() as session:
        existing = await repo.checkout_by_key(session, user_id=user_id, key=key)
    if existing is not None:
        return _replay(existing, digest)
    try:
        return await _start(
            runtime,
            user_id=user_id,
            cart_id=cart_id,
            key=key,
            use_credits=use_credits,
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


def _replay(existing: Checkout, digest: str) -> CheckoutResponse:
    if existing.request_hash != digest:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different checkout request",
        )
    return CheckoutResponse(existing.id, ACCEPTED, json.loads(existing.response))


async def _start(
    runtime: ServiceRuntime,
    *,
    user_id: str,
    cart_id: str,
    key: str,
    use_credits: bool,
    digest: str,
) -> CheckoutResponse:
    async with runtime.transaction() as session:
        cart = await repo.get_cart(session, cart_id=cart_id, user_id=user_id)
        if cart is None:
            raise not_found("cart")
        domain.ensure_open(cart.status)
        priced = domain.price_checkout(
            await repo.line_items(session, cart.id), use_credits=use_credits
        )
        domain.ensure_currency(cart.currency, priced.currency)
        checkout_id = str(uuid.uuid4())
        body = accepted_body(checkout_id, priced.totals)
        # Inserted before the cart moves: a same-key twin then fails on the unique key (and is
        # answered as a retry) rather than on the cart's version.
        await repo.add_checkout(
            session,
            Checkout(
                id=checkout_id,
                cart_id=cart.id,
                user_id=user_id,
                idempotency_key=key,
                request_hash=digest,
                status="requested",
                response=json.dumps(body),
            ),
        )
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
