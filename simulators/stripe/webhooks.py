"""Webhook delivery: each event POSTed, signed as Stripe does, with bounded retries.

Webhook faults (:mod:`.faults`) are applied here: an event may be dropped, sent several
times at once, delayed, or held with the other events of its Checkout Session and sent
newest first.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from typing import Any

import httpx

from .config import SimConfig
from .faults import NORMAL_DELIVERY, Faults, WebhookPlan
from .objects import StripeObject
from .signing import signature_header
from .store import SimStore

log = logging.getLogger(__name__)


class WebhookDispatcher:
    """Delivers each event in its own background task, with bounded retries.

    Like Stripe: the exact signed bytes are sent, a fresh signature per attempt,
    redirects are not followed, and any non-2xx counts as a failure.
    """

    def __init__(self, config: SimConfig, store: SimStore, faults: Faults) -> None:
        self._config = config
        self._store = store
        self._faults = faults
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Events held by the `reorder` fault, per Checkout Session, oldest first.
        self._held: dict[str, list[tuple[StripeObject, WebhookPlan]]] = {}
        self._urls = config.webhook_urls
        self._next_url = 0

    @property
    def enabled(self) -> bool:
        return bool(self._urls)

    def start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=self._config.webhook_timeout_seconds, follow_redirects=False
        )

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def submit(self, event: StripeObject) -> None:
        """A new event (called under the store's lock, so this only schedules work)."""
        if not self.enabled:
            return
        # Decided now, not at send time: faults changed later do not alter queued events.
        plan = self._faults.plan_webhook()
        if plan.drop:
            log.info("webhook %s (%s) dropped by fault injection", event["id"], event["type"])
            return
        if plan.reorder:
            self._hold(event, plan)
            return
        self._spawn(self._deliver_copies(event, plan))

    def redeliver(self, event: StripeObject) -> None:
        """Send a stored event again, signed anew; faults do not apply to this resend."""
        self._faults.count("webhook_redeliveries")
        self._spawn(self._deliver_copies(event, NORMAL_DELIVERY))

    def _hold(self, event: StripeObject, plan: WebhookPlan) -> None:
        obj = event["data"]["object"]
        group = self._store.related_session_id(obj) or str(obj.get("id"))
        held = self._held.get(group)
        if held is None:
            # The window starts at the group's first event: a steady stream of events
            # cannot postpone delivery forever.
            self._held[group] = [(event, plan)]
            self._spawn(self._release_later(group))
        else:
            held.append((event, plan))

    async def _release_later(self, group: str) -> None:
        await asyncio.sleep(self._config.webhook_reorder_hold_seconds)
        held = self._held.pop(group, [])
        # One after the other, so that the receiver really sees them newest first.
        for event, plan in reversed(held):
            await self._deliver_copies(event, plan)

    async def _deliver_copies(self, event: StripeObject, plan: WebhookPlan) -> None:
        await asyncio.gather(
            *(self._deliver(event, plan.delay_seconds) for _ in range(plan.copies))
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        # Keep a reference: the loop holds tasks only weakly.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event: StripeObject, delay_seconds: float) -> None:
        assert self._urls and self._client is not None
        if delay_seconds > 0:
            await asyncio.sleep(delay_seconds)
        # Stripe sends pretty-printed JSON; receivers must verify these exact bytes.
        payload = json.dumps(event, indent=2).encode("utf-8")
        attempts = self._config.webhook_max_attempts
        for attempt in range(attempts):
            url = self._urls[self._next_url % len(self._urls)]
            self._next_url += 1
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                "Stripe-Signature": signature_header(payload, self._config.webhook_secret),
            }
            try:
                response = await self._client.post(url, content=payload, headers=headers)
                if 200 <= response.status_code < 300:
                    await self._store.mark_delivered(event["id"])
                    return
                outcome = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            log.warning(
                "webhook %s (%s) attempt %d/%d failed: %s",
                event["id"],
                event["type"],
                attempt + 1,
                attempts,
                outcome,
            )
            if attempt + 1 < attempts:
                delay = self._config.webhook_backoff_base_seconds * 2**attempt
                await asyncio.sleep(min(delay, self._config.webhook_backoff_cap_seconds))
        log.error(
            "webhook %s (%s) given up after %d attempts", event["id"], event["type"], attempts
        )
