"""Webhook delivery: each event POSTed, signed as Stripe does, with bounded retries."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx

from .config import SimConfig
from .objects import StripeObject
from .signing import signature_header
from .store import SimStore

log = logging.getLogger(__name__)


class WebhookDispatcher:
    """Delivers each event in its own background task, with bounded retries.

    Like Stripe: the exact signed bytes are sent, a fresh signature per attempt,
    redirects are not followed, and any non-2xx counts as a failure.
    """

    def __init__(self, config: SimConfig, store: SimStore) -> None:
        self._config = config
        self._store = store
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

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
        if self._config.webhook_url is None:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(event))
        # Keep a reference: the loop holds tasks only weakly.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event: StripeObject) -> None:
        url = self._config.webhook_url
        assert url is not None and self._client is not None
        # Stripe sends pretty-printed JSON; receivers must verify these exact bytes.
        payload = json.dumps(event, indent=2).encode("utf-8")
        attempts = self._config.webhook_max_attempts
        for attempt in range(attempts):
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
