"""What the orders service's routes, handlers and background tasks get besides the runtime,
typed: `runtime.deps` of an `OrdersRuntime`."""

from __future__ import annotations

from dataclasses import dataclass

from services.orders.saga.state import Timing
from services.orders.settings import OrdersSettings
from shared.runtime import ServiceRuntime


@dataclass(frozen=True)
class OrdersDeps:
    """What `bootstrap.py` builds besides the runtime."""

    # The saga's step timeouts and payment window, from the settings.
    timing: Timing


OrdersRuntime = ServiceRuntime[OrdersSettings, OrdersDeps]
