"""Simulator controls under ``/_sim/``: health, paying or expiring a session directly,
delayed payment results, refunds that fail or are canceled, refunds made outside the
integration (as in the Dashboard), disputes, event redelivery and fault injection (JSON
bodies)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from . import objects
from .disputes import DisputeDesk, DisputeOutcome, DisputeReason
from .faults import Faults, FaultsUpdate
from .objects import StripeApiError, StripeObject
from .payment_objects import RefundFailureReason
from .refunds import RefundLedger
from .store import NO_REQUEST, AsyncOutcome, PaymentMethodKind, RequestContext, SimStore
from .stripe_api import error_response
from .webhooks import WebhookDispatcher


class PayBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_method: PaymentMethodKind = "card"
    # The total the buyer ended up paying (a promotion code, tax or adjusted quantity at
    # Stripe's hosted page); omitted: the session's own amount_total.
    amount_total: int | None = Field(default=None, ge=0)


class AsyncResultBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: AsyncOutcome


class RefundFailureBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    failure_reason: RefundFailureReason = "unknown"


class RefundOutsideBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Omitted: all that is left to refund.
    amount: int | None = Field(default=None, ge=1)


class DisputeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: DisputeReason = "general"
    # Omitted: all that was charged.
    amount: int | None = Field(default=None, ge=1)


class CloseDisputeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: DisputeOutcome


async def _answer(change: Awaitable[StripeObject]) -> Response:
    """The control's result as JSON, or Stripe's error body for a change it refused."""
    try:
        return JSONResponse(await change)
    except StripeApiError as exc:
        return error_response(exc)


def add_sim_routes(
    app: FastAPI,
    store: SimStore,
    refunds: RefundLedger,
    faults: Faults,
    dispatcher: WebhookDispatcher,
) -> None:
    """Test/automation controls; not part of Stripe's API, hence no API key."""
    disputes = DisputeDesk(store)

    @app.get("/_sim/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/_sim/sessions/{session_id}/pay")
    async def sim_pay(session_id: str, body: PayBody | None = None) -> Response:
        # No body (the original form of this call) pays by card.
        pay = body or PayBody()
        return await _answer(
            store.complete_session(
                session_id, NO_REQUEST, pay.payment_method, amount_total=pay.amount_total
            )
        )

    @app.post("/_sim/sessions/{session_id}/async_result")
    async def sim_async_result(session_id: str, body: AsyncResultBody) -> Response:
        return await _answer(store.settle_delayed_payment(session_id, body.outcome))

    @app.post("/_sim/sessions/{session_id}/expire_now")
    async def sim_expire_now(session_id: str) -> Response:
        return await _answer(store.force_expire(session_id))

    @app.post("/_sim/refunds/{refund_id}/fail")
    async def sim_fail_refund(refund_id: str, body: RefundFailureBody | None = None) -> Response:
        """The bank returns the refund (pending or succeeded): answers with the failed refund."""
        return await _answer(refunds.fail(refund_id, (body or RefundFailureBody()).failure_reason))

    @app.post("/_sim/refunds/{refund_id}/cancel")
    async def sim_cancel_refund(refund_id: str) -> Response:
        """A pending refund canceled before it left Stripe: answers with the refund."""
        return await _answer(refunds.cancel(refund_id))

    @app.post("/_sim/payment_intents/{pi_id}/refund_outside")
    async def sim_refund_outside(pi_id: str, body: RefundOutsideBody | None = None) -> Response:
        """A refund made in the Dashboard: no metadata, the usual events; answers with it."""
        # A Dashboard action is a request of its own (no idempotency key), as its events show.
        ctx = RequestContext(request_id=objects.new_id("req_", 14))
        amount = (body or RefundOutsideBody()).amount
        return await _answer(
            refunds.create(pi_id=pi_id, amount=amount, reason=None, metadata={}, ctx=ctx)
        )

    @app.post("/_sim/payment_intents/{pi_id}/dispute")
    async def sim_dispute(pi_id: str, body: DisputeBody | None = None) -> Response:
        """The cardholder disputes the payment (a chargeback): answers with the dispute."""
        dispute = body or DisputeBody()
        return await _answer(disputes.open(pi_id, reason=dispute.reason, amount=dispute.amount))

    @app.post("/_sim/disputes/{dispute_id}/close")
    async def sim_close_dispute(dispute_id: str, body: CloseDisputeBody) -> Response:
        """The bank decided the dispute: answers with it, `won` or `lost`."""
        return await _answer(disputes.close(dispute_id, body.status))

    @app.post("/_sim/events/{event_id}/redeliver")
    async def sim_redeliver(event_id: str) -> Response:
        """Queue the event for delivery again; answers with the event being sent."""
        try:
            if not dispatcher.enabled:
                raise StripeApiError(
                    400, "No webhook endpoint is configured (STRIPE_SIM_WEBHOOK_URL)."
                )
            event = await store.get_event(event_id)
        except StripeApiError as exc:
            return error_response(exc)
        dispatcher.redeliver(event)
        return JSONResponse(event)

    @app.get("/_sim/faults")
    async def get_faults() -> dict[str, Any]:
        return faults.snapshot()

    @app.post("/_sim/faults")
    async def set_faults(body: FaultsUpdate) -> dict[str, Any]:
        faults.update(body)
        return faults.snapshot()

    @app.delete("/_sim/faults")
    async def clear_faults() -> dict[str, Any]:
        faults.clear()
        return faults.snapshot()
