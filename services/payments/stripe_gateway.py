"""Stripe behind one small adapter: the official SDK, async over httpx, bounded retries, and a
deterministic idempotency key on every POST so a retried or redelivered call returns the same
object instead of creating a second one."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import stripe
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from shared.messages.contracts import PaymentLine

if TYPE_CHECKING:
    from services.payments.settings import PaymentsSettings

log = logging.getLogger("services.payments.stripe")

# Worth another attempt with the same idempotency key: Stripe did not (or may not have) acted.
# 409 is Stripe's "another request with this idempotency key is in flight"; 429 is rate limiting.
_RETRY_STATUSES = frozenset({409, 429})


class StripeCallFailed(Exception):
    """Stripe refused the call, or stayed unreachable through every attempt."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str
    status: str
    amount_total: int
    currency: str
    expires_at: datetime
    payment_intent_id: str | None
    payment_status: str | None = None
    # Only when retrieved with the intent expanded (the reconciler's view of a delayed payment).
    payment_intent_status: str | None = None


@dataclass(frozen=True)
class StripeRefund:
    id: str
    status: str
    amount: int
    # Why a failed refund failed (`lost_or_stolen_card`, ...), when Stripe says.
    failure_reason: str | None = None


def is_transient(exc: BaseException) -> bool:
    """Whether the same call, under the same idempotency key, may get another answer."""
    if isinstance(exc, stripe.APIConnectionError):
        return True
    if isinstance(exc, stripe.StripeError):
        # Stripe's own advice comes first, as in the official SDKs: `false` on a 5xx it kept for
        # the key (the same key only replays it), `true` on an error that did nothing and may
        # pass next time (a lock timeout) whatever its status.
        advice = should_retry(exc)
        if advice is not None:
            return advice
        status = exc.http_status or 0
        return status >= 500 or status in _RETRY_STATUSES
    return False


def should_retry(exc: stripe.StripeError) -> bool | None:
    """Stripe's `Stripe-Should-Retry` answer on this error; None when it gave none."""
    for name, value in (exc.headers or {}).items():
        if name.lower() == "stripe-should-retry":
            return {"true": True, "false": False}.get(value.strip().lower())
    return None


def _describe(exc: stripe.StripeError) -> str:
    code = getattr(exc, "code", None)
    # user_message/_message never carry the API key; the raw request is deliberately not logged.
    described = (
        f"stripe {type(exc).__name__} (status {exc.http_status}, code {code}): {exc.user_message}"
    )
    if should_retry(exc) is False and (exc.http_status or 0) >= 500:
        # Stripe ran the request and keeps this answer for the key: what it did is unknown until
        # its webhook or a retrieve tells (docs/stripe.md, "Retries").
        described += " (Stripe-Should-Retry: false: the outcome at Stripe is unknown)"
    return described


