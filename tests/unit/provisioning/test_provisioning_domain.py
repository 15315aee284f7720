"""The rules of a fulfilment job, without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.provisioning import domain
from shared.messages.contracts import CheckoutLine, ItemKind


def checkout_line(line_no: int, kind: ItemKind = "server_plan", **kw: int) -> CheckoutLine:
    return CheckoutLine(
        line_no=line_no,
        item_id=f"item-{line_no}",
        kind=kind,
        name="thing",
        quantity=kw.get("quantity", 1),
        unit_price=100,
        units_per_item=kw.get("units_per_item", 1),
        paid_with="money",
    )


# --- a new job -------------------------------------------------------------------------------


def test_a_new_job_keeps_every_line_with_its_units() -> None:
    lines = domain.new_job(
        user_id="alice",
        lines=[checkout_line(1, "session_package", quantity=2, units_per_item=5), checkout_line(2)],
    )
    assert [(jl.line_no, jl.kind, jl.units) for jl in lines] == [
        (1, "session_package", 10),
        (2, "server_plan", 1),
    ]


def test_a_job_without_lines_is_rejected() -> None:
    with pytest.raises(domain.InvalidJob) as err:
        domain.new_job(user_id="alice", lines=[])
    assert err.value.reason == "empty_job"


def test_a_job_without_recipient_is_rejected() -> None:
    with pytest.raises(domain.InvalidJob) as err:
        domain.new_job(user_id="  ", lines=[checkout_line(1)])
    assert err.value.reason == "no_recipient"


def test_a_line_number_used_twice_is_rejected() -> None:
    with pytest.raises(domain.InvalidJob) as err:
        domain.new_job(user_id="alice", lines=[checkout_line(1), checkout_line(1)])
    assert err.value.reason == "duplicate_line_no:1"


@pytest.mark.parametrize("kind", ["session_package", "credit_pack"])
def test_a_counted_item_with_zero_units_is_rejected(kind: ItemKind) -> None:
    with pytest.raises(domain.InvalidJob) as err:
        domain.new_job(user_id="alice", lines=[checkout_line(3, kind, units_per_item=0)])
    assert err.value.reason == "no_units:3"


def test_a_server_plan_needs_no_units() -> None:
    lines = domain.new_job(user_id="alice", lines=[checkout_line(1, units_per_item=0)])
    assert lines[0].units == 0


# --- job status from item outcomes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["delivered"], "done"),
        (["delivered", "delivered"], "done"),
        (["scheduled"], "scheduled"),
        (["delivered", "scheduled"], "scheduled"),
        (["delivered", "failed"], "partially_done"),
        (["scheduled", "failed"], "partially_done"),
        (["failed"], "failed"),
        (["failed", "failed"], "failed"),
        (["partially_delivered"], "partially_done"),
        (["partially_delivered", "failed"], "partially_done"),
    ],
)
def test_job_status_follows_item_outcomes(statuses: list[str], expected: str) -> None:
    assert domain.job_status_for(statuses) == expected


def test_job_status_waits_for_every_item() -> None:
    with pytest.raises(domain.ItemsStillPending):
        domain.job_status_for(["delivered", "pending"])


@given(st.lists(st.sampled_from(["delivered", "scheduled", "failed"]), min_size=1))
def test_job_status_is_done_only_when_all_delivered_and_failed_only_when_all_failed(
    statuses: list[str],
) -> None:
    status = domain.job_status_for(statuses)
    assert (status == "done") == all(s == "delivered" for s in statuses)
    assert (status == "failed") == all(s == "failed" for s in statuses)
    assert (status == "partially_done") == ("failed" in statuses and status != "failed")


@pytest.mark.parametrize(
    ("units", "failed", "expected"),
    [(3, 0, "delivered"), (3, 1, "partially_delivered"), (3, 2, "partially_delivered"),
     (3, 3, "failed"), (1, 1, "failed")],
)  # fmt: skip
def test_a_line_is_partially_delivered_while_some_but_not_all_units_failed(
    units: int, failed: int, expected: str
) -> None:
    assert domain.line_status_for(units=units, units_failed=failed) == expected


def test_a_line_cannot_fail_more_units_than_it_has() -> None:
    with pytest.raises(ValueError, match="4 of 3"):
        domain.line_status_for(units=3, units_failed=4)


# --- transitions -----------------------------------------------------------------------------


def test_only_a_created_job_runs_its_provisioners() -> None:
    assert domain.provisioning_action("created") == "run"


@pytest.mark.parametrize("status", ["done", "scheduled", "partially_done", "failed"])
def test_a_provisioned_job_replays_its_stored_results(status: str) -> None:
    assert domain.provisioning_action(status) == "replay"


def test_a_cancelled_job_cannot_be_provisioned() -> None:
    with pytest.raises(domain.JobCancelled):
        domain.provisioning_action("cancelled")


def test_a_job_nothing_was_run_for_is_cancelled() -> None:
    assert domain.cancel_answer("created") == "cancel"


def test_cancelling_a_cancelled_job_answers_cancelled_again() -> None:
    assert domain.cancel_answer("cancelled") == "cancelled"


@pytest.mark.parametrize("status", ["done", "scheduled", "partially_done", "failed"])
def test_a_job_that_was_run_is_never_cancelled_its_results_are_the_answer(status: str) -> None:
    # Cancelling a partly delivered job would let the saga refund delivered items as undelivered.
    assert domain.cancel_answer(status) == "results"


def test_the_job_is_due_when_its_earliest_item_is() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = now + timedelta(hours=48)
    assert domain.due_at_for([None, later, now]) == now
    assert domain.due_at_for([None, None]) is None
