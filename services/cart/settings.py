"""Settings of the cart service (environment prefix CART_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class CartSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CART_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/cart.db"
    http_port: int = 8001
    # Fills an empty catalogue with the default items at startup (demo and fresh installs).
    seed_catalogue: bool = True
    # Currency of new carts; every line added must be priced in it.
    default_currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