class StripeGateway:
    def __init__(
        self,
        *,
        api_key: str,
        api_base: str,
        timeout_seconds: float = 20.0,
        max_attempts: int = 4,
        retry_base_seconds: float = 0.5,
        retry_cap_seconds: float = 5.0,
        payment_method_types: Sequence[str] = (),
    ) -> None:
        self._http = stripe.HTTPXClient(timeout=timeout_seconds)
        # The SDK's own retries are off: tenacity below owns the (bounded, logged) policy.
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            http_client=self._http,
            max_network_retries=0,
        )
        self._max_attempts = max_attempts
        self._wait = wait_exponential(multiplier=retry_base_seconds, max=retry_cap_seconds)
        # Sent with every Checkout Session; empty: what the Stripe Dashboard enables.
        self._payment_method_types = tuple(payment_method_types)

    @classmethod
    def from_settings(cls, settings: PaymentsSettings) -> StripeGateway:
        return cls(
            api_key=settings.stripe_api_key.get_secret_value(),
            api_base=settings.stripe_api_base,
            timeout_seconds=settings.stripe_timeout_seconds,
            max_attempts=settings.stripe_max_attempts,
            retry_base_seconds=settings.stripe_retry_base_seconds,
            retry_cap_seconds=settings.stripe_retry_cap_seconds,
            payment_method_types=settings.allowed_payment_method_types,
        )

    async def aclose(self) -> None:
        await self._http.close_async()

    async def create_checkout_session(
        self,
        *,
        order_id: str,
        currency: str,
        lines: Sequence[PaymentLine],
        expires_at: datetime,
        success_url: str,
        cancel_url: str,
        metadata: Mapping[str, str],
    ) -> CheckoutSession:
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": line.quantity,
                    "price_data": {
                        "currency": currency.lower(),
                        "unit_amount": line.unit_amount,
                        "product_data": {"name": line.name},
                    },
                }
                for line in lines
            ],
            "currency": currency.lower(),
            "client_reference_id": order_id,
            "metadata": dict(metadata),
            "expires_at": int(expires_at.timestamp()),
            "success_url": success_url,
        }
        # Stripe refuses an empty string here (it would mean "unset"): no page, no parameter.
        if cancel_url:
            params["cancel_url"] = cancel_url
        if self._payment_method_types:
            params["payment_method_types"] = list(self._payment_method_types)
        session = await self._call(
            "create_session",
            order_id,
            lambda key: self._client.v1.checkout.sessions.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": key},
            ),
        )
        return _checkout_session(session)

    async def expire_checkout_session(self, *, order_id: str, session_id: str) -> CheckoutSession:
        session = await self._call(
            "expire_session",
            order_id,
            lambda key: self._client.v1.checkout.sessions.expire_async(
                session_id, options={"idempotency_key": key}
            ),
        )
        return _checkout_session(session)

    async def retrieve_checkout_session(self, *, order_id: str, session_id: str) -> CheckoutSession:
        """Stripe's current view of a session, with its payment intent expanded."""
        session = await self._call(
            "retrieve_session",
            order_id,
            lambda _key: self._client.v1.checkout.sessions.retrieve_async(
                session_id, {"expand": ["payment_intent"]}
            ),
        )
        return _checkout_session(session)

    async def create_refund(
        self,
        *,
        order_id: str,
        refund_key: str,
        payment_intent_id: str,
        amount: int,
        reason: str,
    ) -> StripeRefund:
        params: dict[str, Any] = {
            "payment_intent": payment_intent_id,
            "amount": amount,
            # Stripe's `reason` is an enum; ours is free text, so it travels as metadata.
            "metadata": {"order_id": order_id, "refund_key": refund_key, "reason": reason[:500]},
        }
        refund = await self._call(
            f"refund:{refund_key}",
            order_id,
            lambda key: self._client.v1.refunds.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": key},
            ),
        )
        return _stripe_refund(refund)

    async def retrieve_refund(self, *, order_id: str, refund_id: str) -> StripeRefund:
        """Stripe's current view of a refund (the refund reconciler's question)."""
        refund = await self._call(
            "retrieve_refund",
            order_id,
            lambda _key: self._client.v1.refunds.retrieve_async(refund_id),
        )
        return _stripe_refund(refund)

    async def _call(self, action: str, order_id: str, send: Any) -> Any:
        # Only POSTs send the key; a GET ignores the argument.
        key = f"{order_id}:{action}"
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception(is_transient),
            before_sleep=lambda state: log.warning(
                "stripe %s for %s failed (attempt %d), retrying: %s",
                action,
                order_id,
                state.attempt_number,
                type(state.outcome.exception()).__name__ if state.outcome else "?",
            ),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await send(key)
        except stripe.StripeError as exc:
            raise StripeCallFailed(_describe(exc), transient=is_transient(exc)) from exc
        raise AssertionError("unreachable: tenacity either returns or re-raises")


def _stripe_refund(refund: stripe.Refund) -> StripeRefund:
    obj = refund.to_dict()
    reason = obj.get("failure_reason")
    return StripeRefund(
        id=obj["id"],
        status=str(obj.get("status")),
        amount=int(obj["amount"]),
        failure_reason=reason if isinstance(reason, str) else None,
    )


def _checkout_session(session: stripe.checkout.Session) -> CheckoutSession:
    obj = session.to_dict()
    payment_intent = obj.get("payment_intent")
    intent_status = None
    if isinstance(payment_intent, Mapping):  # expanded object rather than an id
        intent_status = payment_intent.get("status")
        payment_intent = payment_intent.get("id")
    return CheckoutSession(
        id=obj["id"],
        url=obj.get("url") or "",
        status=obj.get("status") or "open",
        amount_total=int(obj.get("amount_total") or 0),
        currency=str(obj.get("currency") or "").lower(),
        expires_at=datetime.fromtimestamp(int(obj["expires_at"]), UTC),
        payment_intent_id=payment_intent,
        payment_status=obj.get("payment_status"),
        payment_intent_status=intent_status,
    )
