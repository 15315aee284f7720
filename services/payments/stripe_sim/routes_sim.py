"""Simulator controls under ``/_sim/``: health, and paying or expiring a session directly."""

from __future__ import annotations

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse

from .objects import StripeApiError
from .store import NO_REQUEST, SimStore
from .stripe_api import error_response


def add_sim_routes(app: FastAPI, store: SimStore) -> None:
    """Test/automation controls; not part of Stripe's API, hence no API key."""

    @app.get("/_sim/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/_sim/sessions/{session_id}/pay")
    async def sim_pay(session_id: str) -> Response:
        try:
            return JSONResponse(await store.complete_session(session_id, NO_REQUEST))
        except StripeApiError as exc:
            return error_response(exc)

    @app.post("/_sim/sessions/{session_id}/expire_now")
    async def sim_expire_now(session_id: str) -> Response:
        try:
            return JSONResponse(await store.force_expire(session_id))
        except StripeApiError as exc:
            return error_response(exc)
