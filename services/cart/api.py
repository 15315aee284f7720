"""HTTP routes of the cart service (a gateway mounts them under /api/cart): catalogue, carts and
checkout. Checkout sessions have their own routes in `checkout_sessions/api.py`. Domain errors
raised under a route are answered by `CartRoute` (`http_errors`)."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Self

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from services.cart import domain
from services.cart import repository as repo
from services.cart.checkout import order_url, request_checkout
from services.cart.checkout_sessions.service import current_session_id, renew_after_change
from services.cart.deps import CartRuntime
from services.cart.http_errors import CartRoute
from services.cart.models import Cart, utcnow
from services.cart.views import cart_view, item_view, owned_cart, stored_item
from shared.auth import Operator, Shopper
from shared.errors import ApiError, not_found
from shared.limits import MAX_UNIT_PRICE
from shared.messages.contracts import ItemKind
from shared.runtime import runtime_of

router = APIRouter(route_class=CartRoute)

Runtime = Annotated[CartRuntime, Depends(runtime_of)]
ItemId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]


# --- bodies ----------------------------------------------------------------------------------


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ItemKind
    name: str = Field(min_length=1, max_length=200)
    unit_price: int = Field(ge=0, le=MAX_UNIT_PRICE, strict=True)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    credit_price: int | None = Field(default=None, ge=0, le=MAX_UNIT_PRICE, strict=True)
    units_per_item: int = Field(default=1, ge=0, le=MAX_UNIT_PRICE, strict=True)
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
    async with runtime.sessionmaker() as db:
        items = await repo.items_on_sale(db, now)
    return {"items": [item_view(i, now=now) for i in items]}


@router.put("/catalogue/items/{item_id}", tags=["catalogue"])
async def put_item(
    item_id: ItemId, item_in: ItemIn, _op: Operator, runtime: Runtime
) -> dict[str, Any]:
    async with runtime.transaction() as db:
        await repo.upsert_item(db, item_id=item_id, values=item_in.model_dump())
        return item_view(await stored_item(db, item_id), now=utcnow())


@router.delete("/catalogue/items/{item_id}", tags=["catalogue"])
async def deactivate_item(item_id: ItemId, _op: Operator, runtime: Runtime) -> dict[str, Any]:
    async with runtime.transaction() as db:
        if not await repo.deactivate_item(db, item_id):
            raise not_found("item")
        return item_view(await stored_item(db, item_id), now=utcnow())


# --- carts -----------------------------------------------------------------------------------


@router.post("/carts", status_code=201, tags=["carts"])
async def create_cart(principal: Shopper, runtime: Runtime) -> dict[str, Any]:
    async with runtime.transaction() as db:
        cart = await repo.create_cart(
            db,
            cart_id=str(uuid.uuid4()),
            user_id=principal.user_id,
            currency=runtime.settings.default_currency,
        )
        return await cart_view(db, cart, use_credits=True, now=utcnow(), session_id=None)


@router.get("/carts/{cart_id}", tags=["carts"])
async def get_cart(
    cart_id: str, principal: Shopper, runtime: Runtime, use_credits: Annotated[bool, Query()] = True
) -> dict[str, Any]:
    now = utcnow()
    async with runtime.sessionmaker() as db:
        cart = await owned_cart(db, cart_id, principal.user_id)
        session_id = await current_session_id(db, cart.id, now=now)
        return await cart_view(db, cart, use_credits=use_credits, now=now, session_id=session_id)


async def _after_change(runtime: CartRuntime, db: AsyncSession, cart: Cart) -> dict[str, Any]:
    """Renews the cart's checkout session for its new content and answers with the cart."""
    now = utcnow()
    renewed = await renew_after_change(
        db, cart=cart, now=now, ttl_seconds=runtime.settings.session_ttl_seconds
    )
    return await cart_view(
        db,
        cart,
        use_credits=renewed.use_credits if renewed is not None else True,
        now=now,
        session_id=renewed.id if renewed is not None else None,
    )


@router.put("/carts/{cart_id}/lines/{item_id}", tags=["carts"])
async def put_line(
    cart_id: str, item_id: str, line_in: LineIn, principal: Shopper, runtime: Runtime
) -> dict[str, Any]:
    async with runtime.transaction() as db:
        cart = await owned_cart(db, cart_id, principal.user_id)
        item = await repo.get_item(db, item_id)
        quantity = domain.check_quantity(line_in.quantity)
        if item is None or not domain.is_available(item, utcnow()):
            raise domain.ItemUnavailable(item_id)
        domain.ensure_currency(cart.currency, item.currency)
        if not await repo.touch_open_cart(db, cart.id):
            raise domain.CartNotOpen(cart.status)
        if line_in.replaces is not None and line_in.replaces != item_id:
            await repo.remove_line(db, cart_id=cart.id, item_id=line_in.replaces)
        await repo.set_line(db, cart_id=cart.id, item_id=item_id, quantity=quantity)
        return await _after_change(runtime, db, cart)


@router.delete("/carts/{cart_id}/lines/{item_id}", tags=["carts"])
async def delete_line(
    cart_id: str, item_id: str, principal: Shopper, runtime: Runtime
) -> dict[str, Any]:
    async with runtime.transaction() as db:
        cart = await owned_cart(db, cart_id, principal.user_id)
        if not await repo.touch_open_cart(db, cart.id):
            raise domain.CartNotOpen(cart.status)
        await repo.remove_line(db, cart_id=cart.id, item_id=item_id)
        return await _after_change(runtime, db, cart)


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
    async with runtime.sessionmaker() as db:
        found = await repo.get_checkout(db, checkout_id=checkout_id, user_id=principal.user_id)
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
