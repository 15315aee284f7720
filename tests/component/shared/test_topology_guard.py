"""The broker topology (`shared/topology.py`) is declared by hand, once, for every process; the
handlers are registered by each service's bootstrap. These tests hold the two together, so a new
saga step cannot be half wired: a reply the saga reacts to but orders never subscribes to would
wait in no queue, and a command without a handler would be dead-lettered as unknown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from services.cart.bootstrap import build as build_cart
from services.cart.settings import CartSettings
from services.orders.bootstrap import build as build_orders
from services.orders.settings import OrdersSettings
from services.payments.bootstrap import build as build_payments
from services.payments.settings import PaymentsSettings
from services.provisioning.bootstrap import build as build_provisioning
from services.provisioning.settings import ProvisioningSettings
from shared.messages import contracts as c
from shared.messages.envelope import Command, Contract, Event
from shared.messages.registry import CONTRACTS
from shared.runtime import ServiceRuntime
from shared.topology import SERVICES, SUBSCRIPTIONS


def _handled(tmp_path: Path) -> Iterator[tuple[str, frozenset[type[Contract]]]]:
    common: dict[str, Any] = {
        "broker_url": "memory://",
        "jwt_secret": SecretStr("topology-guard-secret-0123456789abcdef"),
    }
    runtimes: list[ServiceRuntime[Any, Any]] = [
        build_cart(CartSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/c.db", **common)),
        build_orders(OrdersSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/o.db", **common)),
        build_payments(
            PaymentsSettings(
                database_url=f"sqlite+aiosqlite:///{tmp_path}/p.db",
                stripe_api_key=SecretStr("sk_test_topology"),
                stripe_webhook_secret=SecretStr("whsec_topology"),
                checkout_success_url="https://shop.example/paid",
                **common,
            )
        ),
        build_provisioning(
            ProvisioningSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/v.db", **common)
        ),
    ]
    for runtime in runtimes:
        yield runtime.name, frozenset(runtime.spec.handlers)


@pytest.fixture(scope="module")
def handled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, frozenset[type[Contract]]]:
    return dict(_handled(tmp_path_factory.mktemp("topology")))


def test_every_service_has_a_bootstrap_and_a_subscription_entry(
    handled: dict[str, frozenset[type[Contract]]],
) -> None:
    assert set(handled) == set(SERVICES) == set(SUBSCRIPTIONS)


def test_each_service_subscribes_to_exactly_the_events_it_handles(
    handled: dict[str, frozenset[type[Contract]]],
) -> None:
    for service, types in handled.items():
        events = {t for t in types if issubclass(t, Event)}
        assert events == set(SUBSCRIPTIONS[service]), service


def test_orders_subscribes_to_the_checkout_and_every_reply_the_saga_reacts_to(
    handled: dict[str, frozenset[type[Contract]]],
) -> None:
    from services.orders.saga.machine import REPLY_TYPES  # the reaction table of the pure saga

    assert set(REPLY_TYPES) <= set(SUBSCRIPTIONS[c.ORDERS])
    assert set(SUBSCRIPTIONS[c.ORDERS]) == {c.CheckoutRequested, *REPLY_TYPES}
    # Plus the one command orders owns: the cart's question after a lost outcome.
    assert handled[c.ORDERS] == {c.CheckoutRequested, *REPLY_TYPES, c.InquireOrder}


def test_every_command_has_a_handler_in_its_target_and_nowhere_else(
    handled: dict[str, frozenset[type[Contract]]],
) -> None:
    commands = [t for t in CONTRACTS.values() if issubclass(t, Command)]
    assert commands, "no command contracts found: the registry changed shape"
    for command in commands:
        assert command.TARGET in SERVICES, command.TYPE
        owners = {service for service, types in handled.items() if command in types}
        assert owners == {command.TARGET}, command.TYPE


def test_a_service_handles_only_contracts_that_are_registered(
    handled: dict[str, frozenset[type[Contract]]],
) -> None:
    registered = set(CONTRACTS.values())
    for service, types in handled.items():
        assert types <= registered, service
