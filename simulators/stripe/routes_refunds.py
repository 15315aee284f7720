"""Refund endpoints: ``/v1/refunds`` (by payment intent) and retrieval."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

from .objects import ParamError, StripeObject
from .params import (
    Params,
    as_integer,
    metadata_param,
    missing_param,
    opt_string,
    reject_unknown,
)
from .refunds import RefundLedger
from .store import RequestContext
from .stripe_api import StripeApi

_REFUND_PARAMS = frozenset({"amount", "metadata", "payment_intent", "reason"})
_REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})


def add_refund_routes(app: FastAPI, api: StripeApi, refunds: RefundLedger) -> None:
    @app.post("/v1/refunds")
    async def create_refund(request: Request) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            reject_unknown(params, _REFUND_PARAMS)
            pi_id = opt_string(params, "payment_intent")
            if pi_id is None:
                # Stripe also accepts `charge`; the simulator refunds by payment intent only.
                raise missing_param("payment_intent")
            amount = None
            if params.get("amount") not in (None, ""):
                amount = as_integer(params["amount"], "amount", minimum=1)
            reason = opt_string(params, "reason")
            if reason is not None and reason not in _REFUND_REASONS:
                raise ParamError(f"Invalid reason: {reason}", param="reason")
            return await refunds.create(
                pi_id=pi_id, amount=amount, reason=reason, metadata=metadata_param(params), ctx=ctx
            )

        return await api.call(request, handler)

    @app.get("/v1/refunds/{refund_id}")
    async def retrieve_refund(request: Request, refund_id: str) -> Response:
        async def handler(params: Params, ctx: RequestContext) -> StripeObject:
            reject_unknown(params, frozenset())
            return await refunds.get(refund_id)

        return await api.call(request, handler)
