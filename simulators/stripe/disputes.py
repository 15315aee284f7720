"""Disputes: a cardholder disputes a card payment with their bank (a chargeback), the bank
decides it. Driven by the ``/_sim/`` controls; Stripe's own API for them (evidence, closing by
accepting) is not simulated.

Opening one marks the charge ``disputed`` and emits ``charge.dispute.created``, then
``charge.dispute.funds_withdrawn`` as Stripe takes the amount back from the merchant. Closing
it emits ``charge.dispute.closed`` (``won`` or ``lost``) and, when won,
``charge.dispute.funds_reinstated``. Inquiries (``warning_*`` statuses, nothing withdrawn) are
not simulated, and the simulator keeps no balance, so ``balance_transactions`` stays empty.
State lives under the store's lock.
"""

from __future__ import annotations

import copy
from typing import Literal

from . import objects
from .objects import StripeApiError, StripeObject
from .store import NO_REQUEST, SimStore

# Stripe's documented reasons a cardholder gives.
DisputeReason = Literal[
    "bank_cannot_process",
    "check_returned",
    "credit_not_processed",
    "customer_initiated",
    "debit_not_authorized",
    "duplicate",
    "fraudulent",
    "general",
    "incorrect_account_details",
    "insufficient_funds",
    "noncompliant",
    "product_not_received",
    "product_unacceptable",
    "subscription_canceled",
    "unrecognized",
]
DisputeOutcome = Literal["won", "lost"]
_CLOSED = frozenset({"won", "lost", "warning_closed", "prevented"})
# The Visa reason code a chargeback of each reason carries; null for the others, as Stripe
# leaves it when the network gave none.
_VISA_REASON_CODES: dict[str, str] = {
    "fraudulent": "10.4",
    "duplicate": "12.6.1",
    "product_not_received": "13.1",
    "subscription_canceled": "13.2",
    "product_unacceptable": "13.3",
    "credit_not_processed": "13.6",
}
# How long the merchant has to answer (`evidence_details.due_by`); Stripe's vary by network
# from about a week to three, this is the simulator's choice.
RESPONSE_WINDOW_SECONDS = 14 * 24 * 3600


class DisputeDesk:
    def __init__(self, store: SimStore) -> None:
        self._store = store
        self._disputes: dict[str, StripeObject] = {}

    async def open(self, pi_id: str, *, reason: DisputeReason, amount: int | None) -> StripeObject:
        """The cardholder disputes ``amount`` (default: all that was charged) of a succeeded
        payment intent; returns the dispute, ``needs_response``."""
        async with self._store.lock:
            pi = self._store.payment_intent_locked(pi_id)
            if pi is None:
                raise objects.resource_missing("payment_intent", pi_id, "payment_intent")
            if pi["status"] != "succeeded":
                raise StripeApiError(
                    400, f"This PaymentIntent ({pi_id}) does not have a successful charge."
                )
            charge = self._store.charge_locked(pi["latest_charge"])
            if charge["disputed"]:
                raise StripeApiError(400, f"Charge {charge['id']} has already been disputed.")
            charged: int = charge["amount_captured"]
            amount = charged if amount is None else amount
            if amount > charged:
                raise StripeApiError(
                    400,
                    f"Dispute amount ({amount} {charge['currency']}) is greater than the "
                    f"charge's amount ({charged} {charge['currency']}).",
                    param="amount",
                )
            dispute = _dispute(self._store.now(), charge, amount, reason)
            charge["disputed"] = True
            self._disputes[dispute["id"]] = dispute
            self._store.emit_locked("charge.dispute.created", dispute, NO_REQUEST)
            self._store.emit_locked("charge.dispute.funds_withdrawn", dispute, NO_REQUEST)
            return copy.deepcopy(dispute)

    async def close(self, dispute_id: str, outcome: DisputeOutcome) -> StripeObject:
        """The bank decided: returns the dispute, ``won`` or ``lost``."""
        async with self._store.lock:
            dispute = self._disputes.get(dispute_id)
            if dispute is None:
                raise objects.resource_missing("dispute", dispute_id, "dispute")
            before = dispute["status"]
            if before in _CLOSED:
                raise StripeApiError(
                    400,
                    f"Dispute {dispute_id} has a status of `{before}` and cannot be closed again.",
                )
            dispute["status"] = outcome
            self._store.emit_locked(
                "charge.dispute.closed", dispute, NO_REQUEST, previous_attributes={"status": before}
            )
            if outcome == "won":
                self._store.emit_locked("charge.dispute.funds_reinstated", dispute, NO_REQUEST)
            return copy.deepcopy(dispute)


def _dispute(now: int, charge: StripeObject, amount: int, reason: str) -> StripeObject:
    """A new chargeback of ``charge``, shaped as Stripe's example dispute."""
    d = objects.template("dispute")
    d.update(
        id=objects.new_id("dp_"),
        object="dispute",
        amount=amount,
        balance_transactions=[],
        charge=charge["id"],
        created=now,
        currency=charge["currency"],
        # A chargeback's money is already withdrawn: refunding the charge would pay twice.
        is_charge_refundable=False,
        livemode=False,
        metadata={},
        payment_intent=charge["payment_intent"],
        reason=reason,
        status="needs_response",
    )
    objects.set_if_present(d, "enhanced_eligibility_types", [])
    # No evidence submitted yet: every field of it empty, as Stripe shows a new dispute.
    evidence = dict.fromkeys(d["evidence"])
    objects.set_if_present(evidence, "enhanced_evidence", {})
    d["evidence"] = evidence
    details = d["evidence_details"]
    details.update(
        due_by=now + RESPONSE_WINDOW_SECONDS, has_evidence=False, past_due=False, submission_count=0
    )
    objects.set_if_present(details, "enhanced_eligibility", {})
    card = d["payment_method_details"]["card"]
    card.update(
        brand="visa",
        case_type="chargeback",
        network="visa",
        network_reason_code=_VISA_REASON_CODES.get(reason),
    )
    return d
