"""Refunds: created ``pending`` (``refund.created``), then settled to ``succeeded``.

Settling emits ``refund.updated`` and ``charge.refunded``, as a real card refund does
once the network has accepted it. A refund can also end without reaching the customer, as
Stripe documents: ``failed`` (from pending, or after it succeeded: the bank returned it; with a
``failure_reason``), emitting ``refund.updated``, ``refund.failed`` and the older
``charge.refund.updated``; or ``canceled`` while pending, emitting ``refund.updated`` and
``charge.refund.updated``. Either gives its amount back to what may still be refunded. Refunds
of the refund-failing test card fail by themselves once settled; any other fails or is
canceled through the ``/_sim/refunds/...`` controls. State lives under the store's lock.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Coroutine
from typing import Any

from . import objects, payment_objects
from .objects import ParamError, StripeApiError, StripeObject
from .payment_objects import RefundFailureReason
from .store import NO_REQUEST, RequestContext, SimStore

log = logging.getLogger(__name__)

# Stripe lists this many refunds inline in `charge.refunds`; more are behind has_more.
_CHARGE_REFUNDS_INLINE = 10
# Why refunds of the refund-failing test card fail (the simulator's choice of Stripe's values).
REFUND_FAILING_CARD_REASON: RefundFailureReason = "expired_or_canceled_card"


class RefundLedger:
    def __init__(self, store: SimStore, settle_seconds: float) -> None:
        self._store = store
        self._settle_seconds = settle_seconds
        # Insertion order is creation order: newest-first lists read them reversed.
        self._refunds: dict[str, StripeObject] = {}
        # Payment intent id -> amount of its refunds, pending ones included: a pending
        # refund already takes its share of what may still be refunded.
        self._reserved: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def create(
        self,
        *,
        pi_id: str,
        amount: int | None,
        reason: str | None,
        metadata: dict[str, str],
        ctx: RequestContext,
    ) -> StripeObject:
        """Refund ``amount`` (default: all that is left) of a succeeded payment intent."""
        async with self._store.lock:
            pi = self._store.payment_intent_locked(pi_id)
            if pi is None:
                raise ParamError(
                    f"No such payment_intent: '{pi_id}'",
                    param="payment_intent",
                    code="resource_missing",
                )
            if pi["status"] != "succeeded":
                # A delayed payment still processing (or failed) has no money to give back.
                raise StripeApiError(
                    400,
                    f"This PaymentIntent ({pi_id}) does not have a successful charge to refund.",
                    param="payment_intent",
                )
            refunded = self._reserved.get(pi_id, 0)
            left = pi["amount_received"] - refunded
            if left <= 0:
                raise StripeApiError(
                    400,
                    f"Charge {pi['latest_charge']} has already been refunded.",
                    code="charge_already_refunded",
                )
            amount = left if amount is None else amount
            if amount > left:
                raise StripeApiError(
                    400,
                    f"Refund amount ({amount} {pi['currency']}) is greater than unrefunded "
                    f"amount on charge ({left} {pi['currency']})",
                    code="amount_too_large",
                    param="amount",
                )
            refund = payment_objects.refund(
                refund_id=objects.new_id("re_"),
                created=self._store.now(),
                amount=amount,
                payment_intent=pi,
                reason=reason,
                metadata=metadata,
            )
            self._refunds[refund["id"]] = refund
            self._reserved[pi_id] = refunded + amount
            self._list_refunds_on_charge_locked(refund["charge"])
            self._store.emit_locked("refund.created", refund, ctx)
            self._spawn(self._settle_later(refund["id"]))
            return copy.deepcopy(refund)

    async def get(self, refund_id: str) -> StripeObject:
        async with self._store.lock:
            return copy.deepcopy(self._refund_locked(refund_id))

    async def settle(self, refund_id: str) -> None:
        """Pending -> succeeded; emits ``refund.updated`` then ``charge.refunded``."""
        async with self._store.lock:
            refund = self._refunds[refund_id]
            if refund["status"] != "pending":
                return
            refund["status"] = "succeeded"
            # Automatic transitions have no API request behind them, as in Stripe.
            self._store.emit_locked(
                "refund.updated", refund, NO_REQUEST, previous_attributes={"status": "pending"}
            )
            charge = self._store.charge_locked(refund["charge"])
            before = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
            charge["amount_refunded"] += refund["amount"]
            charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
            self._list_refunds_on_charge_locked(refund["charge"])
            changed = {k: v for k, v in before.items() if charge[k] != v}
            self._store.emit_locked("charge.refunded", charge, NO_REQUEST, changed)
            if self._store.refunds_fail(refund["payment_intent"]):
                self._spawn(self._fail_later(refund_id))

    async def fail(self, refund_id: str, reason: RefundFailureReason) -> StripeObject:
        """Pending or succeeded -> failed: the money did not reach the customer (a closed or
        lost card); returns the refund."""
        async with self._store.lock:
            refund = self._refund_locked(refund_id)
            before = refund["status"]
            if before not in ("pending", "succeeded"):
                raise _not_on_its_way(refund, "fail")
            previous = payment_objects.fail_refund(refund, reason)
            self._give_back_locked(refund, was_counted=before == "succeeded")
            self._store.emit_locked("refund.updated", refund, NO_REQUEST, previous)
            self._store.emit_locked("refund.failed", refund, NO_REQUEST)
            self._store.emit_locked("charge.refund.updated", refund, NO_REQUEST, previous)
            return copy.deepcopy(refund)

    async def cancel(self, refund_id: str) -> StripeObject:
        """Pending -> canceled (it never left Stripe); returns the refund."""
        async with self._store.lock:
            refund = self._refund_locked(refund_id)
            if refund["status"] != "pending":
                raise _not_on_its_way(refund, "be canceled")
            refund["status"] = "canceled"
            self._give_back_locked(refund, was_counted=False)
            previous = {"status": "pending"}
            self._store.emit_locked("refund.updated", refund, NO_REQUEST, previous)
            self._store.emit_locked("charge.refund.updated", refund, NO_REQUEST, previous)
            return copy.deepcopy(refund)

    async def aclose(self) -> None:
        """Cancel refunds still waiting to settle (on shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _refund_locked(self, refund_id: str) -> StripeObject:
        try:
            return self._refunds[refund_id]
        except KeyError:
            raise objects.resource_missing("refund", refund_id, "refund") from None

    def _give_back_locked(self, refund: StripeObject, *, was_counted: bool) -> None:
        """A refund that ended without paying out: its amount may be refunded again, and a
        charge that had counted it as refunded no longer does."""
        self._reserved[refund["payment_intent"]] -= refund["amount"]
        charge = self._store.charge_locked(refund["charge"])
        if was_counted:
            charge["amount_refunded"] -= refund["amount"]
            charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        self._list_refunds_on_charge_locked(refund["charge"])

    def _list_refunds_on_charge_locked(self, charge_id: str) -> None:
        charge = self._store.charge_locked(charge_id)
        mine = [
            copy.deepcopy(r) for r in reversed(self._refunds.values()) if r["charge"] == charge_id
        ]
        charge["refunds"] = objects.list_object(
            f"/v1/charges/{charge_id}/refunds",
            mine[:_CHARGE_REFUNDS_INLINE],
            len(mine) > _CHARGE_REFUNDS_INLINE,
        )

    async def _settle_later(self, refund_id: str) -> None:
        await asyncio.sleep(self._settle_seconds)
        try:
            await self.settle(refund_id)
        except Exception:
            log.exception("settling refund %s failed", refund_id)

    async def _fail_later(self, refund_id: str) -> None:
        await asyncio.sleep(self._settle_seconds)
        try:
            await self.fail(refund_id, REFUND_FAILING_CARD_REASON)
        except StripeApiError:
            pass  # failed or canceled meanwhile through a control: it stays as it is
        except Exception:
            log.exception("failing refund %s failed", refund_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        # Keep a reference: the loop holds tasks only weakly.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _not_on_its_way(refund: StripeObject, action: str) -> StripeApiError:
    return StripeApiError(
        400,
        f"Refund {refund['id']} has a status of `{refund['status']}` and cannot {action}.",
    )
