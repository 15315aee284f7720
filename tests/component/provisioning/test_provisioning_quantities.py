"""A line's quantity is honoured for every kind: N servers on the panel, each under its own
idempotency key with its own stored outcome, and the reply says how many units failed."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from services.provisioning import models
from shared.messages import contracts as c
from tests.support.provisioning import (
    MakeRig,
    Panel,
    ProvisioningRig,
    closed_port_url,
    job_created,
    line,
    load_job,
    provision,
)


def scarce_plan(panel: Panel, capacity: int) -> str:
    """A plan of which the panel can build only `capacity` more servers."""
    plan = f"srv-scarce-{uuid.uuid4().hex[:8]}"
    panel.state.plan_capacity[plan] = capacity
    return plan


async def stored_units(rig: ProvisioningRig, order_id: str) -> list[tuple[int, int, str, str]]:
    job = await load_job(rig, order_id)
    async with rig.runtime.sessionmaker() as session:
        rows = (
            await session.execute(
                select(models.JobUnit)
                .where(models.JobUnit.job_id == job.id)
                .order_by(models.JobUnit.line_no, models.JobUnit.unit_no)
            )
        ).scalars()
        return [(u.line_no, u.unit_no, u.status, u.external_ref or "") for u in rows]


async def test_a_server_plan_of_quantity_three_creates_three_servers_with_three_keys(
    rig: ProvisioningRig, panel: Panel
) -> None:
    order_id = await job_created(rig, line(1, "server_plan", "srv-small", quantity=3))

    reply = await provision(rig, order_id)

    assert panel.creations_for(order_id) == 3
    keys = {k for k in panel.state.requests_by_key if k.startswith(order_id)}
    # Unit 1 keeps the line's key of old, so an order provisioned across the upgrade is not
    # built twice; every further unit has its own.
    assert keys == {f"{order_id}:1", f"{order_id}:1:2", f"{order_id}:1:3"}
    assert all(panel.state.requests_by_key[k] == 1 for k in keys)
    assert reply == c.OrderProvisionedV2(
        order_id=order_id,
        job_id=str((await load_job(rig, order_id)).id),
        results=(
            c.ItemResultV2(
                line_no=1,
                item_id="srv-small",
                status="delivered",
                detail="3 of 3 servers active",
                units=3,
                units_failed=0,
            ),
        ),
    )
    units = await stored_units(rig, order_id)
    assert [(n, u, s) for n, u, s, _ in units] == [(1, u, "delivered") for u in (1, 2, 3)]
    refs = {ref for *_, ref in units}
    assert len(refs) == 3 and refs <= set(panel.state.servers)
    assert {panel.state.servers[r]["unit_no"] for r in refs} == {1, 2, 3}
    assert (await load_job(rig, order_id)).status == "done"


async def test_a_panel_that_builds_two_of_three_servers_fails_exactly_one_unit(
    rig: ProvisioningRig, panel: Panel
) -> None:
    plan = scarce_plan(panel, capacity=2)
    order_id = await job_created(
        rig,
        line(1, "server_plan", plan, quantity=3),
        line(2, "session_package", "pkg-5", quantity=2, units_per_item=5),
    )

    reply = await provision(rig, order_id)

    assert panel.creations_for(order_id) == 2
    assert isinstance(reply, c.OrderProvisionedV2)
    server_line, package_line = reply.results
    assert (server_line.status, server_line.units, server_line.units_failed) == (
        "partially_delivered",
        3,
        1,
    )
    assert server_line.detail.startswith("2 of 3 servers active; unit 3: panel refused (422)")
    assert (package_line.status, package_line.units, package_line.units_failed) == (
        "delivered",
        2,
        0,
    )
    units = await stored_units(rig, order_id)
    assert [(u, s) for _, u, s, _ in units] == [(1, "delivered"), (2, "delivered"), (3, "failed")]
    assert units[2][3] == ""
    assert (await load_job(rig, order_id)).status == "partially_done"


async def test_a_server_plan_the_panel_cannot_build_at_all_fails_every_unit(
    rig: ProvisioningRig, panel: Panel
) -> None:
    plan = scarce_plan(panel, capacity=0)
    order_id = await job_created(rig, line(1, "server_plan", plan, quantity=2))

    reply = await provision(rig, order_id)

    assert isinstance(reply, c.OrderProvisionedV2)
    [result] = reply.results
    assert (result.status, result.units, result.units_failed) == ("failed", 2, 2)
    assert (await load_job(rig, order_id)).status == "failed"


async def test_a_redelivered_provision_order_replays_every_unit_and_builds_nothing_more(
    rig: ProvisioningRig, panel: Panel
) -> None:
    plan = scarce_plan(panel, capacity=1)
    order_id = await job_created(rig, line(1, "server_plan", plan, quantity=2))

    first = await provision(rig, order_id)
    second = await provision(rig, order_id)

    assert first == second
    assert isinstance(first, c.OrderProvisionedV2) and first.results[0].units_failed == 1
    assert panel.creations_for(order_id) == 1
    assert sum(n for k, n in panel.state.requests_by_key.items() if k.startswith(order_id)) == 2


async def test_every_kind_reports_its_quantity_as_units(rig: ProvisioningRig) -> None:
    order_id = await job_created(
        rig,
        line(1, "session_package", "pkg-5", quantity=3, units_per_item=5),
        line(2, "credit_pack", "credits-100", quantity=2, units_per_item=100),
        line(3, "service_job", "cleaning", quantity=4),
    )

    reply = await provision(rig, order_id)

    assert isinstance(reply, c.OrderProvisionedV2)
    assert [(r.status, r.units, r.units_failed) for r in reply.results] == [
        ("delivered", 3, 0),
        ("delivered", 2, 0),
        ("scheduled", 4, 0),
    ]
    assert [r.detail for r in reply.results][:2] == ["15 sessions", "200 credits granted"]
    assert reply.results[2].detail.startswith("4 jobs due ")


async def test_a_panel_that_is_down_costs_one_retry_budget_per_line_not_per_server(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(panel_url=closed_port_url(), panel_max_attempts=2)
    order_id = await job_created(rig, line(1, "server_plan", "srv-small", quantity=3))

    reply = await provision(rig, order_id)

    assert isinstance(reply, c.OrderProvisionedV2)
    [result] = reply.results
    assert (result.status, result.units_failed) == ("failed", 3)
    units = await stored_units(rig, order_id)
    assert [(u, s) for _, u, s, _ in units] == [(1, "failed"), (2, "failed"), (3, "failed")]
    job = await load_job(rig, order_id)
    assert all("unreachable after 2 attempts" in u.detail for u in job.items[0].units)
