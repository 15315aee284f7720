"""The provisioning service's handlers, driven through its dispatcher on SQLite, with the server
panel simulator running for real over HTTP."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from services.provisioning.models import Entitlement, Job
from services.provisioning.provisioners import CreditPackProvisioner
from shared.messages import contracts as c
from tests.support.provisioning import (
    DOOMED_PLAN,
    MakeRig,
    Panel,
    ProvisioningRig,
    closed_port_url,
    job_created,
    line,
    load_job,
    provision,
)
from tests.support.rig import new_order_id

# --- CreateJob -------------------------------------------------------------------------------


async def test_create_job_stores_the_job_and_replies_job_created(rig: ProvisioningRig) -> None:
    order_id = await job_created(rig, line(1, "session_package", "pkg-10", units_per_item=10))

    [reply] = await rig.messages_for(order_id)
    job = await load_job(rig, order_id)
    assert reply == c.JobCreated(order_id=order_id, job_id=str(job.id))
    assert (job.user_id, job.status, job.due_at) == ("alice", "created", None)
    assert [(i.line_no, i.status) for i in job.items] == [(1, "pending")]


async def test_a_repeated_create_job_makes_no_second_job(rig: ProvisioningRig) -> None:
    order_id = new_order_id()
    command = c.CreateJob(
        order_id=order_id, user_id="alice", lines=(line(1, "service_job", "svc"),)
    )
    await rig.deliver(command, correlation_id=order_id)
    await rig.deliver(command, correlation_id=order_id)  # a new envelope: the inbox can't stop it

    first, second = await rig.messages_for(order_id)
    assert isinstance(first, c.JobCreated) and first == second
    async with rig.runtime.sessionmaker() as session:
        jobs = await session.scalar(
            select(func.count()).select_from(Job).where(Job.order_id == order_id)
        )
    assert jobs == 1


async def test_an_invalid_job_is_rejected_and_not_stored(rig: ProvisioningRig) -> None:
    order_id = await job_created(rig, line(1, "credit_pack", "credits-0", units_per_item=0))

    assert await rig.messages_for(order_id) == [
        c.JobRejected(order_id=order_id, reason="no_units:1")
    ]
    async with rig.runtime.sessionmaker() as session:
        assert await session.scalar(select(Job).where(Job.order_id == order_id)) is None


# --- ProvisionOrder, one kind at a time ---------------------------------------------------------


async def test_a_session_package_grants_its_sessions(rig: ProvisioningRig) -> None:
    order_id = await job_created(
        rig, line(1, "session_package", "pkg-5", quantity=3, units_per_item=5)
    )

    reply = await provision(rig, order_id)

    assert isinstance(reply, c.OrderProvisionedV2)
    assert reply.results == (
        c.ItemResultV2(
            line_no=1,
            item_id="pkg-5",
            status="delivered",
            detail="15 sessions",
            units=3,
            units_failed=0,
        ),
    )
    async with rig.runtime.sessionmaker() as session:
        [entitlement] = (
            await session.execute(select(Entitlement).where(Entitlement.order_id == order_id))
        ).scalars()
    assert (entitlement.user_id, entitlement.line_no, entitlement.sessions) == ("alice", 1, 15)
    assert (await load_job(rig, order_id)).status == "done"


async def test_a_service_job_is_scheduled_and_the_job_gets_a_due_time(rig: ProvisioningRig) -> None:
    order_id = await job_created(rig, line(1, "service_job", "cleaning"))
    before = datetime.now(UTC)

    reply = await provision(rig, order_id)

    assert isinstance(reply, c.OrderProvisionedV2)
    assert [r.status for r in reply.results] == ["scheduled"]
    job = await load_job(rig, order_id)
    assert job.status == "scheduled"
    assert job.due_at is not None
    assert before + timedelta(hours=48) <= job.due_at <= datetime.now(UTC) + timedelta(hours=48)


async def test_the_service_job_lead_time_comes_from_settings(make_rig: MakeRig) -> None:
    rig = await make_rig(service_job_lead_hours=2)
    order_id = await job_created(rig, line(1, "service_job", "cleaning"))
    await provision(rig, order_id)
    due_at = (await load_job(rig, order_id)).due_at
    assert due_at is not None and due_at - datetime.now(UTC) < timedelta(hours=2, seconds=1)


async def test_a_credit_pack_sends_a_credit_grant_to_payments(rig: ProvisioningRig) -> None:
    order_id = await job_created(
        rig, line(2, "credit_pack", "credits-100", quantity=2, units_per_item=100)
    )

    reply = await provision(rig, order_id)

    emitted = await rig.messages_for(order_id)
    grants = [m for m in emitted if isinstance(m, c.GrantCredits)]
    assert grants == [
        c.GrantCredits(
            grant_id=f"{order_id}:2",
            user_id="alice",
            credits=200,
            reason="credit pack",
            order_id=order_id,
        )
    ]
    assert isinstance(reply, c.OrderProvisionedV2) and reply.results[0].status == "delivered"


async def test_a_server_plan_is_created_on_the_panel(rig: ProvisioningRig, panel: Panel) -> None:
    order_id = await job_created(rig, line(1, "server_plan", "srv-small"))

    reply = await provision(rig, order_id)

    assert isinstance(reply, c.OrderProvisionedV2) and reply.results[0].status == "delivered"
    [item] = (await load_job(rig, order_id)).items
    assert item.external_ref is not None
    server = panel.state.servers[item.external_ref]
    assert (server["order_id"], server["line_no"], server["plan"], server["user_id"]) == (
        order_id,
        1,
        "srv-small",
        "alice",
    )


async def test_a_plan_the_panel_refuses_fails_without_retries(
    rig: ProvisioningRig, panel: Panel
) -> None:
    order_id = await job_created(rig, line(1, "server_plan", DOOMED_PLAN))
    requests_before = panel.state.requests

    reply = await provision(rig, order_id)

    assert isinstance(reply, c.OrderProvisionedV2)
    [result] = reply.results
    assert result.status == "failed" and "422" in result.detail
    assert panel.state.requests - requests_before == 1
    assert (await load_job(rig, order_id)).status == "failed"


async def test_a_panel_that_is_down_fails_the_item_after_bounded_retries(make_rig: MakeRig) -> None:
    rig = await make_rig(panel_url=closed_port_url(), panel_max_attempts=3)
    order_id = await job_created(rig, line(1, "server_plan", "srv-small"))
    started = time.monotonic()

    reply = await provision(rig, order_id)

    assert time.monotonic() - started < 5
    assert isinstance(reply, c.OrderProvisionedV2)
    [result] = reply.results
    assert result.status == "failed"
    assert "unreachable after 3 attempts" in result.detail and "ConnectError" in result.detail


async def test_a_busy_panel_is_retried_with_the_same_idempotency_key(
    rig: ProvisioningRig, panel: Panel
) -> None:
    order_id = await job_created(rig, line(1, "server_plan", "srv-small"))
    panel.state.unavailable_next = 2
    try:
        reply = await provision(rig, order_id)
    finally:
        panel.state.unavailable_next = 0

    assert isinstance(reply, c.OrderProvisionedV2) and reply.results[0].status == "delivered"
    assert panel.state.requests_by_key[f"{order_id}:1"] == 3
    assert panel.creations_for(order_id) == 1


async def test_a_panel_answering_5xx_is_given_up_after_max_attempts(
    make_rig: MakeRig, panel: Panel
) -> None:
    rig = await make_rig(panel_max_attempts=4)
    order_id = await job_created(rig, line(1, "server_plan", "srv-small"))
    panel.state.unavailable_next = 100
    try:
        reply = await provision(rig, order_id)
    finally:
        panel.state.unavailable_next = 0

    assert isinstance(reply, c.OrderProvisionedV2)
    assert reply.results[0].status == "failed" and "503" in reply.results[0].detail
    assert panel.state.requests_by_key[f"{order_id}:1"] == 4
    assert panel.creations_for(order_id) == 0


async def test_one_bad_item_does_not_fail_the_basket(rig: ProvisioningRig) -> None:
    order_id = await job_created(
        rig,
        line(1, "session_package", "pkg-5", units_per_item=5),
        line(2, "server_plan", DOOMED_PLAN),
        line(3, "service_job", "cleaning"),
    )

    reply = await provision(rig, order_id)

    assert isinstance(reply, c.OrderProvisionedV2)
    assert [(r.line_no, r.status) for r in reply.results] == [
        (1, "delivered"),
        (2, "failed"),
        (3, "scheduled"),
    ]
    job = await load_job(rig, order_id)
    assert job.status == "partially_done" and job.due_at is not None


async def test_a_kind_without_provisioner_fails_that_item(make_rig: MakeRig) -> None:
    rig = await make_rig(provisioners={"credit_pack": CreditPackProvisioner()})
    order_id = await job_created(
        rig, line(1, "service_job", "cleaning"), line(2, "credit_pack", "c", units_per_item=5)
    )

    reply = await provision(rig, order_id)

    assert isinstance(reply, c.OrderProvisionedV2)
    assert [(r.status, r.detail) for r in reply.results] == [
        ("failed", "no provisioner"),
        ("delivered", "5 credits granted"),
    ]
    assert (await load_job(rig, order_id)).status == "partially_done"


# --- redelivery, missing and cancelled jobs -------------------------------------------------------


async def test_a_redelivered_provision_order_replays_the_results(
    rig: ProvisioningRig, panel: Panel
) -> None:
    order_id = await job_created(
        rig,
        line(1, "server_plan", "srv-large"),
        line(2, "session_package", "pkg-5", units_per_item=5),
        line(3, "credit_pack", "credits-10", units_per_item=10),
    )
    envelope = await rig.deliver(c.ProvisionOrder(order_id=order_id), correlation_id=order_id)
    await rig.runtime.dispatcher(envelope)  # the same message again: the inbox drops it
    await rig.deliver(c.ProvisionOrder(order_id=order_id), correlation_id=order_id)  # a new one

    emitted = await rig.messages_for(order_id)
    replies = [m for m in emitted if isinstance(m, c.OrderProvisionedV2)]
    assert len(replies) == 2 and replies[0] == replies[1]
    assert [r.status for r in replies[0].results] == ["delivered"] * 3
    assert panel.state.requests_by_key[f"{order_id}:1"] == 1
    assert panel.creations_for(order_id) == 1
    assert sum(isinstance(m, c.GrantCredits) for m in emitted) == 1
    async with rig.runtime.sessionmaker() as session:
        rows = await session.scalar(
            select(func.count()).select_from(Entitlement).where(Entitlement.order_id == order_id)
        )
    assert rows == 1


async def test_provisioning_an_unknown_order_fails(rig: ProvisioningRig) -> None:
    order_id = new_order_id()
    reply = await provision(rig, order_id)
    assert reply == c.ProvisioningFailed(order_id=order_id, reason="job_not_found")


async def test_a_cancelled_job_is_not_provisioned(rig: ProvisioningRig, panel: Panel) -> None:
    order_id = await job_created(rig, line(1, "server_plan", "srv-small"))
    await rig.deliver(
        c.CancelJob(order_id=order_id, reason="payment expired"), correlation_id=order_id
    )

    reply = await provision(rig, order_id)

    assert reply == c.ProvisioningFailed(order_id=order_id, reason="job_cancelled")
    assert panel.creations_for(order_id) == 0
    job = await load_job(rig, order_id)
    assert (job.status, job.cancel_reason) == ("cancelled", "payment expired")
    assert [i.status for i in job.items] == ["pending"]


# --- CancelJob -------------------------------------------------------------------------------


async def test_cancel_job_cancels_and_replies_once_per_command(rig: ProvisioningRig) -> None:
    order_id = await job_created(rig, line(1, "service_job", "cleaning"))
    cancel = c.CancelJob(order_id=order_id, reason="credits rejected")
    await rig.deliver(cancel, correlation_id=order_id)
    await rig.deliver(cancel, correlation_id=order_id)

    emitted = await rig.messages_for(order_id)
    assert emitted[1:] == [c.JobCancelled(order_id=order_id)] * 2
    assert (await load_job(rig, order_id)).status == "cancelled"


async def test_cancelling_a_job_that_never_existed_still_replies(rig: ProvisioningRig) -> None:
    order_id = new_order_id()
    await rig.deliver(
        c.CancelJob(order_id=order_id, reason="compensation"), correlation_id=order_id
    )
    assert await rig.messages_for(order_id) == [c.JobCancelled(order_id=order_id)]


async def test_a_done_job_is_not_cancelled_and_answers_with_its_results(
    rig: ProvisioningRig,
) -> None:
    order_id = await job_created(rig, line(1, "session_package", "pkg-5", units_per_item=5))
    delivered = await provision(rig, order_id)
    await rig.deliver(c.CancelJob(order_id=order_id, reason="too late"), correlation_id=order_id)

    emitted = await rig.messages_for(order_id)
    assert not any(isinstance(m, c.JobCancelled) for m in emitted)
    # "Already delivered, here are the results": the saga completes instead of refunding.
    assert emitted[-1] == delivered
    job = await load_job(rig, order_id)
    assert (job.status, job.cancel_reason) == ("done", None)


async def test_a_partly_delivered_job_is_not_cancelled_its_delivered_item_is_kept(
    rig: ProvisioningRig, panel: Panel
) -> None:
    # Before: a partially_done job was cancelled and answered JobCancelled, so the saga read
    # "nothing delivered" and refunded the delivered server as well.
    order_id = await job_created(
        rig, line(1, "server_plan", "srv-small"), line(2, "server_plan", DOOMED_PLAN)
    )
    delivered = await provision(rig, order_id)
    await rig.deliver(
        c.CancelJob(order_id=order_id, reason="provisioning did not answer"),
        correlation_id=order_id,
    )

    emitted = await rig.messages_for(order_id)
    assert not any(isinstance(m, c.JobCancelled) for m in emitted)
    assert isinstance(emitted[-1], c.OrderProvisionedV2) and emitted[-1] == delivered
    assert [r.status for r in emitted[-1].results] == ["delivered", "failed"]
    job = await load_job(rig, order_id)
    assert (job.status, job.cancel_reason) == ("partially_done", None)
    assert panel.creations_for(order_id) == 1
