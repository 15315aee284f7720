"""Refunds: created ``pending`` (``refund.created``), then settled to ``succeeded``.

Settling emits ``refund.updated`` and ``charge.refunded``, as a real card refund does
once the network has accepted it. State lives under the store's lock, like the rest.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Coroutine
from typing import Any

from . import objects, payment_objects
from .objects import ParamError, StripeApiError, StripeObject
from .store import NO_REQUEST, RequestContext, SimStore

log = logging.getLogger(__name__)

# Stripe lists this many refunds inline in `charge.refunds`; more are behind has_more.
_CHARGE_REFUNDS_INLINE = 10


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
            try:
                return copy.deepcopy(self._refunds[refund_id])
            except KeyError:
                raise objects.resource_missing("refund", refund_id, "refund") from None

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

    async def aclose(self) -> None:
        """Cancel refunds still waiting to settle (on shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

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

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        # Keep a reference: the loop holds tasks only weakly.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
