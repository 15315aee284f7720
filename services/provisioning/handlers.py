"""One async handler per message type the provisioning service consumes."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from services.provisioning import domain, repository
from services.provisioning.provisioners import (
    ItemToProvision,
    ProvisionContext,
    Provisioners,
    provision_item,
)
from services.provisioning.repository import StoredItem, StoredJob, StoredUnit
from shared.dispatch import Handler, MessageContext
from shared.messages import Contract
from shared.messages import contracts as c

log = logging.getLogger("services.provisioning.handlers")


async def handle_create_job(ctx: MessageContext, msg: c.CreateJob) -> None:
    try:
        lines = domain.new_job(user_id=msg.user_id, lines=msg.lines)
    except domain.InvalidJob as exc:
        await ctx.emit(c.JobRejected(order_id=msg.order_id, reason=exc.reason))
        return
    job_id = await repository.create_job(
        ctx.db, order_id=msg.order_id, user_id=msg.user_id, lines=lines, now=_now()
    )
    await ctx.emit(c.JobCreated(order_id=msg.order_id, job_id=str(job_id)))


async def handle_provision_order(
    ctx: MessageContext, msg: c.ProvisionOrder, *, provisioners: Provisioners
) -> None:
    job = await repository.locked_job(ctx.db, msg.order_id)
    if job is None:
        await ctx.emit(c.ProvisioningFailed(order_id=msg.order_id, reason="job_not_found"))
        return
    try:
        action = domain.provisioning_action(job.status)
    except domain.JobCancelled:
        await ctx.emit(c.ProvisioningFailed(order_id=msg.order_id, reason="job_cancelled"))
        return
    if action == "run":
        # The panel is called over HTTP inside this transaction. Acceptable: if the commit
        # fails, the redelivered command calls it again with the same Idempotency-Key and gets
        # the same server back; no item is delivered twice.
        job = await _provision_job(job, provisioners, ProvisionContext(ctx, now=_now()))
    await ctx.emit(_provisioned(job))


async def handle_cancel_job(ctx: MessageContext, msg: c.CancelJob) -> None:
    """Fences the job, or answers with what it delivered: the saga refunds on this answer only.

    The job row is locked, and a ProvisionOrder holds the same lock while it runs: a cancel
    either comes first (the job is cancelled and every later ProvisionOrder is refused) or
    after (the job's results are the answer). Never both.
    """
    job = await repository.locked_job(ctx.db, msg.order_id)
    answer = "cancelled" if job is None else domain.cancel_answer(job.status)
    if job is not None and answer == "results":
        log.info("CancelJob for run job of order %s: answering its results", msg.order_id)
        await ctx.emit(_provisioned(job))
        return
    if answer == "cancel":
        await repository.cancel_job(ctx.db, order_id=msg.order_id, reason=msg.reason, now=_now())
    await ctx.emit(c.JobCancelled(order_id=msg.order_id))


async def handle_credits_granted(ctx: MessageContext, msg: c.CreditsGranted) -> None:
    """Payments applied a grant (or answered one sent again): it is not sent any more. Grants
    this service never sent (an operator's, through payments' API) match no row: ignored."""
    await repository.confirm_grant(ctx.db, grant_id=msg.grant_id, now=_now())


async def _provision_job(
    job: StoredJob, provisioners: Provisioners, pctx: ProvisionContext
) -> StoredJob:
    """Runs the provisioner of each pending item, stores outcomes (each unit's, when made one
    by one), job status and due time, and returns the job as stored."""
    due_times = [job.due_at]
    items: list[StoredItem] = []
    provisioned: list[StoredItem] = []
    units: list[StoredUnit] = []
    for item in job.items:
        if item.status == "pending":
            outcome = await provision_item(provisioners, _to_provision(job, item), pctx)
            item = dataclasses.replace(
                item,
                status=outcome.status,
                detail=outcome.detail,
                external_ref=outcome.external_ref,
                units_failed=outcome.units_failed,
            )
            provisioned.append(item)
            units.extend(
                StoredUnit(item.line_no, u.unit_no, u.status, u.detail, u.external_ref)
                for u in outcome.units
            )
            due_times.append(outcome.due_at)
        items.append(item)
    job = dataclasses.replace(
        job,
        status=domain.job_status_for(item.status for item in items),
        due_at=domain.due_at_for(due_times),
        items=tuple(items),
    )
    await repository.store_outcomes(pctx.db, job, provisioned, units, now=pctx.now)
    return job


def _to_provision(job: StoredJob, item: StoredItem) -> ItemToProvision:
    return ItemToProvision(
        order_id=job.order_id,
        job_id=job.id,
        user_id=job.user_id,
        line_no=item.line_no,
        item_id=item.item_id,
        kind=item.kind,
        name=item.name,
        quantity=item.quantity,
        units_per_item=item.units_per_item,
    )


def _provisioned(job: StoredJob) -> c.OrderProvisionedV2:
    """What the job delivered, the answer to ProvisionOrder and to a too-late CancelJob."""
    return c.OrderProvisionedV2(order_id=job.order_id, job_id=str(job.id), results=_results_of(job))


def _results_of(job: StoredJob) -> tuple[c.ItemResultV2, ...]:
    # Validated, not cast: a stored status outside the contract must fail loudly here.
    return tuple(
        c.ItemResultV2.model_validate(
            {
                "line_no": i.line_no,
                "item_id": i.item_id,
                "status": i.status,
                "detail": i.detail,
                "units": i.quantity,
                "units_failed": i.units_failed,
            }
        )
        for i in job.items
    )


def _now() -> datetime:
    return datetime.now(UTC)


# Provisioners may call out (the server panel): never grouped with other messages.
APPLIED_ALONE: frozenset[type[Contract]] = frozenset({c.ProvisionOrder})


def build_handlers(provisioners: Provisioners) -> Mapping[type[Contract], Handler]:
    """The handler of each message; bootstrap passes the provisioners it built."""
    return {
        c.CreateJob: handle_create_job,
        c.ProvisionOrder: functools.partial(handle_provision_order, provisioners=provisioners),
        c.CancelJob: handle_cancel_job,
        c.CreditsGranted: handle_credits_granted,
    }
