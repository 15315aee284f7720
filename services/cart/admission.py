"""Admission control: a new checkout is refused while the saga is too far behind.

Past its peak an open system only queues: every accepted checkout adds messages to the saga
services' queues, each saga waits longer, and the work done per completed checkout grows (more
lock waits, more redeliveries), so completions fall below the peak. Refusing new checkouts
while the queues hold more than a bound keeps the saga at its peak and tells the shopper to retry
(503 with Retry-After; a retry with the same Idempotency-Key is safe). Retries of checkouts
already accepted are never refused: they are answered before this check.
"""

from __future__ import annotations

import logging
import time

from services.cart.domain import CheckoutBusy
from shared.bus import Bus
from shared.messages.contracts import ORDERS, PAYMENTS, PROVISIONING

log = logging.getLogger("services.cart.admission")

SAGA_SERVICES = (ORDERS, PAYMENTS, PROVISIONING)


class Admission:
    def __init__(self, *, limit: int, refresh_seconds: float) -> None:
        self.limit = limit
        self.refresh_seconds = refresh_seconds
        self._backlog = 0
        self._read_at = float("-inf")
        self.refused = 0

    async def admit(self, bus: Bus) -> None:
        """Raises `CheckoutBusy` while the backlog is over the limit."""
        if self.limit <= 0:
            return
        now = time.monotonic()
        if now - self._read_at >= self.refresh_seconds:
            self._read_at = now  # one reading per period, also when it fails
            try:
                self._backlog = await bus.backlog(SAGA_SERVICES)
            except Exception:
                # The broker is away: checkouts still go to the outbox and out when it is back,
                # so an unknown backlog admits rather than refusing every shopper.
                log.warning("could not read the saga backlog; admitting", exc_info=True)
                self._backlog = 0
        if self._backlog > self.limit:
            self.refused += 1
            raise CheckoutBusy(backlog=self._backlog, limit=self.limit)
