"""Webhook signatures, computed exactly as Stripe does.

Stripe signs ``f"{timestamp}.{payload}"`` with HMAC-SHA256 keyed by the endpoint
secret (the whole ``whsec_...`` string, prefix included) and sends
``Stripe-Signature: t=<timestamp>,v1=<hex digest>``.
"""

from __future__ import annotations

import hashlib
import hmac
import time


def compute_signature(payload: bytes, secret: str, timestamp: int) -> str:
    signed = str(timestamp).encode("ascii") + b"." + payload
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def signature_header(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    # The timestamp is per attempt, as in Stripe: receivers reject stale signatures
    # (300 s by default), so a retry must not reuse the first attempt's header.
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={compute_signature(payload, secret, t)}"
