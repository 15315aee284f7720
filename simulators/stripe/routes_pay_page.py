"""The hosted pay page (``/pay/{session_id}``): where the buyer pays, fails or abandons."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from . import pay_page
from .objects import StripeApiError
from .params import form_params
from .store import NO_REQUEST, SimStore


def add_pay_page_routes(app: FastAPI, store: SimStore) -> None:
    @app.get("/pay/{session_id}", response_class=HTMLResponse)
    async def show_pay_page(session_id: str) -> Response:
        try:
            session, items = await store.session_for_page(session_id)
        except StripeApiError as exc:
            return HTMLResponse(pay_page.message_page("Not found", exc.message), exc.status)
        if session["status"] != "open":
            return HTMLResponse(
                pay_page.message_page(
                    "Checkout Session not available",
                    f"This Checkout Session is {session['status']} and can no longer be paid.",
                )
            )
        rows = [(li.name, li.unit_amount, li.quantity) for li in items]
        return HTMLResponse(pay_page.checkout_page(session, rows))

    @app.post("/pay/{session_id}")
    async def submit_pay_page(request: Request, session_id: str) -> Response:
        try:
            outcome = (await form_params(request)).get("outcome")
            session, _ = await store.session_for_page(session_id)
            if outcome == "pay":
                await store.complete_session(session_id, NO_REQUEST)
        except StripeApiError as exc:
            return HTMLResponse(
                pay_page.message_page("Payment not possible", exc.message), exc.status
            )
        if outcome == "pay":
            target = session["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)
            return RedirectResponse(target, status_code=303)
        if outcome == "fail":
            # In real Checkout a declined card is shown to the buyer, who may retry:
            # the session stays open and no event is sent.
            return HTMLResponse(
                pay_page.message_page(
                    "Your card was declined",
                    "The payment failed; the Checkout Session is still open and can be retried.",
                )
            )
        if outcome == "abandon":
            if session["cancel_url"]:
                return RedirectResponse(session["cancel_url"], status_code=303)
            return HTMLResponse(
                pay_page.message_page(
                    "Checkout abandoned", "The Checkout Session will expire at its expires_at."
                )
            )
        return HTMLResponse(
            pay_page.message_page(
                "Unknown outcome", f"outcome must be one of {', '.join(pay_page.OUTCOMES)}."
            ),
            400,
        )
