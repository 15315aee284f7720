"""Builders of payment intents, charges and refunds, shaped by Stripe's example objects.

Same rules as :mod:`.objects`: each object is a copy of its ``templates.json`` template
(so the field set is Stripe's) with every misleading placeholder overridden.
"""

from __future__ import annotations

import time
from typing import Literal

from .objects import StripeObject, list_object, new_id, set_if_present, template

PaymentIntentStatus = Literal["processing", "requires_payment_method", "succeeded"]
ChargeStatus = Literal["failed", "pending", "succeeded"]
RefundStatus = Literal["pending", "succeeded", "failed", "canceled"]
# Stripe's documented values of a failed refund's `failure_reason`.
RefundFailureReason = Literal[
    "charge_for_pending_refund_disputed",
    "declined",
    "expired_or_canceled_card",
    "insufficient_funds",
    "lost_or_stolen_card",
    "merchant_request",
    "unknown",
]

# Stripe's test card 4242 4242 4242 4242; its details are what Checkout would record.
TEST_CARD_LAST4 = "4242"
DELAYED_FAILURE_CODE = "insufficient_funds"
DELAYED_FAILURE_MESSAGE = "The account has insufficient funds to cover this payment."


# --- payment_intent --------------------------------------------------------


def payment_intent(
    *,
    pi_id: str,
    charge_id: str,
    created: int,
    amount: int,
    currency: str,
    receipt_email: str | None,
    status: PaymentIntentStatus,
) -> StripeObject:
    """A Checkout payment's intent: ``succeeded`` for cards, ``processing`` while a
    delayed payment method (bank debit) has not settled yet."""
    p = template("payment_intent")
    p.update(
        id=pi_id,
        object="payment_intent",
        created=created,
        livemode=False,
        amount=amount,
        amount_capturable=0,
        amount_details={"tip": {}},
        currency=currency,
        capture_method="automatic_async",
        confirmation_method="automatic",
        client_secret=f"{pi_id}_secret_{new_id('', 25)}",
        payment_method=new_id("pm_"),
        payment_method_types=["card"],
        payment_method_options={},
        payment_method_configuration_details=None,
        automatic_payment_methods=None,
        latest_charge=charge_id,
        receipt_email=receipt_email,
        metadata={},
        canceled_at=None,
        cancellation_reason=None,
        next_action=None,
        processing=None,
        shipping=None,
        transfer_data=None,
        transfer_group=None,
        on_behalf_of=None,
        review=None,
        application=None,
        application_fee_amount=None,
        customer=None,
        description=None,
        setup_future_usage=None,
        statement_descriptor=None,
        statement_descriptor_suffix=None,
        source=None,
        excluded_payment_method_types=None,
        customer_account=None,
    )
    set_payment_intent_status(p, status)
    set_if_present(p, "managed_payments", {"enabled": False})
    return p


def set_payment_intent_status(p: StripeObject, status: PaymentIntentStatus) -> None:
    p["status"] = status
    p["amount_received"] = p["amount"] if status == "succeeded" else 0
    # A failed bank debit leaves the intent waiting for another payment method, with the
    # reason attached (the fixture's placeholder error is replaced by a plausible one).
    p["last_payment_error"] = (
        {"type": "card_error", "code": DELAYED_FAILURE_CODE, "message": DELAYED_FAILURE_MESSAGE}
        if status == "requires_payment_method"
        else None
    )


# --- charge ------------------------------------------------------------------


def charge(
    *,
    charge_id: str,
    payment_intent: StripeObject,
    status: ChargeStatus,
    billing_email: str | None,
    card_last4: str = TEST_CARD_LAST4,
) -> StripeObject:
    """The charge behind ``payment_intent`` (its ``latest_charge``), nothing refunded yet,
    paid with the test card ending in ``card_last4``."""
    c = template("charge")
    amount: int = payment_intent["amount"]
    c.update(
        id=charge_id,
        object="charge",
        created=payment_intent["created"],
        livemode=False,
        amount=amount,
        amount_refunded=0,
        currency=payment_intent["currency"],
        payment_intent=payment_intent["id"],
        payment_method=payment_intent["payment_method"],
        receipt_email=payment_intent["receipt_email"],
        refunded=False,
        refunds=list_object(f"/v1/charges/{charge_id}/refunds", [], False),
        metadata={},
        description=None,
        customer=None,
        application=None,
        application_fee=None,
        application_fee_amount=None,
        balance_transaction=None,  # the simulator keeps no balance
        calculated_statement_descriptor="SIMULATOR",
        disputed=False,
        failure_balance_transaction=None,
        fraud_details={},
        on_behalf_of=None,
        receipt_number=None,
        receipt_url=None,
        review=None,
        shipping=None,
        source=None,  # charges made through payment intents have no legacy source
        source_transfer=None,
        statement_descriptor=None,
        statement_descriptor_suffix=None,
        transfer_data=None,
        transfer_group=None,
    )
    # Checkout collected only an email (see objects.customer_details): no name, address, phone.
    billing = _nulled(c["billing_details"])
    if isinstance(c["billing_details"].get("address"), dict):
        billing["address"] = _nulled(c["billing_details"]["address"])
    if "email" in billing:
        billing["email"] = billing_email
    c["billing_details"] = billing
    c["payment_method_details"] = _card_details(c["payment_method_details"], amount, card_last4)
    set_charge_status(c, status)
    return c


