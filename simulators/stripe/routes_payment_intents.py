"""Payment Intent and Charge endpoints: ``GET /v1/payment_intents/{id}`` and
``GET /v1/charges/{id}`` (both are created by paying)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from .objects import StripeObject
from .params import Params, reject_unknown
from .store import RequestContext, SimStore
from .stripe_api import StripeApi


def add_payment_intent_routes(app: FastAPI, api: StripeApi, store: SimStore) -> None:
    _add_retrieve(app, api, "/v1/payment_intents/{object_id}", store.get_payment_intent)
    _add_retrieve(app, api, "/v1/charges/{object_id}", store.get_charge)


def _add_retrieve(
    app: FastAPI, api: StripeApi, path: str, read: Callable[[str], Awaitable[StripeObject]]
) -> None:
    @app.get(path)
    async def retrieve(request: Request, object_id: str) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            reject_unknown(params, frozenset())
            return await read(object_id)

        return await api.call(request, handler)
