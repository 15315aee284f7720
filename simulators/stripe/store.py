"""In-memory state of the simulator: sessions, payment intents, charges, events.

No HTTP here. Every public method takes the store's asyncio lock, so one request's
read-modify-write never interleaves with another's (the ``*_locked`` helpers are for
callers already holding it). Objects handed out are deep
copies: a caller mutating a response must not change the stored state.
Idempotency-Key records (``store.idempotency``, see :mod:`.idempotency`) and refunds
(:mod:`.refunds`) share that lock.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from . import objects, payment_objects
from .idempotency import IdempotencyKeys
from .objects import ParamError, StripeApiError, StripeObject
from .pagination import ListFilter, Page, paginate

EventSink = Callable[[StripeObject], None]
# `delayed` stands for the bank debits whose result arrives days later in real Stripe;
# `card_refund_fails` for Stripe's test card 4000 0000 0000 5126, whose refunds are accepted and
# fail later (the card was closed), as a real card's refund may fail days after it was made.
PaymentMethodKind = Literal["card", "delayed", "card_refund_fails"]
REFUND_FAILING_CARD_LAST4 = "5126"
AsyncOutcome = Literal["succeeded", "failed"]
_METHOD_WORDS: dict[PaymentMethodKind, str] = {
    "card": "card",
    "card_refund_fails": "card",
    "delayed": "delayed bank debit",
}


@dataclass(frozen=True)
class RequestContext:
    """The API request behind a state change; copied into the event's ``request`` field."""

    request_id: str | None = None
    idempotency_key: str | None = None


# State changes made by the buyer on the hosted page or by the expiry clock have no request.
NO_REQUEST = RequestContext()


@dataclass(frozen=True)
class LineItem:
    name: str
    unit_amount: int  # minor units
    quantity: int


@dataclass(frozen=True)
class NewSession:
    currency: str
    line_items: tuple[LineItem, ...]
    success_url: str
    cancel_url: str | None
    client_reference_id: str | None
    customer_email: str | None
    metadata: dict[str, str]
    expires_at: int
    # As given on creation; () leaves the choice to the account (a card or a delayed debit).
    payment_method_types: tuple[str, ...] = ()


# Expandable checkout.session fields. Only payment_intent can be non-null in this
# simulator; the others are accepted so that clients expanding them do not break.
_SESSION_NULL_EXPANDABLES = frozenset(
    {"customer", "invoice", "payment_link", "setup_intent", "subscription"}
)


