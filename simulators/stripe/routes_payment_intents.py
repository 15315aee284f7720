"""Payment Intent endpoint: ``GET /v1/payment_intents/{id}`` (intents are created by paying)."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

from .objects import StripeObject
from .params import Params, reject_unknown
from .store import RequestContext, SimStore
from .stripe_api import StripeApi


def add_payment_intent_routes(app: FastAPI, api: StripeApi, store: SimStore) -> None:
    @app.get("/v1/payment_intents/{pi_id}")
    async def retrieve_payment_intent(request: Request, pi_id: str) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            reject_unknown(params, frozenset())
            return await store.get_payment_intent(pi_id)

        return await api.call(request, handler)
