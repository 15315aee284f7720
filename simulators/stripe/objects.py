"""Builders of Stripe API objects, shaped by Stripe's own example objects.

Every object starts as a deep copy of a template taken verbatim from Stripe's
``fixtures3.json`` (see ``templates.json``), so the set of fields matches what
the real API returns for the pinned spec. The fixture values are placeholders
(random amounts, "message" strings, etc.), so each builder overrides every field
whose placeholder could mislead a client, not only the ones we simulate.
Payment intents, charges and refunds are built in :mod:`.payment_objects`, disputes in
:mod:`.disputes`.
"""

from __future__ import annotations

import copy
import functools
import json
import secrets
import string
from pathlib import Path
from typing import Any

StripeObject = dict[str, Any]

TEMPLATE_NAMES: tuple[str, ...] = (
    "charge",
    "checkout.session",
    "dispute",
    "event",
    "payment_intent",
    "refund",
)
TEMPLATES_PATH = Path(__file__).with_name("templates.json")
TEMPLATES_SOURCE = (
    "Stripe example objects from Stripe's public OpenAPI repository "
    "(github.com/stripe/openapi, fixtures3.json, MIT licence, commit f6c2a48, 2026-08-21)"
)

_ALPHABET = string.ascii_letters + string.digits


def extract_templates(fixtures: dict[str, Any]) -> dict[str, Any]:
    """Pick our templates out of a parsed fixtures3.json (used to write templates.json)."""
    resources = fixtures["resources"]
    out: dict[str, Any] = {"_source": TEMPLATES_SOURCE}
    for name in TEMPLATE_NAMES:
        out[name] = resources[name]
    return out


def write_templates(fixtures_path: Path, out_path: Path = TEMPLATES_PATH) -> None:
    fixtures = json.loads(fixtures_path.read_text(encoding="utf-8"))
    text = json.dumps(extract_templates(fixtures), indent=2, ensure_ascii=False)
    out_path.write_text(text + "\n", encoding="utf-8")


@functools.cache
def _templates() -> dict[str, StripeObject]:
    # Lazy so that write_templates() can run before templates.json exists.
    raw: dict[str, Any] = json.loads(TEMPLATES_PATH.read_text(encoding="utf-8"))
    return {name: raw[name] for name in TEMPLATE_NAMES}


def template(name: str) -> StripeObject:
    return copy.deepcopy(_templates()[name])


def new_id(prefix: str, length: int = 24) -> str:
    """Random id in Stripe's shape, e.g. ``pi_3Pq...`` (base62 body)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_session_id() -> str:
    # Real test-mode session ids are long: "cs_test_a1" followed by 58 base62 chars.
    return new_id("cs_test_a1", 58)


# --- errors ---------------------------------------------------------------


class StripeApiError(Exception):
    """An API error that is rendered as Stripe's ``{"error": {...}}`` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param

    def to_body(self) -> StripeObject:
        # Stripe omits absent attributes rather than sending nulls.
        err: StripeObject = {"message": self.message, "type": self.type}
        if self.code is not None:
            err["code"] = self.code
            err["doc_url"] = "https://stripe.com/docs/error-codes/" + self.code.replace("_", "-")
        if self.param is not None:
            err["param"] = self.param
        return {"error": err}


