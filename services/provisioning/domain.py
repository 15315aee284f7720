"""Rules of a fulfilment job: which lines make a valid job, what its status is given the outcome
of each item, and which transitions are allowed; and when an unconfirmed credit grant is sent
again. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from shared.messages.contracts import CheckoutLine


class ProvisioningError(Exception):
    """Base of the provisioning domain's errors."""


class InvalidJob(ProvisioningError):
    """The lines cannot make a job; `reason` is machine-readable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JobCancelled(ProvisioningError):
    """A cancelled job is never provisioned."""


class ItemsStillPending(ProvisioningError):
    """A job's status is only decided once every item has an outcome."""


JobStatus = Literal["created", "scheduled", "done", "partially_done", "cancelled", "failed"]
ItemStatus = Literal["pending", "delivered", "partially_delivered", "scheduled", "failed"]
ProvisioningAction = Literal["run", "replay"]
CancelAnswer = Literal["cancel", "cancelled", "results"]

# Kinds that deliver "units_per_item * quantity" of something; zero units would deliver nothing.
COUNTED_KINDS = frozenset({"session_package", "credit_pack"})


@dataclass(frozen=True)
class JobLine:
    line_no: int
    item_id: str
    kind: str
    name: str
    quantity: int
    units_per_item: int

    @property
    def units(self) -> int:
        return self.units_per_item * self.quantity


def new_job(*, user_id: str, lines: Iterable[CheckoutLine]) -> tuple[JobLine, ...]:
    """The lines of a new job, or InvalidJob when it cannot be fulfilled."""
    if not user_id.strip():
        raise InvalidJob("no_recipient")
    result = tuple(
        JobLine(
            line_no=line.line_no,
            item_id=line.item_id,
            kind=line.kind,
            name=line.name,
            quantity=line.quantity,
            units_per_item=line.units_per_item,
        )
        for line in lines
    )
    if not result:
        raise InvalidJob("empty_job")
    seen: set[int] = set()
    for line in result:
        if line.line_no in seen:
            raise InvalidJob(f"duplicate_line_no:{line.line_no}")
        seen.add(line.line_no)
        if line.quantity < 1:
            raise InvalidJob(f"no_quantity:{line.line_no}")
        if line.kind in COUNTED_KINDS and line.units < 1:
            raise InvalidJob(f"no_units:{line.line_no}")
    return result


LineOutcome = Literal["delivered", "partially_delivered", "scheduled", "failed"]


def line_status_for(
    *, units: int, units_failed: int, done: Literal["delivered", "scheduled"] = "delivered"
) -> LineOutcome:
    """A line of `units` with `units_failed` of them not delivered: `done` (delivered or
    scheduled) when none failed, failed when all did, else partially_delivered."""
    if not 0 <= units_failed <= units:
        raise ValueError(f"{units_failed} of {units} units failed")
    if units_failed == 0:
        return done
    return "failed" if units_failed == units else "partially_delivered"


def job_status_for(item_statuses: Iterable[str]) -> JobStatus:
    """All delivered → done; any failed, wholly or partly → partially_done (every line wholly
    failed → failed); else scheduled."""
    statuses = list(item_statuses)
    if not statuses:
        raise InvalidJob("empty_job")
    if "pending" in statuses:
        raise ItemsStillPending("items are still pending")
    failed = statuses.count("failed")
    if failed == len(statuses):
        return "failed"
    if failed or "partially_delivered" in statuses:
        return "partially_done"
    if "scheduled" in statuses:
        return "scheduled"
    return "done"


def provisioning_action(status: str) -> ProvisioningAction:
    """What a ProvisionOrder does to a job in `status`: run its provisioners, or replay results.

    Only a freshly created job runs; any provisioned job answers with what it stored, so a
    redelivered command never delivers twice.
    """
    if status == "cancelled":
        raise JobCancelled("the job was cancelled")
    return "run" if status == "created" else "replay"


def cancel_answer(status: str) -> CancelAnswer:
    """What a CancelJob does to a job in `status`, which is also the saga's truth to act on.

    Only a job nothing was run for yet is cancelled ("cancel"), which fences it: a ProvisionOrder
    after it is refused. A cancelled one answers "cancelled" again. A job that was run (done,
    scheduled, partly or wholly failed) is never cancelled: its items' outcomes are the answer
    ("results"), so the saga refunds exactly what failed and never what was delivered.
    """
    if status == "created":
        return "cancel"
    if status == "cancelled":
        return "cancelled"
    return "results"


def due_at_for(item_due_times: Iterable[datetime | None]) -> datetime | None:
    """The job is due when its earliest scheduled item is due."""
    times = [t for t in item_due_times if t is not None]
    return min(times) if times else None


def resend_wait(sends: int, *, first: timedelta, cap: timedelta) -> timedelta:
    """How long a credit grant sent `sends` times waits for payments' CreditsGranted before it is
    sent again: `first` after the first send, doubling with each further one, at most `cap`.

    Doubling keeps a grant payments cannot take for hours (its database down) from flooding its
    queue; the cap keeps the wait for a grant lost for good bounded."""
    if sends < 1:
        raise ValueError(f"a grant is sent at least once, not {sends} times")
    if first <= timedelta(0):
        raise ValueError(f"the first wait must be positive, not {first}")
    wait = first
    # Doubled step by step, stopping at the cap: 2 ** sends would overflow timedelta for a grant
    # that has been sent very many times.
    for _ in range(sends - 1):
        if wait >= cap:
            break
        wait *= 2
    return min(wait, cap)


@dataclass(frozen=True)
class ResendTiming:
    """When an unconfirmed credit grant is sent again; bootstrap builds it from the settings."""

    first: timedelta = timedelta(minutes=15)
    cap: timedelta = timedelta(hours=6)

    def next_send_at(self, *, sends: int, sent_at: datetime) -> datetime:
        """When a grant sent for the `sends`-th time at `sent_at` is due again."""
        return sent_at + resend_wait(sends, first=self.first, cap=self.cap)
