"""Cart rules, free of I/O: quantities, availability and pricing of a checkout.

Prices always come from the catalogue lines handed in here, never from the client.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.limits import MAX_ORDER_TOTAL, MAX_QUANTITY, MIN_QUANTITY
from shared.messages.contracts import CheckoutLine, ItemKind, PaidWith


class CartError(Exception):
    """Base of the cart's domain errors; `code` is what a client sees. The HTTP status of each
    is given in one table at the API edge (`http_errors.STATUS_OF`)."""

    code = "cart_error"


class CartNotFound(CartError):
    """No cart of this id belongs to the caller: another shopper's cart is not found either."""

    code = "cart_not_found"

    def __init__(self) -> None:
        super().__init__("cart not found")


class EmptyCart(CartError):
    code = "cart_empty"

    def __init__(self) -> None:
        super().__init__("the cart has no lines")


class ItemUnavailable(CartError):
    code = "item_unavailable"

    def __init__(self, item_id: str) -> None:
        super().__init__(f"catalogue item {item_id!r} is unknown or not on sale now")
        self.item_id = item_id


class QuantityOutOfRange(CartError):
    code = "quantity_out_of_range"

    def __init__(self, quantity: int) -> None:
        super().__init__(f"quantity must be {MIN_QUANTITY}..{MAX_QUANTITY}, got {quantity}")
        self.quantity = quantity


class CartNotOpen(CartError):
    code = "cart_not_open"

    def __init__(self, status: str) -> None:
        super().__init__(f"the cart is {status}, not open")
        self.status = status


class MixedCurrencies(CartError):
    code = "mixed_currencies"

    def __init__(self, currencies: Sequence[str]) -> None:
        super().__init__(f"all lines must share one currency, got {sorted(set(currencies))}")
        self.currencies = tuple(currencies)


class StaleCart(CartError):
    """The cart changed, or started checking out, after this request read it."""

    code = "cart_not_open"

    def __init__(self) -> None:
        super().__init__("the cart changed or is already being checked out; reload it and retry")


class IdempotencyKeyReused(CartError):
    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was already used for a different checkout request")


class OrderTotalTooLarge(CartError):
    """The checkout's money or credits total is past the bound every service stores."""

    code = "order_total_too_large"

    def __init__(self, *, money_total: int, credits_total: int) -> None:
        super().__init__(
            f"a checkout may total at most {MAX_ORDER_TOTAL} in money and in credits, "
            f"this one totals {money_total} and {credits_total} credits"
        )


class CheckoutBusy(CartError):
    """Admission control refuses a new checkout while the saga is too far behind (`admission`);
    a retry with the same Idempotency-Key after `retry_after_seconds` is safe."""

    code = "checkout_busy"
    retry_after_seconds = 1

    def __init__(self, *, backlog: int, limit: int) -> None:
        super().__init__(
            "too many checkouts in progress; retry shortly with the same Idempotency-Key"
        )
        self.backlog = backlog
        self.limit = limit


class Sellable(Protocol):
    """What decides whether a catalogue item can be bought at a given moment."""

    @property
    def active(self) -> bool: ...
    @property
    def available_from(self) -> datetime | None: ...
    @property
    def available_until(self) -> datetime | None: ...


def is_available(item: Sellable, now: datetime) -> bool:
    """On sale: switched on by the operator, and `now` inside [available_from, available_until)."""
    if not item.active:
        return False
    if item.available_from is not None and now < item.available_from:
        return False
    return item.available_until is None or now < item.available_until


@dataclass(frozen=True)
class LineItem:
    """A cart line joined with its catalogue item as it is now."""

    item_id: str
    kind: ItemKind
    name: str
    quantity: int
    unit_price: int
    currency: str
    credit_price: int | None
    units_per_item: int
    active: bool = True
    available_from: datetime | None = None
    available_until: datetime | None = None


@dataclass(frozen=True)
class Totals:
    item_count: int
    units_total: int
    money_total: int
    credits_total: int
    currency: str


@dataclass(frozen=True)
class PricedCheckout:
    lines: tuple[CheckoutLine, ...]
    totals: Totals

    @property
    def currency(self) -> str:
        return self.totals.currency


def check_quantity(quantity: int) -> int:
    if not MIN_QUANTITY <= quantity <= MAX_QUANTITY:
        raise QuantityOutOfRange(quantity)
    return quantity


def ensure_open(status: str) -> None:
    if status != "open":
        raise CartNotOpen(status)


def ensure_currency(cart_currency: str, item_currency: str) -> None:
    if cart_currency != item_currency:
        raise MixedCurrencies((cart_currency, item_currency))


def paid_with(item: LineItem, *, use_credits: bool) -> PaidWith:
    return "credits" if use_credits and item.credit_price is not None else "money"


def price_lines(items: Sequence[LineItem], *, use_credits: bool, currency: str) -> PricedCheckout:
    """Prices whatever the cart holds (also an empty cart); `currency` names an empty cart's."""
    currencies = {item.currency for item in items}
    if len(currencies) > 1:
        raise MixedCurrencies([item.currency for item in items])
    lines = tuple(
        CheckoutLine(
            line_no=n,
            item_id=item.item_id,
            kind=item.kind,
            name=item.name,
            quantity=check_quantity(item.quantity),
            unit_price=item.unit_price,
            unit_credits=item.credit_price,
            units_per_item=item.units_per_item,
            paid_with=paid_with(item, use_credits=use_credits),
        )
        for n, item in enumerate(items, start=1)
    )
    totals = Totals(
        item_count=sum(line.quantity for line in lines),
        units_total=sum(line.units_per_item * line.quantity for line in lines),
        money_total=sum(line.money for line in lines),
        credits_total=sum(line.credits for line in lines),
        currency=currencies.pop() if currencies else currency,
    )
    return PricedCheckout(lines=lines, totals=totals)


def price_checkout(
    items: Sequence[LineItem], *, use_credits: bool, now: datetime
) -> PricedCheckout:
    """Prices a cart about to be checked out: it must be non-empty and every item on sale now."""
    if not items:
        raise EmptyCart()
    for item in items:
        if not is_available(item, now):
            raise ItemUnavailable(item.item_id)
    priced = price_lines(items, use_credits=use_credits, currency=items[0].currency)
    money, credits = priced.totals.money_total, priced.totals.credits_total
    if money > MAX_ORDER_TOTAL or credits > MAX_ORDER_TOTAL:
        raise OrderTotalTooLarge(money_total=money, credits_total=credits)
    return priced


def request_hash(cart_id: str, *, use_credits: bool | None, session_id: str | None = None) -> str:
    """Fingerprint of a checkout request, to tell a retry from a reused idempotency key.

    Without a session id it is the fingerprint stored before sessions existed, so a retry of
    such a request is still recognised.
    """
    request: dict[str, object] = {"cart_id": cart_id, "use_credits": use_credits}
    if session_id is not None:
        request["session_id"] = session_id
    canonical = json.dumps(request, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
