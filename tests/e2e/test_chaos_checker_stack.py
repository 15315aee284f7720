"""The chaos run's invariant checker on the real stack: a handful of checkouts of every kind end,
the snapshot of all four databases, the Stripe simulator and the broker passes every invariant;
then one thing is corrupted in a database and the matching invariant names it."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aio_pika
import httpx
from sqlalchemy import text

from chaos.invariants import InvariantResult, check_all
from chaos.report import render, summary_counts
from chaos.snapshot import Snapshot, take_snapshot
from devstack.stack import Stack
from shared.db import make_engine
from shared.topology import Names
from tests.support.stack import (
    TERMINAL,
    Shopper,
    failing_panel_overrides,
    grant,
    rows,
    stack_fixture,
)
from tests.support.waiting import eventually

stack = stack_fixture(
    failing_panel_overrides("vps-broken"),
    catalogue={
        "vps-broken": {
            "kind": "server_plan",
            "name": "A server the panel cannot build",
            "unit_price": 2000,
            "currency": "EUR",
            "units_per_item": 1,
        }
    },
)


async def snapshot_of(stack: Stack) -> Snapshot:
    return await take_snapshot(
        stack.database_urls, stack.rabbitmq_url, stack.namespace, stack.url("stripe_sim")
    )


def report(results: list[InvariantResult], snapshot: Snapshot, quiet_after: float) -> str:
    summary = summary_counts(snapshot)
    return render(
        results,
        checkouts_by_status=summary.orders_by_status,
        faults={},
        redeliveries=summary.redeliveries or 0,
        dlq_count=summary.dlq_count,
        quiescence_seconds=quiet_after,
    )


async def session_of(shopper: Shopper, order_id: str) -> str:
    order = await shopper.wait_for(order_id, {"awaiting_payment"} | TERMINAL)
    assert order["status"] == "awaiting_payment", order
    return str(order["payment_url"]).rsplit("/", 1)[-1]


async def sim_post(stack: Stack, path: str) -> None:
    async with httpx.AsyncClient(base_url=stack.url("stripe_sim"), timeout=10) as sim:
        response = await sim.post(path)
        assert response.status_code == 200, response.text


async def credit_only(stack: Stack) -> str:
    shopper = Shopper(stack)
    await grant(stack, shopper.user_id, 1000)
    order_id, _ = await shopper.checkout({"pkg-10": 1, "vps-small": 1}, use_credits=True)
    return order_id


async def card_paid(stack: Stack) -> str:
    shopper = Shopper(stack)  # a credit pack too: its grant is one of the effects checked
    order_id, _ = await shopper.checkout({"credits-100": 1, "vps-small": 1}, use_credits=False)
    await sim_post(stack, f"/_sim/sessions/{await session_of(shopper, order_id)}/pay")
    return order_id


async def card_expired(stack: Stack) -> str:
    shopper = Shopper(stack)
    await grant(stack, shopper.user_id, 1000)
    order_id, _ = await shopper.checkout({"pkg-10": 1, "credits-100": 1}, use_credits=True)
    await sim_post(stack, f"/_sim/sessions/{await session_of(shopper, order_id)}/expire_now")
    return order_id


async def card_cancelled(stack: Stack) -> str:
    shopper = Shopper(stack)
    order_id, _ = await shopper.checkout({"vps-small": 1}, use_credits=False)
    await session_of(shopper, order_id)
    assert (await shopper.cancel(order_id)).status_code == 200
    return order_id


async def insufficient_credits(stack: Stack) -> str:
    shopper = Shopper(stack)
    await grant(stack, shopper.user_id, 100)
    order_id, _ = await shopper.checkout({"pkg-10": 1}, use_credits=True)
    return order_id


async def provisioning_failed(stack: Stack) -> str:
    shopper = Shopper(stack)
    order_id, _ = await shopper.checkout({"vps-broken": 1}, use_credits=False)
    await sim_post(stack, f"/_sim/sessions/{await session_of(shopper, order_id)}/pay")
    return order_id


async def partially_provisioned(stack: Stack) -> str:
    shopper = Shopper(stack)  # sessions paid with credits are delivered, the server is refunded
    await grant(stack, shopper.user_id, 1000)
    order_id, _ = await shopper.checkout({"pkg-10": 1, "vps-broken": 1}, use_credits=True)
    await sim_post(stack, f"/_sim/sessions/{await session_of(shopper, order_id)}/pay")
    return order_id


async def quiet_snapshot(stack: Stack, within: float = 30.0) -> tuple[Snapshot, float]:
    """The first snapshot in which everything holds, or the last one taken (refunds settle and
    the last outcome events reach cart a little after the orders end)."""
    started = time.monotonic()
    while True:
        snapshot = await snapshot_of(stack)
        elapsed = time.monotonic() - started
        if all(r.passed for r in check_all(snapshot)) or elapsed > within:
            return snapshot, elapsed
        await asyncio.sleep(0.5)


async def execute(stack: Stack, service: str, sql: str, **params: Any) -> None:
    engine = make_engine(stack.database_urls[service])
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql), params)
    finally:
        await engine.dispose()


async def dead_letter_garbage(stack: Stack, service: str) -> None:
    """A body that is no envelope: the consumer dead-letters it with the reason."""
    connection = await aio_pika.connect(stack.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(Names(stack.namespace).commands)
        await exchange.publish(aio_pika.Message(b"not json", message_id="garbage"), service)

    async def dead_lettered() -> bool:
        return bool((await snapshot_of(stack)).dead_letters)

    await eventually(dead_lettered, within=10)


def failing(results: list[InvariantResult]) -> dict[str, list[str]]:
    return {r.name: r.offenders for r in results if not r.passed}


async def test_checkouts_of_every_kind_pass_every_invariant_and_corruption_is_named(
    stack: Stack,
) -> None:
    scenarios = (
        credit_only,
        card_paid,
        card_expired,
        card_cancelled,
        insufficient_credits,
        provisioning_failed,
        partially_provisioned,
    )
    order_ids = await asyncio.gather(*(scenario(stack) for scenario in scenarios))

    snapshot, quiet_after = await quiet_snapshot(stack)
    results = check_all(snapshot)
    print(report(results, snapshot, quiet_after))
    assert failing(results) == {}
    assert {o["id"]: o["status"] for o in snapshot.orders} == dict(
        zip(
            order_ids,
            [
                "completed",
                "completed",
                "cancelled",
                "cancelled",
                "cancelled",
                "refunded",
                "partially_completed",
            ],
            strict=True,
        )
    )
    assert len(snapshot.sim_sessions) == 5 and len(snapshot.sim_refunds) == 2
    assert snapshot.dead_letters == ()

    # Corrupt three things, each in a different service's database.
    shopper_id = next(o["user_id"] for o in snapshot.orders if o["id"] == order_ids[0])
    await execute(
        stack,
        "payments",
        "INSERT INTO ledger_entries (user_id, kind, amount, debit_account, credit_account,"
        " reference, trace_id, created_at) VALUES (:u, 'grant', 7, 'system:issued', :acct,"
        " :ref, 'chaos-test', now())",
        u=shopper_id,
        acct=f"user:{shopper_id}:available",
        ref=f"grant:corrupt:{uuid.uuid4()}",
    )
    # Cart's relay would publish the row again at once: cart is stopped first.
    await asyncio.to_thread(stack.procs["cart"].stop)
    unpublished = (await rows(stack, "cart", "SELECT message_id FROM outbox LIMIT 1"))[0]
    await execute(
        stack,
        "cart",
        "UPDATE outbox SET published_at = NULL WHERE message_id = :m",
        m=unpublished["message_id"],
    )
    forgotten = (
        await rows(
            stack,
            "provisioning",
            "SELECT message_id FROM inbox WHERE message_type = 'provisioning.create_job' LIMIT 1",
        )
    )[0]
    await execute(
        stack, "provisioning", "DELETE FROM inbox WHERE message_id = :m", m=forgotten["message_id"]
    )

    await dead_letter_garbage(stack, "payments")

    corrupted = await snapshot_of(stack)
    again = await snapshot_of(stack)  # reading the DLQ must leave it as it was
    assert [(d["service"], d["message_id"]) for d in again.dead_letters] == [
        ("payments", "garbage")
    ]
    assert again.dead_letters[0]["reason"].startswith("not an envelope"), again.dead_letters
    assert corrupted.dead_letters == again.dead_letters
    broken = failing(check_all(corrupted))
    assert set(broken) == {
        "credits conserved",
        "every message applied or dead-lettered",
        "no unpublished outbox row",
    }, broken
    assert [o for o in broken["credits conserved"] if shopper_id in o]
    assert [o for o in broken["no unpublished outbox row"] if unpublished["message_id"] in o]
    assert [
        o for o in broken["every message applied or dead-lettered"] if forgotten["message_id"] in o
    ]
