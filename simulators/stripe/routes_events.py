"""Event endpoints: ``/v1/events`` list and retrieval."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

from . import objects
from .objects import StripeObject
from .params import LIST_PARAMS, Params, list_args, list_filters, reject_unknown
from .store import RequestContext, SimStore
from .stripe_api import StripeApi


def add_event_routes(app: FastAPI, api: StripeApi, store: SimStore) -> None:
    @app.get("/v1/events")
    async def list_events(request: Request) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            reject_unknown(params, LIST_PARAMS - {"expand"} | {"type"})
            args = list_args(params)
            page = await store.list_events(
                limit=args.limit,
                starting_after=args.starting_after,
                ending_before=args.ending_before,
                filters=list_filters(params, ("type",)),
            )
            return objects.list_object("/v1/events", page.data, page.has_more)

        return await api.call(request, handler)

    @app.get("/v1/events/{event_id}")
    async def retrieve_event(request: Request, event_id: str) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            reject_unknown(params, frozenset())
            return await store.get_event(event_id)

        return await api.call(request, handler)
