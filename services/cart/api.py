"""HTTP routes of the cart service (a gateway mounts them under /api/cart): catalogue, carts and
checkout. Checkout sessions have their own routes in `session_api.py`."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Self, cast

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from services.cart import domain, sessions
from services.cart import repository as repo
from services.cart.checkout import order_url, request_checkout
from services.cart.models import Cart, utcnow
from services.cart.settings import CartSettings
from services.cart.views import (
    cart_view,
    domain_errors,
    item_view,
    owned_cart,
    stored_item,
)
from shared.auth import Operator, Shopper
from shared.errors import ApiError, not_found
from shared.messages.contracts import ItemKind
from shared.runtime import ServiceRuntime, runtime_of

router = APIRouter()

Runtime = Annotated[ServiceRuntime, Depends(runtime_of)]
ItemId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
MAX_MONEY = 1_000_000_000  # fits a 32-bit column with room to multiply by a quantity


# --- bodies ----------------------------------------------------------------------------------


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ItemKind
    name: str = Field(min_length=1, max_length=200)
    unit_price: int = Field(ge=0, le=MAX_MONEY, strict=True)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    credit_price: int | None = Field(default=None, ge=0, le=MAX_MONEY, strict=True)
    units_per_item: int = Field(default=1, ge=0, le=MAX_MONEY, strict=True)
    active: bool = True
    # On sale from / until (ISO 8601 with an offset); omitted: no bound.
    available_from: AwareDatetime | None = None
    available_until: AwareDatetime | None = None

    @model_validator(mode="after")
    def _window_is_not_empty(self) -> Self:
        if (
            self.available_from is not None
            and self.available_until is not None
            and self.available_until <= self.available_from
        ):
            raise ValueError("available_until must be later than available_from")
        return self


class LineIn(BaseModel):
    # extra="forbid": a client sending its own price gets a 422, never a cheaper line.
    model_config = ConfigDict(extra="forbid")

    quantity: int
    # Switching a package: the line of this item is removed in the same change.
    replaces: str | None = Field(default=None, max_length=64)


class CheckoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Omitted: true, or the session's choice when `session_id` is given.
    use_credits: bool | None = None
    session_id: str | None = Field(default=None, max_length=36)


# --- catalogue -------------------------------------------------------------------------------


@router.get("/catalogue", tags=["catalogue"])
async def list_catalogue(runtime: Runtime) -> dict[str, Any]:
    """The items on sale now."""
    now = utcnow()
    async with runtime.sessionmaker() as session:
        items = await repo.items_on_sale(session, now)
    return {"items": [item_view(i, now=now) for i in items]}


@router.put("/catalogue/items/{item_id}", tags=["catalogue"])
async def put_item(
    item_id: ItemId, item_in: ItemIn, _op: Operator, runtime: Runtime
) -> dict[str, Any]:
    async with runtime.transaction() as session:
        await repo.upsert_item(session, item_id=item_id, values=item_in.model_dump())
        return item_view(await stored_item(session, item_id), now=utcnow())


@router.delete("/catalogue/items/{item_id}", tags=["catalogue"])
async def deactivate_item(item_id: ItemId, _op: Operator, runtime: Runtime) -> dict[str, Any]:
    async with runtime.transaction() as session:
        if not await repo.deactivate_item(session, item_id):
            raise not_found("item")
        return item_view(await stored_item(session, item_id), now=utcnow())


# --- carts -----------------------------------------------------------------------------------


def _settings(runtime: ServiceRuntime) -> CartSettings:
    return cast(CartSettings, runtime.settings)


@router.post("/carts", status_code=201, tags=["carts"])
async def create_cart(principal: Shopper, runtime: Runtime) -> dict[str, Any]:
    async with runtime.transaction() as session:
        cart = await repo.create_cart(
            session,
            cart_id=str(uuid.uuid4()),
            user_id=principal.user_id,
            currency=_settings(runtime).default_currency,
        )
        return await cart_view(session, cart, use_credits=True, now=utcnow(), session_id=None)


@router.get("/carts/{cart_id}", tags=["carts"])
async def get_cart(
    cart_id: str, principal: Shopper, runtime: Runtime, use_credits: Annotated[bool, Query()] = True
) -> dict[str, Any]:
    now = utcnow()
    async with runtime.sessionmaker() as session:
        cart = await owned_cart(session, cart_id, principal.user_id)
        active = await repo.active_session(session, cart.id)
        session_id = active.id if active is not None and active.expires_at > now else None
        return await cart_view(
            session, cart, use_credits=use_credits, now=now, session_id=session_id
        )


async def _after_change(
    runtime: ServiceRuntime, session: AsyncSession, cart: Cart
) -> dict[str, Any]:
    """Renews the cart's checkout session for its new content and answers with the cart."""
    now = utcnow()
    renewed = await sessions.renew_after_change(
        session, cart=cart, now=now, ttl_seconds=_settings(runtime).session_ttl_seconds
    )
    return await cart_view(
        session,
        cart,
        use_credits=renewed.use_credits if renewed is not None else True,
        now=now,
        session_id=renewed.id if renewed is not None else None,
    )


