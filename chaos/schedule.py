"""The fault schedule: which fault strikes when, drawn from a seed so that any run can be repeated.

Pure: `draw(seed, profile, processes, window)` gives the same list for the same arguments.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Profile:
    """How many faults of each kind a run injects."""

    kills: int
    broker_drops: int
    broker_restarts: int
    pg_terminations: int
    stripe_errors: int
    stripe_timeouts: int
    webhook_windows: int
    # One database outage per entry, on that service's database, lasting within this range.
    db_outages: tuple[str, ...] = ()
    db_outage_seconds: tuple[float, float] = (20.0, 60.0)


PROFILES: dict[str, Profile] = {
    "short": Profile(
        kills=4,
        broker_drops=1,
        broker_restarts=0,
        pg_terminations=2,
        stripe_errors=2,
        stripe_timeouts=1,
        webhook_windows=2,
        # Orders down while card payments come in: their PaymentSucceeded must wait in the
        # delayed-retry queues until orders takes connections again, not be lost.
        db_outages=("orders",),
        # Kept well under the stack's 60 s step deadline (with room for the retry delays): the
        # saga does not yet ask a step's owner before a deadline compensates (issue 13, item 2),
        # so an outage as long as a deadline can still cancel an order on silence alone. CI must
        # not hang on that known gap by chance; the full profile draws up to 60 s.
        db_outage_seconds=(20.0, 40.0),
    ),
    "full": Profile(
        kills=12,
        broker_drops=3,
        broker_restarts=1,
        pg_terminations=6,
        stripe_errors=5,
        stripe_timeouts=3,
        webhook_windows=5,
        db_outages=("orders", "payments", "cart", "provisioning"),
    ),
}

# Stripe endpoints the saga POSTs to: a fault on either is exercised. Bursts stay below the
# payments service's retry budget (6 attempts): a burst above it is a designed cancellation,
# proven by its own integration test, not something the run should produce at random.
MAX_STRIPE_BURST = 4
# A database outage (a failover, a maintenance window) lasts a profile's `db_outage_seconds`; the
# messaging layer's retries and the shoppers' patience (chaos/client.py) must both outlast it.
STRIPE_PATHS = ("/v1/checkout/sessions", "/v1/refunds")


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the load starts
    kind: str
    target: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"t+{self.at:6.1f}s  {self.kind:15s} {self.target:13s} {args}".rstrip()


def draw(
    seed: int, profile: Profile, processes: list[str], services: list[str], window: float
) -> list[Fault]:
    """The run's faults, sorted by time, spread over [window/20, window]."""
    rng = random.Random(seed)

    def when() -> float:
        return round(rng.uniform(window / 20, window), 1)

    faults: list[Fault] = []
    for _ in range(profile.kills):
        target = rng.choice(processes)
        faults.append(Fault(when(), "kill", target, {"down_s": round(rng.uniform(0.2, 3.0), 1)}))
    for _ in range(profile.broker_drops):
        faults.append(Fault(when(), "broker_drop"))
    for _ in range(profile.broker_restarts):
        faults.append(Fault(when(), "broker_restart", params={"down_s": rng.randint(2, 6)}))
    for _ in range(profile.pg_terminations):
        faults.append(Fault(when(), "pg_terminate", rng.choice(services)))
    for _ in range(profile.stripe_errors):
        path = rng.choice(STRIPE_PATHS)
        faults.append(
            Fault(
                when(),
                "stripe_5xx",
                params={"path": path, "count": rng.randint(1, MAX_STRIPE_BURST)},
            )
        )
    for _ in range(profile.stripe_timeouts):
        path = rng.choice(STRIPE_PATHS)
        faults.append(Fault(when(), "stripe_timeout", params={"path": path, "count": 1}))
    for _ in range(profile.webhook_windows):
        faults.append(
            Fault(
                when(),
                "webhooks",
                params={
                    "duplicate": rng.randint(1, 3),
                    "delay_s": round(rng.uniform(0, 2), 1),
                    "reorder": rng.random() < 0.6,
                    "drop_next": rng.randint(0, 2),
                    "for_s": round(rng.uniform(3, 10), 1),
                },
            )
        )
    # Drawn last, so a seed's other faults stay those it drew before this kind existed.
    for service in profile.db_outages:
        down = round(rng.uniform(*profile.db_outage_seconds), 1)
        faults.append(Fault(when(), "db_outage", service, {"down_s": down}))
    return sorted(faults, key=lambda f: (f.at, f.kind, f.target))
