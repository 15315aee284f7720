"""One async handler per message type the cart service consumes."""

from __future__ import annotations

from collections.abc import Mapping

from shared.dispatch import Handler
from shared.messages import Contract

HANDLERS: Mapping[type[Contract], Handler] = {}
