"""HTTP routes of the cart service (a gateway mounts them under /api/cart)."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.cart import domain
from services.cart import repository as repo
from services.cart.checkout import order_url, request_checkout
from services.cart.models import Cart, CatalogueItem
from services.cart.settings import CartSettings
from shared.auth import Operator, Shopper
from shared.errors import ApiError, not_found
from shared.messages.contracts import ItemKind
from shared.runtime import ServiceRuntime, runtime_of

router = APIRouter()

Runtime = Annotated[ServiceRuntime, Depends(runtime_of)]
ItemId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
MAX_MONEY = 1_000_000_000  # fits a 32-bit column with room to multiply by a quantity

STATUS_OF = {
    domain.EmptyCart: 422,
    domain.ItemUnavailable: 422,
    domain.QuantityOutOfRange: 422,
    domain.MixedCurrencies: 422,
    domain.CartNotOpen: 409,
}


@contextlib.contextmanager
def domain_errors() -> Iterator[None]:
    """Turns domain errors into client errors carrying the domain's code."""
    try:
        yield
    except domain.CartError as exc:
        raise ApiError(STATUS_OF.get(type(exc), 422), exc.code, str(exc)) from None


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


class LineIn(BaseModel):
    # extra="forbid": a client sending its own price gets a 422, never a cheaper line.
    model_config = ConfigDict(extra="forbid")

    quantity: int


class CheckoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    use_credits: bool = True


# --- views -----------------------------------------------------------------------------------


def item_view(item: CatalogueItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "kind": item.kind,
        "name": item.name,
        "unit_price": item.unit_price,
        "currency": item.currency,
        "credit_price": item.credit_price,
        "units_per_item": item.units_per_item,
        "active": item.active,
    }


async def cart_view(session: AsyncSession, cart: Cart, *, use_credits: bool) -> dict[str, Any]:
    """Lines and totals as the server prices them; totals count only lines that can be bought."""
    items = await repo.line_items(session, cart.id)
    buyable = [i for i in items if i.active and i.currency == cart.currency]
    with domain_errors():
        priced = domain.price_lines(buyable, use_credits=use_credits, currency=cart.currency)
    paid_with = {line.item_id: line.paid_with for line in priced.lines}
    lines = [
        {
            "item_id": i.item_id,
            "name": i.name,
            "kind": i.kind,
            "quantity": i.quantity,
            "unit_price": i.unit_price,
            "credit_price": i.credit_price,
            "units_per_item": i.units_per_item,
            "units": i.units_per_item * i.quantity,
            "available": i.item_id in paid_with,
            "paid_with": paid_with.get(i.item_id),
        }
        for i in items
    ]
    return {
        "cart_id": cart.id,
        "status": cart.status,
        "currency": cart.currency,
        "lines": lines,
        "totals": asdict(priced.totals),
    }


async def stored_item(session: AsyncSession, item_id: str) -> CatalogueItem:
    item = await repo.get_item(session, item_id)
    if item is None:
        raise not_found("item")
    return item


async def owned_cart(session: AsyncSession, cart_id: str, user_id: str) -> Cart:
    cart = await repo.get_cart(session, cart_id=cart_id, user_id=user_id)
    if cart is None:
        raise not_found("cart")
    return cart


# --- catalogue -------------------------------------------------------------------------------


@router.get("/catalogue", tags=["catalogue"])
async def list_catalogue(runtime: Runtime) -> dict[str, Any]:
    async with runtime.sessionmaker() as session:
        items = await repo.active_items(session)
    return {"items": [item_view(i) for i in items]}


@router.put("/catalogue/items/{item_id}", tags=["catalogue"])
async def put_item(
    item_id: ItemId, item_in: ItemIn, _op: Operator, runtime: Runtime
) -> dict[str, Any]:
    async with runtime.transaction() as session:
        await repo.upsert_item(session, item_id=item_id, values=item_in.model_dump())
        return item_view(await stored_item(session, item_id))


@router.delete("/catalogue/items/{item_id}", tags=["catalogue"])
async def deactivate_item(item_id: ItemId, _op: Operator, runtime: Runtime) -> dict[str, Any]:
    async with runtime.transaction() as session:
        if not await repo.deactivate_item(session, item_id):
            raise not_found("item")
        return item_view(await stored_item(session, item_id))


# --- carts -----------------------------------------------------------------------------------


@router.post("/carts", status_code=201, tags=["carts"])
async def create_cart(principal: Shopper, runtime: Runtime) -> dict[str, Any]:
    settings = cast(CartSettings, runtime.settings)
    async with runtime.transaction() as session:
        cart = await repo.create_cart(
            session,
            cart_id=str(uuid.uuid4()),
            user_id=principal.user_id,
            currency=settings.default_currency,
        )
        return await cart_view(session, cart, use_credits=True)


@router.get("/carts/{cart_id}", tags=["carts"])
async def get_cart(
    cart_id: str, principal: Shopper, runtime: Runtime, use_credits: Annotated[bool, Query()] = True
) -> dict[str, Any]:
    async with runtime.sessionmaker() as session:
        cart = await owned_cart(session, cart_id, principal.user_id)
        return await cart_view(session, cart, use_credits=use_credits)


@router.put("/carts/{cart_id}/lines/{item_id}", tags=["carts"])
async def put_line(
    cart_id: str, item_id: str, line_in: LineIn, principal: Shopper, runtime: Runtime
) -> dict[str, Any]:
    async with runtime.transaction() as session:
        cart = await owned_cart(session, cart_id, principal.user_id)
        item = await repo.get_item(session, item_id)
        with domain_errors():
            quantity = domain.check_quantity(line_in.quantity)
            if item is None or not item.active:
                raise domain.ItemUnavailable(item_id)
            domain.ensure_currency(cart.currency, item.currency)
            if not await repo.touch_open_cart(session, cart.id):
                raise domain.CartNotOpen(cart.status)
        await repo.set_line(session, cart_id=cart.id, item_id=item_id, quantity=quantity)
        return await cart_view(session, cart, use_credits=True)


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
        return await cart_view(session, cart, use_credits=True)


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
    with domain_errors():
        result = await request_checkout(
            runtime,
            user_id=principal.user_id,
            cart_id=cart_id,
            key=key,
            use_credits=(checkout_in or CheckoutIn()).use_credits,
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
    return {
        "checkout_id": found.id,
        "order_id": found.id,
        "cart_id": found.cart_id,
        "status": found.status,
        "reason": found.reason,
        "totals": json.loads(found.response)["totals"],
        "order_url": order_url(found.id),
    }
