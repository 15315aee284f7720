"""The orders service on the one rig."""

from __future__ import annotations

from typing import Any

from services.orders.settings import OrdersSettings
from tests.support.rig import settings_for


def orders_settings(database_url: str, **overrides: Any) -> OrdersSettings:
    return settings_for(OrdersSettings, database_url, **overrides)
