"""Idempotency-Key records: the first response per key, replayed for the same request.

No HTTP here; :class:`~.stripe_api.StripeApi` decides when a request begins, finishes
or aborts a key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .objects import StripeApiError

# Real Stripe forgets idempotency keys after 24 hours.
IDEMPOTENCY_TTL_SECONDS = 24 * 3600


@dataclass
class _IdempotencyRecord:
    method: str
    path: str
    fingerprint: str
    created: float
    status: int | None = None  # None while the first request is still running
    body: bytes = b""
    request_id: str | None = None


@dataclass(frozen=True)
class Replay:
    status: int
    body: bytes
    original_request_id: str | None


class IdempotencyKeys:
    """Every method takes ``lock``, which the owning :class:`~.store.SimStore` shares."""

    def __init__(self, *, lock: asyncio.Lock, clock: Callable[[], float]) -> None:
        self._lock = lock
        self._clock = clock
        self._records: dict[str, _IdempotencyRecord] = {}

    async def begin(
        self, key: str, method: str, path: str, params: dict[str, Any]
    ) -> Replay | None:
        """Replay of the first response for ``key``, or None if this request should run.

        Raises Stripe's idempotency errors when the key was used for another request.
        """
        fingerprint = json.dumps(params, sort_keys=True, separators=(",", ":"))
        async with self._lock:
            now = self._clock()
            self._prune_locked(now)
            record = self._records.get(key)
            if record is None:
                self._records[key] = _IdempotencyRecord(method, path, fingerprint, now)
                return None
            if (record.method, record.path) != (method, path):
                raise StripeApiError(
                    400,
                    "Keys for idempotent requests can only be used for the same endpoint they "
                    f"were first used for ('{record.path}' vs '{path}'). Try using a key other "
                    f"than '{key}' if you meant to execute a different request.",
                    type_="idempotency_error",
                )
            if record.fingerprint != fingerprint:
                raise StripeApiError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with. Try using a key other than '{key}' if you "
                    "meant to execute a different request.",
                    type_="idempotency_error",
                )
            if record.status is None:
                # Stripe answers 409 here; the SDK retries 409s by itself.
                raise StripeApiError(
                    409,
                    "There is currently another in-progress request using this Idempotency "
                    f"Key ('{key}'); it probably means the request was submitted twice and "
                    "the other one is still running. Try again later.",
                    type_="idempotency_error",
                )
            return Replay(record.status, record.body, record.request_id)

    async def finish(self, key: str, status: int, body: bytes, request_id: str | None) -> None:
        async with self._lock:
            record = self._records.get(key)
            if record is not None:
                record.status, record.body, record.request_id = status, body, request_id

    async def abort(self, key: str) -> None:
        """Forget a key whose request failed validation: Stripe saves no result for those."""
        async with self._lock:
            record = self._records.get(key)
            if record is not None and record.status is None:
                del self._records[key]

    def _prune_locked(self, now: float) -> None:
        stale = [k for k, r in self._records.items() if now - r.created > IDEMPOTENCY_TTL_SECONDS]
        for k in stale:
            del self._records[k]
