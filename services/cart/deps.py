"""What the cart service's routes, use cases and background tasks reach through its runtime,
typed: `runtime.settings` is a `CartSettings`, `runtime.deps` a `CartDeps`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from services.cart.admission import Admission
from services.cart.settings import CartSettings
from shared.runtime import ServiceRuntime


@dataclass(frozen=True)
class CartDeps:
    """What `bootstrap.build` makes besides the runtime itself."""

    admission: Admission


CartRuntime: TypeAlias = ServiceRuntime[CartSettings, CartDeps]
