"""Builds the orders service: the one place its real adapters are made."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from services.orders import api
from services.orders.deadlines import deadline_scheduler
from services.orders.deps import OrdersDeps, OrdersRuntime
from services.orders.handlers import build_handlers
from services.orders.models import Base, inbox, outbox
from services.orders.saga.state import Timing
from services.orders.settings import OrdersSettings
from shared.bus import Bus
from shared.messages.contracts import ORDERS
from shared.runtime import ServiceRuntime, ServiceSpec

MIGRATIONS = Path(__file__).parent / "migrations"


def build(
    settings: OrdersSettings | None = None,
    *,
    bus: Bus | None = None,
    auto_migrate: bool = False,
    fire_deadlines: bool = True,
) -> OrdersRuntime:
    """`fire_deadlines=False` leaves out the deadline scheduler, for tests that fire deadlines
    themselves: its first round runs at start, and could take a deadline they moved."""
    settings = settings or OrdersSettings()
    timing = Timing(
        payment_window=timedelta(seconds=settings.payment_window_seconds),
        step_timeout=timedelta(seconds=settings.step_timeout_seconds),
        provisioning_timeout=timedelta(seconds=settings.provisioning_timeout_seconds),
        payment_grace=timedelta(seconds=settings.payment_grace_seconds),
        max_attempts=settings.provisioning_max_attempts,
        max_ask_interval=timedelta(seconds=settings.max_ask_interval_seconds),
        pending_recheck=timedelta(seconds=settings.pending_recheck_seconds),
        processing_window=timedelta(seconds=settings.payment_processing_window_seconds),
    )
    spec = ServiceSpec(
        name=ORDERS,
        settings=settings,
        deps=OrdersDeps(timing=timing),
        metadata=Base.metadata,
        migrations_dir=MIGRATIONS,
        outbox_table=outbox,
        inbox_table=inbox,
        handlers=build_handlers(timing),
        routers=[api.router],
        background=[deadline_scheduler] if fire_deadlines else [],
    )
    return ServiceRuntime(spec, bus=bus, auto_migrate=auto_migrate)
