"""How the cart's domain errors reach a client: one table of HTTP statuses, applied to every cart
route by `CartRoute` (both routers are built with it). Use cases raise domain errors only; the
answer carries the error's `code` and message, as every error reaching a client does."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from services.cart import domain
from services.cart.checkout_sessions import rules
from shared.errors import ApiError

STATUS_OF: dict[type[domain.CartError], int] = {
    domain.CartNotFound: 404,
    rules.SessionNotFound: 404,
    domain.EmptyCart: 422,
    domain.ItemUnavailable: 422,
    domain.QuantityOutOfRange: 422,
    domain.MixedCurrencies: 422,
    domain.OrderTotalTooLarge: 422,
    domain.IdempotencyKeyReused: 422,
    rules.UseCreditsConflict: 422,
    domain.CartNotOpen: 409,
    domain.StaleCart: 409,
    rules.SessionExpired: 409,
    rules.SessionInvalidated: 409,
    rules.SessionNotActive: 409,
    rules.SessionNotExpired: 409,
    rules.CartChanged: 409,
    rules.RecoveryRefused: 409,
    domain.CheckoutBusy: 503,
}


def error_details(exc: domain.CartError) -> dict[str, Any] | None:
    if isinstance(exc, rules.RecoveryRefused):
        return error_details(exc.reason)
    if isinstance(exc, domain.ItemUnavailable):
        return {"item_id": exc.item_id}
    if isinstance(exc, rules.SessionInvalidated):
        return {"replaced_by": exc.replaced_by}
    if isinstance(exc, domain.CheckoutBusy):
        return {"backlog": exc.backlog, "limit": exc.limit}
    return None


def http_error(exc: domain.CartError) -> ApiError:
    headers = None
    if isinstance(exc, domain.CheckoutBusy):
        headers = {"Retry-After": str(exc.retry_after_seconds)}
    return ApiError(
        STATUS_OF.get(type(exc), 422),
        exc.code,
        str(exc),
        details=error_details(exc),
        headers=headers,
    )


class CartRoute(APIRoute):
    """A route whose domain errors are answered as `http_error` says. Route classes are how
    FastAPI lets a router, rather than the app (built by the shared runtime), handle errors."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_domain_errors(request: Request) -> Response:
            try:
                return await handle(request)
            except domain.CartError as exc:
                raise http_error(exc) from None

        return handle_domain_errors
