"""Settings of the cart service (environment prefix CART_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class CartSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CART_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/cart.db"
    http_port: int = 8001