def set_charge_status(c: StripeObject, status: ChargeStatus) -> None:
    succeeded = status == "succeeded"
    failed = status == "failed"
    c.update(
        status=status,
        paid=succeeded,
        captured=succeeded,
        amount_captured=c["amount"] if succeeded else 0,
        failure_code=DELAYED_FAILURE_CODE if failed else None,
        failure_message=DELAYED_FAILURE_MESSAGE if failed else None,
    )
    c["outcome"] = _outcome(c["outcome"], status)


def _outcome(fixture_outcome: StripeObject, status: ChargeStatus) -> StripeObject:
    # Keep the fixture's keys; the values are what Stripe reports for such a charge.
    values: dict[ChargeStatus, StripeObject] = {
        "succeeded": {
            "network_status": "approved_by_network",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "pending": {
            "network_status": "approved_by_network",
            "seller_message": "The payment is pending.",
            "type": "authorized",
        },
        "failed": {
            "network_status": "declined_by_network",
            "reason": DELAYED_FAILURE_CODE,
            "seller_message": DELAYED_FAILURE_MESSAGE,
            "type": "issuer_declined",
        },
    }
    return _nulled(fixture_outcome) | {
        k: v for k, v in values[status].items() if k in fixture_outcome
    }


def _card_details(fixture_details: StripeObject, amount: int, last4: str) -> StripeObject:
    fixture_card: StripeObject = fixture_details.get("card") or {}
    values: StripeObject = {
        "amount_authorized": amount,
        "brand": "visa",
        "checks": {
            "address_line1_check": None,
            "address_postal_code_check": None,
            "cvc_check": "pass",
        },
        "country": "US",
        "exp_month": 12,
        "exp_year": time.gmtime().tm_year + 3,
        "extended_authorization": {"status": "disabled"},
        "fingerprint": new_id("", 16),
        "funding": "credit",
        "incremental_authorization": {"status": "unavailable"},
        "last4": last4,
        "multicapture": {"status": "unavailable"},
        "network": "visa",
        "network_token": {"used": False},
        "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
        "regulated_status": "unregulated",
    }
    # Keys the fixture has and we give no value (installments, three_d_secure, wallet, ...)
    # are null: nothing of the sort happened in a simulated card payment.
    card = {k: values.get(k) for k in fixture_card}
    out = _nulled(fixture_details)
    out.update(card=card, type="card")
    return out


def _nulled(obj: StripeObject) -> StripeObject:
    return dict.fromkeys(obj)


# --- refund ------------------------------------------------------------------


def refund(
    *,
    refund_id: str,
    created: int,
    amount: int,
    payment_intent: StripeObject,
    reason: str | None,
    metadata: dict[str, str],
) -> StripeObject:
    """A new card refund: ``pending`` until it settles (see :mod:`.refunds`). A failed one
    gains ``failure_reason`` and ``failure_balance_transaction`` (:func:`fail_refund`)."""
    r = template("refund")
    r.update(
        id=refund_id,
        object="refund",
        created=created,
        amount=amount,
        currency=payment_intent["currency"],
        charge=payment_intent["latest_charge"],
        payment_intent=payment_intent["id"],
        payment_method=payment_intent["payment_method"],
        status="pending",
        reason=reason,
        metadata=dict(metadata),
        balance_transaction=None,
        receipt_number=None,
        source_transfer_reversal=None,
        transfer_reversal=None,
        customer=None,
        customer_account=None,
        destination_details={
            "card": {"reference_status": "pending", "reference_type": None, "type": "refund"},
            "type": "card",
        },
    )
    return r


def fail_refund(r: StripeObject, reason: RefundFailureReason) -> StripeObject:
    """Marks the refund failed, as Stripe shows it; returns the previous attributes of its
    ``refund.updated`` event (the two failure fields were null before, as in Stripe's)."""
    before: StripeObject = {
        "status": r["status"],
        "failure_reason": None,
        "failure_balance_transaction": None,
    }
    # The simulator keeps no balance, so no balance transaction gives the money back either.
    r.update(status="failed", failure_reason=reason, failure_balance_transaction=None)
    return before
