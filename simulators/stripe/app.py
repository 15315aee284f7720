"""HTTP face of the Stripe simulator: Stripe's v1 wire format, the hosted page, webhooks.

This module wires the pieces together; see :mod:`.params` (form decoding and validation),
:mod:`.stripe_api` (auth, idempotency, errors), :mod:`.webhooks` and the ``routes_*``
modules for the endpoints themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .config import SimConfig
from .faults import Faults
from .objects import StripeApiError
from .params import parse_params
from .refunds import RefundLedger
from .routes_checkout import add_checkout_routes
from .routes_events import add_event_routes
from .routes_pay_page import add_pay_page_routes
from .routes_payment_intents import add_payment_intent_routes
from .routes_refunds import add_refund_routes
from .routes_sim import add_sim_routes
from .store import SimStore
from .stripe_api import StripeApi, error_response
from .webhooks import WebhookDispatcher

# parse_params is re-exported: tests import it from here.
__all__ = ["create_app", "parse_params"]

log = logging.getLogger(__name__)


def create_app(config: SimConfig, *, clock: Callable[[], float] = time.time) -> FastAPI:
    """The simulator app; ``clock`` lets tests move time forward to reach ``expires_at``."""
    store = SimStore(
        public_url=config.public_url,
        api_version=config.api_version,
        webhooks_enabled=config.webhook_url is not None,
        clock=clock,
    )
    faults = Faults()
    refunds = RefundLedger(store, config.refund_settle_seconds)
    dispatcher = WebhookDispatcher(config, store, faults)
    store.add_event_sink(dispatcher.submit)
    api = StripeApi(config, store.idempotency, faults)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        dispatcher.start()
        sweeper = asyncio.create_task(_sweep_expired(store, config.expiry_sweep_seconds))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await refunds.aclose()
            await dispatcher.aclose()

    app = FastAPI(
        title="Stripe simulator", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.store = store
    app.state.config = config
    app.state.faults = faults

    @app.exception_handler(StarletteHTTPException)
    async def unknown_route(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (404, 405):
            return error_response(
                StripeApiError(
                    404,
                    f"Unrecognized request URL ({request.method}: {request.url.path}).",
                )
            )
        return JSONResponse({"detail": exc.detail}, exc.status_code)

    add_checkout_routes(app, api, store)
    add_payment_intent_routes(app, api, store)
    add_refund_routes(app, api, refunds)
    add_event_routes(app, api, store)
    add_pay_page_routes(app, store)
    add_sim_routes(app, store, refunds, faults, dispatcher)
    return app


async def _sweep_expired(store: SimStore, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await store.expire_due()
        except Exception:
            log.exception("expiry sweep failed")