class SimStore:
    def __init__(
        self,
        *,
        public_url: str,
        api_version: str,
        webhooks_enabled: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lock = asyncio.Lock()
        self._public_url = public_url.rstrip("/")
        self._api_version = api_version
        self._webhooks_enabled = webhooks_enabled
        self._clock = clock
        # dicts keep insertion order, which is creation order: lists read them reversed.
        self._sessions: dict[str, StripeObject] = {}
        self._line_items: dict[str, tuple[LineItem, ...]] = {}
        # Sessions created with payment_method_types: the only methods their buyer may use.
        self._method_types: dict[str, tuple[str, ...]] = {}
        self._payment_intents: dict[str, StripeObject] = {}
        self._session_by_pi: dict[str, str] = {}
        # Payment intents paid with the refund-failing test card.
        self._refunds_fail: set[str] = set()
        self._charges: dict[str, StripeObject] = {}
        self._events: dict[str, StripeObject] = {}
        self.idempotency = IdempotencyKeys(lock=self.lock, clock=clock)
        self._sinks: list[EventSink] = []

    def add_event_sink(self, sink: EventSink) -> None:
        """Called (under the lock, so it must not block) with a copy of each new event."""
        self._sinks.append(sink)

    def now(self) -> int:
        """Current time in whole seconds, from the store's clock (injectable for tests)."""
        return int(self._clock())

    # --- checkout sessions -------------------------------------------------

    async def create_session(self, spec: NewSession) -> StripeObject:
        async with self.lock:
            session_id = objects.new_session_id()
            subtotal = sum(li.unit_amount * li.quantity for li in spec.line_items)
            session = objects.checkout_session(
                session_id=session_id,
                created=self.now(),
                expires_at=spec.expires_at,
                currency=spec.currency,
                amount_subtotal=subtotal,
                # No discounts, tax or shipping are simulated, so total == subtotal.
                amount_total=subtotal,
                url=f"{self._public_url}/pay/{session_id}",
                success_url=spec.success_url,
                cancel_url=spec.cancel_url,
                client_reference_id=spec.client_reference_id,
                customer_email=spec.customer_email,
                metadata=spec.metadata,
            )
            if spec.payment_method_types:
                session["payment_method_types"] = list(spec.payment_method_types)
                self._method_types[session_id] = spec.payment_method_types
            self._sessions[session_id] = session
            self._line_items[session_id] = spec.line_items
            return copy.deepcopy(session)

    async def get_session(self, session_id: str, expand: Sequence[str] = ()) -> StripeObject:
        async with self.lock:
            self._expire_due_locked()
            return self._render_session(self._session_or_404(session_id), expand)

    async def list_sessions(
        self,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        filters: ListFilter,
        expand: Sequence[str] = (),
    ) -> Page:
        async with self.lock:
            self._expire_due_locked()
            page = paginate(
                list(self._sessions.values()),
                "checkout.session",
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
                filters=filters,
            )
            return Page([self._render_session(s, expand) for s in page.data], page.has_more)

    async def expire_session(
        self, session_id: str, ctx: RequestContext, expand: Sequence[str] = ()
    ) -> StripeObject:
        check_session_expand(expand)  # before the change: a rejected request must change nothing
        async with self.lock:
            self._expire_due_locked()
            session = self._session_or_404(session_id)
            _require_open(session, action="expired")
            self._expire_locked(session, ctx)
            return self._render_session(session, expand)

    async def complete_session(
        self,
        session_id: str,
        ctx: RequestContext,
        payment_method: PaymentMethodKind = "card",
        amount_total: int | None = None,
    ) -> StripeObject:
        """The buyer paid on the hosted page: returns the checkout.session.completed event.

        A ``delayed`` payment completes the session still ``unpaid``, with its intent
        ``processing``; :meth:`settle_delayed_payment` brings the result later.
        ``amount_total``, when given, is what the buyer's total became on the hosted page, as a
        promotion code, automatic tax or an adjusted quantity changes it at Stripe: the session
        and its charge report that sum instead of the line items' subtotal.
        """
        async with self.lock:
            self._expire_due_locked()
            session = self._session_or_404(session_id)
            _require_open(session, action="paid")
            self._require_offered(session_id, payment_method)
            if amount_total is not None:
                session["amount_total"] = amount_total
            delayed = payment_method == "delayed"
            charge_id = objects.new_id("ch_")
            pi = payment_objects.payment_intent(
                pi_id=objects.new_id("pi_"),
                charge_id=charge_id,
                created=self.now(),
                amount=session["amount_total"],
                currency=session["currency"],
                receipt_email=session["customer_email"],
                status="processing" if delayed else "succeeded",
            )
            email = session["customer_email"] or "customer@example.com"
            self._payment_intents[pi["id"]] = pi
            self._session_by_pi[pi["id"]] = session_id
            last4 = payment_objects.TEST_CARD_LAST4
            if payment_method == "card_refund_fails":
                self._refunds_fail.add(pi["id"])
                last4 = REFUND_FAILING_CARD_LAST4
            self._charges[charge_id] = payment_objects.charge(
                charge_id=charge_id,
                payment_intent=pi,
                status="pending" if delayed else "succeeded",
                billing_email=email,
                card_last4=last4,
            )
            session.update(
                status="complete",
                payment_status="unpaid" if delayed else "paid",
                payment_intent=pi["id"],
                url=None,  # Stripe clears the URL once the session can no longer be used
                customer_details=objects.customer_details(email),
            )
            return self.emit_locked("checkout.session.completed", session, ctx)

    async def settle_delayed_payment(self, session_id: str, outcome: AsyncOutcome) -> StripeObject:
        """The bank's answer to a delayed payment: returns the async_payment_* event."""
        async with self.lock:
            self._expire_due_locked()
            session = self._session_or_404(session_id)
            pi = self._payment_intents.get(session["payment_intent"] or "")
            if pi is None or pi["status"] != "processing":
                raise StripeApiError(
                    400,
                    f"Checkout Session {session_id} has no delayed payment waiting for its "
                    f"result (status `{session['status']}`, payment_status "
                    f"`{session['payment_status']}`).",
                )
            charge = self._charges[pi["latest_charge"]]
            if outcome == "succeeded":
                payment_objects.set_payment_intent_status(pi, "succeeded")
                payment_objects.set_charge_status(charge, "succeeded")
                session["payment_status"] = "paid"
                return self.emit_locked(
                    "checkout.session.async_payment_succeeded", session, NO_REQUEST
                )
            # The session stays complete and unpaid, as Stripe leaves it.
            payment_objects.set_payment_intent_status(pi, "requires_payment_method")
            payment_objects.set_charge_status(charge, "failed")
            return self.emit_locked("checkout.session.async_payment_failed", session, NO_REQUEST)

    async def force_expire(self, session_id: str) -> StripeObject:
        """Expire now, as the clock would at ``expires_at``: returns the expired event."""
        async with self.lock:
            self._expire_due_locked()
            session = self._session_or_404(session_id)
            _require_open(session, action="expired")
            return self._expire_locked(session, NO_REQUEST)

    async def session_for_page(self, session_id: str) -> tuple[StripeObject, tuple[LineItem, ...]]:
        async with self.lock:
            self._expire_due_locked()
            session = self._session_or_404(session_id)
            return copy.deepcopy(session), self._line_items[session_id]

    async def expire_due(self) -> int:
        """Expire open sessions whose ``expires_at`` has passed; returns how many."""
        async with self.lock:
            return self._expire_due_locked()

    def _expire_due_locked(self) -> int:
        now = self.now()
        due = [
            s for s in self._sessions.values() if s["status"] == "open" and s["expires_at"] <= now
        ]
        for session in due:
            self._expire_locked(session, NO_REQUEST)
        return len(due)

    def _expire_locked(self, session: StripeObject, ctx: RequestContext) -> StripeObject:
        session.update(status="expired", url=None)
        return self.emit_locked("checkout.session.expired", session, ctx)

    def _require_offered(self, session_id: str, payment_method: PaymentMethodKind) -> None:
        """Refuse a method the session's payment_method_types leave out: Checkout never offers
        it, so no buyer can pay with it."""
        allowed = self._method_types.get(session_id)
        if allowed is None:
            return
        if payment_method == "delayed":
            offered = any(t != "card" for t in allowed)
        else:
            offered = "card" in allowed
        if not offered:
            raise StripeApiError(
                400,
                f"Checkout Session {session_id} offers only payment_method_types "
                f"{list(allowed)}: it cannot be paid with a {_METHOD_WORDS[payment_method]}.",
            )

    def _session_or_404(self, session_id: str) -> StripeObject:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise objects.resource_missing("checkout.session", session_id, "session") from None

    def _render_session(self, session: StripeObject, expand: Sequence[str]) -> StripeObject:
        check_session_expand(expand)
        out = copy.deepcopy(session)
        pi_id = out["payment_intent"]
        if "payment_intent" in expand and pi_id is not None:
            out["payment_intent"] = copy.deepcopy(self._payment_intents[pi_id])
        return out

    # --- payment intents ---------------------------------------------------

    async def get_payment_intent(self, pi_id: str) -> StripeObject:
        async with self.lock:
            return _copy_or_404(self._payment_intents, pi_id, "payment_intent", "intent")

    async def get_charge(self, charge_id: str) -> StripeObject:
        async with self.lock:
            return _copy_or_404(self._charges, charge_id, "charge", "charge")

    # --- for the refund ledger and the webhook dispatcher ----------------------

    def payment_intent_locked(self, pi_id: str) -> StripeObject | None:
        """The stored intent itself, to be read or changed while holding ``lock``."""
        return self._payment_intents.get(pi_id)

    def refunds_fail(self, pi_id: str) -> bool:
        """Whether the intent was paid with the refund-failing test card (a plain read)."""
        return pi_id in self._refunds_fail

    def charge_locked(self, charge_id: str) -> StripeObject:
        """The stored charge itself, to be read or changed while holding ``lock``."""
        return self._charges[charge_id]

    def related_session_id(self, obj: StripeObject) -> str | None:
        """The Checkout Session an event's object belongs to (sessions, refunds, charges).

        No lock: a plain read that never awaits cannot interleave with a writer.
        """
        if obj.get("object") == "checkout.session":
            return str(obj["id"])
        pi_id = obj.get("payment_intent")
        return self._session_by_pi.get(pi_id) if isinstance(pi_id, str) else None

    # --- events ------------------------------------------------------------

    def emit_locked(
        self,
        type_: str,
        obj: StripeObject,
        ctx: RequestContext,
        previous_attributes: StripeObject | None = None,
    ) -> StripeObject:
        """Record an event about ``obj`` (caller holds ``lock``) and hand it to the sinks."""
        event = objects.event(
            event_id=objects.new_id("evt_"),
            created=self.now(),
            type_=type_,
            data_object=obj,
            api_version=self._api_version,
            pending_webhooks=1 if self._webhooks_enabled else 0,
            request_id=ctx.request_id,
            idempotency_key=ctx.idempotency_key,
            previous_attributes=previous_attributes,
        )
        self._events[event["id"]] = event
        for sink in self._sinks:
            sink(copy.deepcopy(event))
        return copy.deepcopy(event)

    async def get_event(self, event_id: str) -> StripeObject:
        async with self.lock:
            self._expire_due_locked()
            try:
                return copy.deepcopy(self._events[event_id])
            except KeyError:
                raise objects.resource_missing("event", event_id) from None

    async def list_events(
        self,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        filters: ListFilter,
    ) -> Page:
        async with self.lock:
            self._expire_due_locked()
            page = paginate(
                list(self._events.values()),
                "event",
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
                filters=filters,
            )
            return Page(copy.deepcopy(page.data), page.has_more)

    async def mark_delivered(self, event_id: str) -> None:
        async with self.lock:
            event = self._events.get(event_id)
            if event is not None and event["pending_webhooks"] > 0:
                event["pending_webhooks"] -= 1


def _copy_or_404(
    stored: dict[str, StripeObject], object_id: str, object_name: str, param: str
) -> StripeObject:
    try:
        return copy.deepcopy(stored[object_id])
    except KeyError:
        raise objects.resource_missing(object_name, object_id, param) from None


def check_session_expand(expand: Iterable[str]) -> None:
    for path in expand:
        if path != "payment_intent" and path not in _SESSION_NULL_EXPANDABLES:
            raise ParamError(
                f"This property cannot be expanded ({path}) by the simulator.", param="expand"
            )


def _require_open(session: StripeObject, *, action: str) -> None:
    if session["status"] != "open":
        raise StripeApiError(
            400,
            f'Only Checkout Sessions with a status in ["open"] can be {action}. '
            f"This Checkout Session has a status of `{session['status']}`.",
        )
