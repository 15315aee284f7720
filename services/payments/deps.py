"""What the payments service's routes, handlers and background tasks reach through its runtime,
typed: `runtime.settings` is a `PaymentsSettings`, `runtime.deps` a `PaymentsDeps`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from services.payments.settings import PaymentsSettings
from services.payments.stripe_gateway import StripeGateway
from shared.runtime import ServiceRuntime


@dataclass(frozen=True)
class PaymentsDeps:
    """What `bootstrap.build` makes besides the runtime itself."""

    # The one Stripe client of the process: handlers, the reconciler and the operator API.
    stripe: StripeGateway


PaymentsRuntime: TypeAlias = ServiceRuntime[PaymentsSettings, PaymentsDeps]
