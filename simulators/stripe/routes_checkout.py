"""Checkout Session endpoints: ``/v1/checkout/sessions`` and its create-parameter validation."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request, Response

from . import objects
from .objects import ParamError, StripeObject
from .params import (
    LIST_PARAMS,
    Params,
    as_array,
    as_hash,
    as_integer,
    as_string,
    check_charge_amount,
    expand_param,
    list_args,
    list_expand_param,
    list_filters,
    metadata_param,
    missing_param,
    opt_string,
    reject_unknown,
    url_param,
)
from .store import LineItem, NewSession, RequestContext, SimStore, check_session_expand
from .stripe_api import StripeApi

# Stripe's own limits on Checkout Session expiry.
MIN_EXPIRY_SECONDS = 30 * 60
MAX_EXPIRY_SECONDS = 24 * 3600
# A client computing `now + 30 min` reaches us a moment later; rejecting that would make the
# documented minimum unusable, so this much latency/clock skew is tolerated on the lower bound.
EXPIRY_SKEW_SECONDS = 60
# "For payment mode, there is a maximum of 100 line items" (API reference, line_items).
MAX_LINE_ITEMS = 100
# The payment method types the simulator can take: a card, and bank debits whose result comes
# later (its `delayed` payments), each in the currencies it collects in.
CARD = "card"
DELAYED_METHOD_CURRENCIES: dict[str, frozenset[str]] = {
    "acss_debit": frozenset({"cad", "usd"}),
    "au_becs_debit": frozenset({"aud"}),
    "bacs_debit": frozenset({"gbp"}),
    "sepa_debit": frozenset({"eur"}),
    "us_bank_account": frozenset({"usd"}),
}

_CREATE_SESSION_PARAMS = frozenset(
    {
        "cancel_url",
        "client_reference_id",
        "currency",
        "customer_email",
        "expand",
        "expires_at",
        "line_items",
        "metadata",
        "mode",
        "payment_method_types",
        "success_url",
    }
)
_LINE_ITEM_PARAMS = frozenset({"price_data", "quantity"})
_PRICE_DATA_PARAMS = frozenset({"currency", "product_data", "unit_amount"})
_PRODUCT_DATA_PARAMS = frozenset({"description", "name"})


def session_spec(params: Params, now: int) -> NewSession:
    reject_unknown(params, _CREATE_SESSION_PARAMS)
    mode = opt_string(params, "mode")
    if mode is None:
        raise missing_param("mode")
    if mode != "payment":
        raise ParamError(
            f"Invalid mode: the Stripe simulator supports only mode=payment, not {mode}.",
            param="mode",
        )
    method_types = _method_types(params.get("payment_method_types"))
    success_url = url_param(params, "success_url", required=True)
    assert success_url is not None
    items, currency = _line_items(params.get("line_items"))
    # Stripe accepts a top-level currency too; price_data currencies must agree with it.
    top_currency = opt_string(params, "currency")
    if top_currency is not None and top_currency.lower() != currency:
        raise ParamError(
            f"The currency ({top_currency.lower()}) does not match the currency of the line "
            f"items ({currency}).",
            param="currency",
        )
    for method in method_types:
        if method != CARD and currency not in DELAYED_METHOD_CURRENCIES[method]:
            raise ParamError(
                f"The payment method type {method} cannot be used with currency {currency} "
                f"(it collects {', '.join(sorted(DELAYED_METHOD_CURRENCIES[method]))}).",
                param="payment_method_types",
            )
    check_charge_amount(sum(li.unit_amount * li.quantity for li in items), currency)
    expires_at = now + MAX_EXPIRY_SECONDS
    if params.get("expires_at") not in (None, ""):
        expires_at = as_integer(params["expires_at"], "expires_at")
        if expires_at < now + MIN_EXPIRY_SECONDS - EXPIRY_SKEW_SECONDS:
            raise ParamError(
                "The expires_at timestamp must be at least 30 minutes from Checkout Session "
                "creation.",
                param="expires_at",
            )
        if expires_at > now + MAX_EXPIRY_SECONDS:
            raise ParamError(
                "The expires_at timestamp must be less than 24 hours from Checkout Session "
                "creation.",
                param="expires_at",
            )
    email = opt_string(params, "customer_email", max_length=800)
    if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise ParamError(
            f"Invalid email address: {email}", param="customer_email", code="email_invalid"
        )
    return NewSession(
        currency=currency,
        line_items=items,
        success_url=success_url,
        cancel_url=url_param(params, "cancel_url", required=False),
        client_reference_id=opt_string(params, "client_reference_id", max_length=200),
        customer_email=email,
        metadata=metadata_param(params),
        expires_at=expires_at,
        payment_method_types=method_types,
    )


def _method_types(raw: Any) -> tuple[str, ...]:
    """The methods the buyer may use, as given; () when not given (the account's choice)."""
    if raw is None or raw == "":
        return ()
    known = sorted({CARD, *DELAYED_METHOD_CURRENCIES})
    types: list[str] = []
    for i, value in enumerate(as_array(raw, "payment_method_types")):
        param = f"payment_method_types[{i}]"
        method = as_string(value, param)
        if method not in known:
            raise ParamError(
                f"Invalid {param}: must be one of {', '.join(known)} (the payment method types "
                "the Stripe simulator supports).",
                param=param,
            )
        types.append(method)
    return tuple(dict.fromkeys(types))


def _line_items(raw: Any) -> tuple[tuple[LineItem, ...], str]:
    if raw is None or raw == "" or raw == []:
        raise missing_param("line_items")
    entries = as_array(raw, "line_items")
    if len(entries) > MAX_LINE_ITEMS:
        raise ParamError(
            f"A Checkout Session in payment mode can have at most {MAX_LINE_ITEMS} line items "
            f"({len(entries)} given).",
            param="line_items",
        )
    items: list[LineItem] = []
    currency: str | None = None
    for i, entry in enumerate(entries):
        p = f"line_items[{i}]"
        li = as_hash(entry, p)
        reject_unknown(li, _LINE_ITEM_PARAMS, p)
        if "price_data" not in li:
            raise missing_param(f"{p}[price_data]")
        if "quantity" not in li:
            raise missing_param(f"{p}[quantity]")
        price = as_hash(li["price_data"], f"{p}[price_data]")
        reject_unknown(price, _PRICE_DATA_PARAMS, f"{p}[price_data]")
        for key in ("currency", "unit_amount", "product_data"):
            if key not in price:
                raise missing_param(f"{p}[price_data][{key}]")
        cur = as_string(price["currency"], f"{p}[price_data][currency]").lower()
        if not re.fullmatch(r"[a-z]{3}", cur):
            raise ParamError(f"Invalid currency: {cur}", param=f"{p}[price_data][currency]")
        if currency is not None and cur != currency:
            raise ParamError(
                "All line items must use the same currency.",
                param=f"{p}[price_data][currency]",
            )
        currency = cur
        product = as_hash(price["product_data"], f"{p}[price_data][product_data]")
        reject_unknown(product, _PRODUCT_DATA_PARAMS, f"{p}[price_data][product_data]")
        if product.get("name") in (None, ""):
            raise missing_param(f"{p}[price_data][product_data][name]")
        items.append(
            LineItem(
                name=as_string(product["name"], f"{p}[price_data][product_data][name]"),
                unit_amount=as_integer(
                    price["unit_amount"], f"{p}[price_data][unit_amount]", minimum=0
                ),
                quantity=as_integer(li["quantity"], f"{p}[quantity]", minimum=1),
            )
        )
    assert currency is not None
    return tuple(items), currency


def add_checkout_routes(app: FastAPI, api: StripeApi, store: SimStore) -> None:
    @app.post("/v1/checkout/sessions")
    async def create_session(request: Request) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            expand = expand_param(params)
            check_session_expand(expand)  # before creating: a rejected request must change nothing
            created = await store.create_session(session_spec(params, store.now()))
            return await store.get_session(created["id"], expand) if expand else created

        return await api.call(request, handler)

    @app.get("/v1/checkout/sessions")
    async def list_sessions(request: Request) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            reject_unknown(params, LIST_PARAMS | {"payment_intent", "status"})
            args = list_args(params)
            status = opt_string(params, "status")
            if status is not None and status not in ("open", "complete", "expired"):
                raise ParamError(f"Invalid status: {status}", param="status")
            page = await store.list_sessions(
                limit=args.limit,
                starting_after=args.starting_after,
                ending_before=args.ending_before,
                filters=list_filters(params, ("payment_intent", "status")),
                expand=list_expand_param(params),
            )
            return objects.list_object("/v1/checkout/sessions", page.data, page.has_more)

        return await api.call(request, handler)

    @app.get("/v1/checkout/sessions/{session_id}")
    async def retrieve_session(request: Request, session_id: str) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            reject_unknown(params, frozenset({"expand"}))
            return await store.get_session(session_id, expand_param(params))

        return await api.call(request, handler)

    @app.post("/v1/checkout/sessions/{session_id}/expire")
    async def expire_session(request: Request, session_id: str) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            reject_unknown(params, frozenset({"expand"}))
            return await store.expire_session(session_id, ctx, expand_param(params))

        return await api.call(request, handler)
