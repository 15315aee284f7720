"""Who listens to which event. Every process declares the whole topology when it connects, so a
message published before its consumer ever started waits in the consumer's durable queue."""

from __future__ import annotations

from collections.abc import Sequence

from shared.messages import contracts as c
from shared.messages.envelope import Event

SERVICES: tuple[str, ...] = (c.CART, c.ORDERS, c.PAYMENTS, c.PROVISIONING)

SUBSCRIPTIONS: dict[str, tuple[type[Event], ...]] = {
    c.CART: (c.OrderCompleted, c.OrderCancelled),
    c.ORDERS: (
        c.CheckoutRequested,
        c.CreditsReserved,
        c.CreditsRejected,
        c.CreditsCaptured,
        c.CreditsReleased,
        c.CreditsRefunded,
        c.JobCreated,
        c.JobRejected,
        c.JobCancelled,
        c.PaymentSessionCreated,
        c.PaymentSessionFailed,
        c.PaymentSucceeded,
        c.PaymentFailed,
        c.PaymentExpired,
        c.PaymentPending,
        c.PaymentDisputed,
        c.PaymentRefunded,
        c.RefundFailed,
        c.OrderProvisioned,
        c.OrderProvisionedV2,
        c.ProvisioningFailed,
    ),
    c.PAYMENTS: (),
    c.PROVISIONING: (c.CreditsGranted,),
}


class Names:
    """Broker object names under one namespace."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.events = f"{namespace}.events"
        self.commands = f"{namespace}.commands"
        self.dead_letters = f"{namespace}.dlx"

    def queue(self, service: str) -> str:
        return f"{self.namespace}.{service}"

    def dlq(self, service: str) -> str:
        return f"{self.namespace}.{service}.dlq"

    def retry_queue(self, service: str, delay: float) -> str:
        """The service's delayed-retry queue for one delay; named by it, because a queue's TTL
        cannot change once declared (a new schedule declares new queues)."""
        return f"{self.namespace}.{service}.retry.{round(delay * 1000)}ms"

    def retry_queues(self, service: str, backoff: Sequence[float]) -> list[str]:
        return sorted({self.retry_queue(service, delay) for delay in backoff})


def event_types(service: str) -> tuple[str, ...]:
    # Two versions of one event share its type (and routing key): bind it once.
    return tuple(dict.fromkeys(e.TYPE for e in SUBSCRIPTIONS[service]))