@router.put("/carts/{cart_id}/lines/{item_id}", tags=["carts"])
async def put_line(
    cart_id: str, item_id: str, line_in: LineIn, principal: Shopper, runtime: Runtime
) -> dict[str, Any]:
    async with runtime.transaction() as session:
        cart = await owned_cart(session, cart_id, principal.user_id)
        item = await repo.get_item(session, item_id)
        with domain_errors():
            quantity = domain.check_quantity(line_in.quantity)
            if item is None or not domain.is_available(item, utcnow()):
                raise domain.ItemUnavailable(item_id)
            domain.ensure_currency(cart.currency, item.currency)
            if not await repo.touch_open_cart(session, cart.id):
                raise domain.CartNotOpen(cart.status)
        if line_in.replaces is not None and line_in.replaces != item_id:
            await repo.remove_line(session, cart_id=cart.id, item_id=line_in.replaces)
        await repo.set_line(session, cart_id=cart.id, item_id=item_id, quantity=quantity)
        return await _after_change(runtime, session, cart)


@router.delete("/carts/{cart_id}/lines/{item_id}", tags=["carts"])
async def delete_line(
    cart_id: str, item_id: str, principal: Shopper, runtime: Runtime
) -> dict[str, Any]:
    async with runtime.transaction() as session:
        cart = await owned_cart(session, cart_id, principal.user_id)
        with domain_errors():
            if not await repo.touch_open_cart(session, cart.id):
                raise domain.CartNotOpen(cart.status)
        await repo.remove_line(session, cart_id=cart.id, item_id=item_id)
        return await _after_change(runtime, session, cart)


# --- checkout --------------------------------------------------------------------------------


@router.post("/carts/{cart_id}/checkout", status_code=202, tags=["checkout"])
async def checkout(
    cart_id: str,
    request: Request,
    principal: Shopper,
    runtime: Runtime,
    checkout_in: CheckoutIn | None = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    key = (idempotency_key or "").strip()
    if not key:
        raise ApiError(400, "idempotency_key_required", "send an Idempotency-Key header")
    if len(key) > 200:
        raise ApiError(400, "idempotency_key_invalid", "Idempotency-Key is at most 200 chars")
    body = checkout_in or CheckoutIn()
    with domain_errors():
        result = await request_checkout(
            runtime,
            user_id=principal.user_id,
            cart_id=cart_id,
            key=key,
            use_credits=body.use_credits,
            session_id=body.session_id,
        )
    # The checkout id is the saga's trace id; the error middleware echoes it in X-Trace-Id.
    request.state.trace_id = result.checkout_id
    return JSONResponse(result.body, status_code=result.status_code)


@router.get("/checkouts/{checkout_id}", tags=["checkout"])
async def get_checkout(checkout_id: str, principal: Shopper, runtime: Runtime) -> dict[str, Any]:
    async with runtime.sessionmaker() as session:
        found = await repo.get_checkout(session, checkout_id=checkout_id, user_id=principal.user_id)
    if found is None:
        raise not_found("checkout")
    response = json.loads(found.response)
    return {
        "checkout_id": found.id,
        "order_id": found.id,
        "cart_id": found.cart_id,
        # Checkouts stored before sessions existed have none.
        "session_id": response.get("session_id"),
        "status": found.status,
        "reason": found.reason,
        "totals": response["totals"],
        "order_url": order_url(found.id),
    }
