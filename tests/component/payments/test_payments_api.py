"""The accounts API over ASGI: who may read and grant, and grants are idempotent."""

from __future__ import annotations

from shared.messages.contracts import CreditsGranted, GrantCredits, ReserveCredits
from tests.support.rig import ServiceRig, as_user, new_order_id


async def test_my_balance_is_zero_without_an_account(payments: ServiceRig) -> None:
    http = payments.http
    response = await http.get("/accounts/me", headers=as_user("newcomer"))

    assert response.status_code == 200
    assert response.json() == {"user_id": "newcomer", "available": 0, "reserved": 0}


async def test_my_balance_shows_available_and_reserved(payments: ServiceRig) -> None:
    order = new_order_id()
    await payments.deliver(
        GrantCredits(grant_id="g1", user_id="amy", credits=50, reason="t"), correlation_id="t"
    )
    await payments.deliver(
        ReserveCredits(order_id=order, user_id="amy", credits=20), correlation_id=order
    )

    http = payments.http
    mine = await http.get("/accounts/me", headers=as_user("amy"))
    theirs = await http.get("/accounts/me", headers=as_user("someone-else"))

    assert mine.json() == {"user_id": "amy", "available": 30, "reserved": 20}
    assert theirs.json()["available"] == 0


async def test_balance_needs_a_token(payments: ServiceRig) -> None:
    http = payments.http
    response = await http.get("/accounts/me")

    assert response.status_code == 401
    assert response.json()["code"] == "missing_token"


async def test_an_operator_grant_adds_credits_once_per_idempotency_key(
    payments: ServiceRig,
) -> None:
    body = {"credits": 40, "reason": "goodwill"}
    headers = {**as_user("op-1", operator=True), "Idempotency-Key": "ticket-77"}

    http = payments.http
    first = await http.post("/accounts/bea/grants", json=body, headers=headers)
    again = await http.post("/accounts/bea/grants", json=body, headers=headers)
    mine = await http.get("/accounts/me", headers=as_user("bea"))
    ledger = await http.get("/accounts/bea/ledger", headers=as_user("op-1", operator=True))

    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() == {"user_id": "bea", "available": 40, "reserved": 0}
    assert mine.json()["available"] == 40
    [entry] = ledger.json()["entries"]
    assert entry["kind"] == "grant"
    assert entry["reference"] == "grant:api:ticket-77"
    assert entry["memo"] == "goodwill (by operator op-1)"
    assert entry["trace_id"] == first.headers["X-Trace-Id"]
    [granted] = await payments.emitted(CreditsGranted.TYPE)
    assert granted.payload == {"grant_id": "api:ticket-77", "user_id": "bea", "credits": 40}


async def test_reusing_an_idempotency_key_for_another_grant_is_a_conflict(
    payments: ServiceRig,
) -> None:
    headers = {**as_user("op-1", operator=True), "Idempotency-Key": "k-1"}

    http = payments.http
    await http.post("/accounts/cy/grants", json={"credits": 5, "reason": "a"}, headers=headers)
    other = await http.post(
        "/accounts/cy/grants", json={"credits": 6, "reason": "a"}, headers=headers
    )
    mine = await http.get("/accounts/me", headers=as_user("cy"))

    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"
    assert mine.json()["available"] == 5


async def test_a_grant_needs_the_operator_role(payments: ServiceRig) -> None:
    body = {"credits": 10, "reason": "self-service"}

    http = payments.http
    as_shopper = await http.post(
        "/accounts/dan/grants", json=body, headers={**as_user("dan"), "Idempotency-Key": "k"}
    )
    anonymous = await http.post("/accounts/dan/grants", json=body, headers={"Idempotency-Key": "k"})
    mine = await http.get("/accounts/me", headers=as_user("dan"))

    assert as_shopper.status_code == 403
    assert as_shopper.json()["code"] == "operator_only"
    assert anonymous.status_code == 401
    assert mine.json()["available"] == 0


async def test_a_grant_needs_an_idempotency_key_and_a_valid_body(payments: ServiceRig) -> None:
    operator = as_user("op-1", operator=True)

    http = payments.http
    no_key = await http.post(
        "/accounts/eve/grants", json={"credits": 1, "reason": "x"}, headers=operator
    )
    negative = await http.post(
        "/accounts/eve/grants",
        json={"credits": -1, "reason": "x"},
        headers={**operator, "Idempotency-Key": "k-2"},
    )
    extra = await http.post(
        "/accounts/eve/grants",
        json={"credits": 1, "reason": "x", "user_id": "mallory"},
        headers={**operator, "Idempotency-Key": "k-3"},
    )

    assert no_key.status_code == 400
    assert no_key.json()["code"] == "idempotency_key_required"
    assert negative.status_code == extra.status_code == 422


async def test_the_ledger_is_for_operators_and_pages(payments: ServiceRig) -> None:
    for n in range(3):
        grant = GrantCredits(grant_id=f"p{n}", user_id="fay", credits=n + 1, reason="t")
        await payments.deliver(grant, correlation_id="t")

    http = payments.http
    denied = await http.get("/accounts/fay/ledger", headers=as_user("fay"))
    page1 = await http.get("/accounts/fay/ledger?limit=2", headers=as_user("op", operator=True))
    after = page1.json()["next_after_id"]
    page2 = await http.get(
        f"/accounts/fay/ledger?limit=2&after_id={after}", headers=as_user("op", operator=True)
    )

    assert denied.status_code == 403
    assert [e["amount"] for e in page1.json()["entries"]] == [1, 2]
    assert [e["amount"] for e in page2.json()["entries"]] == [3]
    assert page2.json()["next_after_id"] is None
