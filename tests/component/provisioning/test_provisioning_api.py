"""The provisioning HTTP API: a shopper reads their own job and entitlements, an operator any job."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.messages import contracts as c
from tests.support.provisioning import ProvisioningRig, line
from tests.support.rig import new_order_id


async def provisioned_order(rig: ProvisioningRig, user_id: str, *lines: c.CheckoutLine) -> str:
    order_id = new_order_id()
    await rig.deliver(
        c.CreateJob(order_id=order_id, user_id=user_id, lines=lines), correlation_id=order_id
    )
    await rig.deliver(c.ProvisionOrder(order_id=order_id), correlation_id=order_id)
    return order_id


async def test_a_shopper_reads_their_job_with_items_and_due_time(rig: ProvisioningRig) -> None:
    order_id = await provisioned_order(
        rig, "bob", line(1, "service_job", "cleaning"), line(2, "server_plan", "srv-small")
    )

    response = await rig.http.get(f"/jobs/{order_id}", headers=rig.as_user("bob"))

    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["order_id"], job["user_id"], job["status"]) == (order_id, "bob", "scheduled")
    due_at = datetime.fromisoformat(job["due_at"])
    created_at = datetime.fromisoformat(job["created_at"])
    assert due_at.utcoffset() == timedelta(0)
    assert timedelta(hours=47) < due_at - created_at < timedelta(hours=49)
    items = job["items"]
    assert [(i["line_no"], i["kind"], i["status"]) for i in items] == [
        (1, "service_job", "scheduled"),
        (2, "server_plan", "delivered"),
    ]
    assert items[1]["external_ref"].startswith("srv_")


async def test_another_users_job_is_not_found(rig: ProvisioningRig) -> None:
    order_id = await provisioned_order(rig, "bob", line(1, "service_job", "cleaning"))

    response = await rig.http.get(f"/jobs/{order_id}", headers=rig.as_user("mallory"))

    assert response.status_code == 404
    assert response.json()["code"] == "job_not_found"


async def test_an_unknown_job_is_not_found(rig: ProvisioningRig) -> None:
    response = await rig.http.get(f"/jobs/{new_order_id()}", headers=rig.as_user("bob"))
    assert (response.status_code, response.json()["code"]) == (404, "job_not_found")


async def test_an_operator_reads_any_job(rig: ProvisioningRig) -> None:
    order_id = await provisioned_order(rig, "bob", line(1, "service_job", "cleaning"))

    response = await rig.http.get(f"/jobs/{order_id}", headers=rig.as_user("ops", operator=True))

    assert response.status_code == 200
    assert response.json()["user_id"] == "bob"


async def test_reading_a_job_needs_a_token(rig: ProvisioningRig) -> None:
    response = await rig.http.get(f"/jobs/{new_order_id()}")
    assert (response.status_code, response.json()["code"]) == (401, "missing_token")


async def test_a_shopper_sees_their_entitlements_and_total_sessions(rig: ProvisioningRig) -> None:
    first = await provisioned_order(
        rig, "carol", line(1, "session_package", "pkg-5", units_per_item=5)
    )
    second = await provisioned_order(
        rig,
        "carol",
        line(1, "session_package", "pkg-10", quantity=2, units_per_item=10),
        line(2, "service_job", "cleaning"),
    )
    await provisioned_order(rig, "dave", line(1, "session_package", "pkg-5", units_per_item=5))

    response = await rig.http.get("/entitlements/me", headers=rig.as_user("carol"))

    assert response.status_code == 200
    body = response.json()
    assert (body["user_id"], body["total_sessions"]) == ("carol", 25)
    assert sorted(
        (e["order_id"], e["item_id"], e["sessions"]) for e in body["entitlements"]
    ) == sorted([(first, "pkg-5", 5), (second, "pkg-10", 20)])


async def test_a_shopper_without_entitlements_has_zero_sessions(rig: ProvisioningRig) -> None:
    response = await rig.http.get("/entitlements/me", headers=rig.as_user("erin"))
    assert response.json() == {"user_id": "erin", "total_sessions": 0, "entitlements": []}


async def test_a_job_shows_each_server_of_a_server_plan(rig: ProvisioningRig) -> None:
    order_id = await provisioned_order(rig, "bob", line(1, "server_plan", "srv-small", quantity=2))

    response = await rig.http.get(f"/jobs/{order_id}", headers=rig.as_user("bob"))

    assert response.status_code == 200, response.text
    [item] = response.json()["items"]
    assert (item["status"], item["quantity"], item["units_failed"]) == ("delivered", 2, 0)
    assert [(u["unit_no"], u["status"]) for u in item["units"]] == [
        (1, "delivered"),
        (2, "delivered"),
    ]
    assert len({u["external_ref"] for u in item["units"]}) == 2
