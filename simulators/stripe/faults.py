"""Injected faults: API errors before or after the request ran, responses lost after commit,
misbehaving webhook delivery.

Set through ``POST /_sim/faults`` (see :mod:`.routes_sim`). Every method here is
synchronous and never awaits, so on the event loop each one is atomic: two requests can
never both consume the last ``count`` of a rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Rule(BaseModel):
    # Unknown keys are rejected: a typo must not silently inject nothing.
    model_config = ConfigDict(extra="forbid")

    # None matches every method.
    method: str | None = None
    path_prefix: str = "/v1/"
    count: int = Field(default=1, ge=1)

    @field_validator("method")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value is not None else None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method.upper()) and path.startswith(
            self.path_prefix
        )


class ApiErrorRule(_Rule):
    """The next ``count`` matching API requests answer ``status`` and do nothing."""

    status: int = Field(default=500, ge=400, le=599)


class ErrorAfterExecutionRule(_Rule):
    """The next ``count`` matching API requests that succeed answer ``status`` instead: what
    they did stays done, and their idempotency key keeps the error, as Stripe keeps a 500."""

    status: int = Field(default=500, ge=500, le=599)


class TimeoutAfterCommitRule(_Rule):
    """The next ``count`` matching requests commit, then their response is held."""

    delay_seconds: float = Field(default=30.0, ge=0)


class WebhookFaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Copies of each event, delivered concurrently (1 = normal delivery).
    duplicate: int = Field(default=1, ge=1)
    # Wait before every delivery (each copy, each redelivery by retry starts after it).
    delay_seconds: float = Field(default=0.0, ge=0)
    # Hold a session's events for SimConfig.webhook_reorder_hold_seconds, send newest first.
    reorder: bool = False
    # This many upcoming events are never delivered (still listed in /v1/events).
    drop_next: int = Field(default=0, ge=0)


class FaultsUpdate(BaseModel):
    """Body of ``POST /_sim/faults``: each key given replaces that kind of fault."""

    model_config = ConfigDict(extra="forbid")

    api_errors: list[ApiErrorRule] | None = None
    api_errors_after_execution: list[ErrorAfterExecutionRule] | None = None
    timeout_after_commit: list[TimeoutAfterCommitRule] | None = None
    webhooks: WebhookFaults | None = None


_R = TypeVar("_R", bound=_Rule)


@dataclass(frozen=True)
class WebhookPlan:
    """What the dispatcher does with one event, decided when the event is emitted."""

    drop: bool
    copies: int
    delay_seconds: float
    reorder: bool


# Plan of an event when no fault is set, and of explicit redeliveries (which bypass faults).
NORMAL_DELIVERY = WebhookPlan(drop=False, copies=1, delay_seconds=0.0, reorder=False)

COUNTER_NAMES = (
    "api_errors",  # API requests answered with an injected error
    "api_errors_after_execution",  # requests that ran, answered with an injected error
    "timeout_after_commit",  # committed requests whose response was held
    "webhook_duplicates",  # extra copies sent beyond the first
    "webhook_delayed",  # deliveries that waited delay_seconds
    "webhook_reordered",  # events held back to be sent newest first
    "webhook_dropped",  # events never delivered
    "webhook_redeliveries",  # POST /_sim/events/{id}/redeliver calls
)


class Faults:
    def __init__(self) -> None:
        self._api_errors: list[ApiErrorRule] = []
        self._errors_after: list[ErrorAfterExecutionRule] = []
        self._timeouts: list[TimeoutAfterCommitRule] = []
        self._webhooks = WebhookFaults()
        self._counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)

    def update(self, body: FaultsUpdate) -> None:
        # Copies: the rules' counts are decremented here, never in the caller's objects.
        if body.api_errors is not None:
            self._api_errors = [r.model_copy() for r in body.api_errors]
        if body.api_errors_after_execution is not None:
            self._errors_after = [r.model_copy() for r in body.api_errors_after_execution]
        if body.timeout_after_commit is not None:
            self._timeouts = [r.model_copy() for r in body.timeout_after_commit]
        if body.webhooks is not None:
            self._webhooks = body.webhooks.model_copy()

    def clear(self) -> None:
        """Remove every fault and zero the counters (a clean slate between test cases)."""
        self._api_errors = []
        self._errors_after = []
        self._timeouts = []
        self._webhooks = WebhookFaults()
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)

    def snapshot(self) -> dict[str, Any]:
        """Body of ``GET /_sim/faults``: rules still armed (remaining counts) and counters."""
        return {
            "api_errors": [r.model_dump() for r in self._api_errors],
            "api_errors_after_execution": [r.model_dump() for r in self._errors_after],
            "timeout_after_commit": [r.model_dump() for r in self._timeouts],
            "webhooks": self._webhooks.model_dump(),
            "counters": dict(self._counters),
        }

    def count(self, name: str, n: int = 1) -> None:
        self._counters[name] += n

    def take_api_error(self, method: str, path: str) -> ApiErrorRule | None:
        return self._take_counted(self._api_errors, "api_errors", method, path)

    def take_error_after_execution(self, method: str, path: str) -> ErrorAfterExecutionRule | None:
        """The rule answering a request that has just succeeded with an error, if one matches."""
        return self._take_counted(self._errors_after, "api_errors_after_execution", method, path)

    def take_timeout(self, method: str, path: str) -> float | None:
        """Seconds to hold this committed request's response, if a rule matches."""
        rule = self._take_counted(self._timeouts, "timeout_after_commit", method, path)
        return None if rule is None else rule.delay_seconds

    def _take_counted(self, rules: list[_R], counter: str, method: str, path: str) -> _R | None:
        rule = _take(rules, method, path)
        if rule is not None:
            self.count(counter)
        return rule

    def plan_webhook(self) -> WebhookPlan:
        w = self._webhooks
        if w.drop_next > 0:
            w.drop_next -= 1
            self.count("webhook_dropped")
            return WebhookPlan(drop=True, copies=0, delay_seconds=0.0, reorder=False)
        if w.duplicate > 1:
            self.count("webhook_duplicates", w.duplicate - 1)
        if w.delay_seconds > 0:
            self.count("webhook_delayed", w.duplicate)
        if w.reorder:
            self.count("webhook_reordered")
        return WebhookPlan(
            drop=False, copies=w.duplicate, delay_seconds=w.delay_seconds, reorder=w.reorder
        )


def _take(rules: list[_R], method: str, path: str) -> _R | None:
    """Consume one use of the first rule matching the request; spent rules are removed."""
    for i, rule in enumerate(rules):
        if rule.matches(method, path):
            rule.count -= 1
            if rule.count == 0:
                del rules[i]
            return rule
    return None
