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
    # A checkout session is valid this long after it is issued; a cart change issues a new one.
    session_ttl_seconds: int = Field(default=86400, ge=1)
    # How often the background task marks expired sessions and deletes old ones.
    session_cleanup_interval_seconds: float = Field(default=60.0, gt=0)
    # Expired and invalidated sessions are kept (and can be recovered while expired) this long
    # after they ended, then deleted. Completed sessions are never deleted.
    session_retention_seconds: int = Field(default=7 * 86400, ge=0)
    # Admission control: new checkouts are refused (503 checkout_busy, Retry-After) while more
    # messages than this wait in the saga services' queues, so that past its peak the system
    # keeps completing checkouts at the peak instead of drowning in a backlog. 0 turns it off.
    admission_backlog: int = Field(default=400, ge=0)
    # How long one reading of the queues' backlog is reused.
    admission_refresh_seconds: float = Field(default=0.25, gt=0)
    # Recovery of lost order outcomes: a checkout still `requested` this long after the cart
    # last heard of it or asked about it is asked after (`InquireOrder`); orders says the outcome
    # again if the order has ended. Longer than most sagas run, so a normal checkout is not
    # asked about; one awaiting payment (up to the payment window) is, harmlessly.
    outcome_inquiry_after_seconds: float = Field(default=900.0, gt=0)
    # How often the cart looks for such checkouts, and how many it asks about per look at most,
    # so that a backlog of them reaches orders as a trickle, not a storm.
    outcome_inquiry_poll_seconds: float = Field(default=60.0, gt=0)
    outcome_inquiry_batch: int = Field(default=100, ge=1)
