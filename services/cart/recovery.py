"""Recovers checkouts whose outcome never came. `OrderCompleted` / `OrderCancelled` are said
once; one that is lost (dead-lettered past the retry horizon, a purged queue) would leave the
checkout `requested` and its cart `checking_out` for good. So the cart asks orders
(`InquireOrder`) about every checkout silent for `outcome_inquiry_after_seconds`; orders says an
ended order's outcome again, which the handlers apply like the first (once: they only move a
`requested` checkout), and says nothing while the order runs. Asking is harmless, so every
replica runs the round; SKIP LOCKED and the touch keep them from asking about one checkout at
once or at every poll."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from services.cart import repository as repo
from services.cart.deps import CartRuntime
from services.cart.models import utcnow
from shared.logging import log_fields
from shared.messages.contracts import InquireOrder
from shared.periodic import every

log = logging.getLogger("services.cart.recovery")


async def inquire_silent_checkouts(runtime: CartRuntime, *, now: datetime) -> list[str]:
    """Asks orders about at most a batch of checkouts silent for the inquiry interval, in one
    transaction with their touch; returns their ids."""
    settings = runtime.settings
    silent_since = now - timedelta(seconds=settings.outcome_inquiry_after_seconds)
    async with runtime.transaction() as db:
        silent = await repo.claim_silent_checkouts(
            db, silent_since=silent_since, now=now, batch=settings.outcome_inquiry_batch
        )
        for checkout_id, cart_id in silent:
            # The checkout id is the order id and the trace id of everything about it.
            inquiry = InquireOrder(order_id=checkout_id, cart_id=cart_id)
            await runtime.emit(db, inquiry, correlation_id=checkout_id)
    return [checkout_id for checkout_id, _ in silent]


async def _inquiry_round(runtime: CartRuntime) -> None:
    asked = await inquire_silent_checkouts(runtime, now=utcnow())
    if asked:
        log.info("asked orders about checkouts with no outcome", extra=log_fields(order_ids=asked))


def _poll_seconds(runtime: CartRuntime) -> float:
    return runtime.settings.outcome_inquiry_poll_seconds


# Waits one poll before its first round: after a restart, the outcomes that queued up while the
# cart was down are applied first, and need no question.
ask_after_silent_checkouts = every(
    _poll_seconds, _inquiry_round, name="order outcome inquiry", wait_first=True
)