class ParamError(StripeApiError):
    """A request rejected before the endpoint ran: never stored for idempotency (as Stripe)."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(400, message, code=code, param=param)


def resource_missing(object_name: str, object_id: str, param: str = "id") -> StripeApiError:
    return StripeApiError(
        404,
        f"No such {object_name}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


# --- checkout.session -----------------------------------------------------


def checkout_session(
    *,
    session_id: str,
    created: int,
    expires_at: int,
    currency: str,
    amount_subtotal: int,
    amount_total: int,
    url: str,
    success_url: str,
    cancel_url: str | None,
    client_reference_id: str | None,
    customer_email: str | None,
    metadata: dict[str, str],
) -> StripeObject:
    s = template("checkout.session")
    s.update(
        id=session_id,
        object="checkout.session",
        created=created,
        expires_at=expires_at,
        livemode=False,
        mode="payment",
        ui_mode="hosted",
        status="open",
        payment_status="unpaid",
        currency=currency,
        amount_subtotal=amount_subtotal,
        amount_total=amount_total,
        url=url,
        success_url=success_url,
        cancel_url=cancel_url,
        client_reference_id=client_reference_id,
        customer_email=customer_email,
        metadata=dict(metadata),
        # Since API 2022-08-01 the PaymentIntent is created lazily, on confirmation.
        payment_intent=None,
        payment_method_types=["card"],
        client_secret=None,  # only embedded/custom UI modes carry one
        customer=None,
        customer_creation="if_required",
        customer_details=None,
        payment_method_collection="if_required",
        locale=None,
        invoice=None,
        subscription=None,
        setup_intent=None,
        payment_link=None,
        recovered_from=None,
        submit_type=None,
        billing_address_collection=None,
        allow_promotion_codes=None,
        after_expiration=None,
        consent=None,
        consent_collection=None,
        custom_fields=[],
        shipping_options=[],
        shipping_address_collection=None,
        shipping_cost=None,
        discounts=[],
        total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        currency_conversion=None,
        collected_information=None,
        permissions=None,
        saved_payment_method_options=None,
        payment_method_configuration_details=None,
        payment_method_options={},
        wallet_options=None,
        origin_context=None,
        integration_identifier=None,
        customer_account=None,
    )
    set_if_present(
        s, "automatic_tax", {"enabled": False, "liability": None, "provider": None, "status": None}
    )
    set_if_present(
        s,
        "custom_text",
        {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
    )
    set_if_present(
        s,
        "invoice_creation",
        {
            "enabled": False,
            "invoice_data": {
                "account_tax_ids": None,
                "custom_fields": None,
                "description": None,
                "footer": None,
                "issuer": None,
                "metadata": {},
                "rendering_options": None,
            },
        },
    )
    set_if_present(s, "phone_number_collection", {"enabled": False})
    set_if_present(s, "adaptive_pricing", {"enabled": False})
    set_if_present(s, "managed_payments", {"enabled": False})
    return s


def customer_details(email: str | None) -> StripeObject:
    """What Checkout collects from the buyer on the hosted page (card only, no address)."""
    details: StripeObject = template("checkout.session")["customer_details"]
    details.update(email=email, name=None, phone=None, tax_exempt="none", tax_ids=[])
    if isinstance(details.get("address"), dict):
        details["address"] = {k: None for k in details["address"]}
    for key in ("business_name", "individual_name"):
        if key in details:
            details[key] = None
    return details


def set_if_present(obj: StripeObject, key: str, value: Any) -> None:
    # Only replace fields the template actually has, so the field set stays Stripe's.
    if key in obj:
        obj[key] = value


# --- event ----------------------------------------------------------------


def event(
    *,
    event_id: str,
    created: int,
    type_: str,
    data_object: StripeObject,
    api_version: str,
    pending_webhooks: int,
    request_id: str | None,
    idempotency_key: str | None,
    previous_attributes: StripeObject | None = None,
) -> StripeObject:
    e = template("event")
    e.update(
        id=event_id,
        object="event",
        created=created,
        type=type_,
        # A snapshot: later changes to the session must not leak into old events.
        data={"object": copy.deepcopy(data_object)},
        api_version=api_version,
        livemode=False,
        pending_webhooks=pending_webhooks,
        request={"id": request_id, "idempotency_key": idempotency_key},
    )
    if previous_attributes is not None:
        # What Stripe adds to update-type events (refund.updated, charge.refunded):
        # the changed fields' values before the change.
        e["data"]["previous_attributes"] = copy.deepcopy(previous_attributes)
    return e


# --- list -----------------------------------------------------------------


def list_object(url: str, data: list[StripeObject], has_more: bool) -> StripeObject:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}
