"""The cart service over HTTP: catalogue, carts and lines, with prices only from the server."""

from __future__ import annotations

from tests.support.cart import CartRig

OPERATOR = CartRig.as_user("olga", operator=True)
ALICE = CartRig.as_user("alice")
BOB = CartRig.as_user("bob")


async def test_the_default_catalogue_is_seeded_and_public(cart: CartRig) -> None:
    response = await cart.http.get("/catalogue")

    assert response.status_code == 200
    items = {i["id"]: i for i in response.json()["items"]}
    assert set(items) == {"credits-100", "pkg-10", "vps-small", "setup-job"}
    assert items["pkg-10"] == {
        "id": "pkg-10",
        "kind": "session_package",
        "name": "10 coaching sessions",
        "unit_price": 5000,
        "currency": "EUR",
        "credit_price": 400,
        "units_per_item": 10,
        "active": True,
        "available_from": None,
        "available_until": None,
        "available": True,
    }
    assert items["credits-100"]["credit_price"] is None
    assert items["credits-100"]["units_per_item"] == 100


async def test_operators_upsert_and_deactivate_items_shoppers_cannot(cart: CartRig) -> None:
    item = {"kind": "server_plan", "name": "VPS large", "unit_price": 4500, "currency": "EUR"}

    denied = await cart.http.put("/catalogue/items/vps-large", json=item, headers=ALICE)
    created = await cart.http.put("/catalogue/items/vps-large", json=item, headers=OPERATOR)
    updated = await cart.http.put(
        "/catalogue/items/vps-large", json={**item, "credit_price": 300}, headers=OPERATOR
    )

    assert denied.status_code == 403
    assert denied.json()["code"] == "operator_only"
    assert created.status_code == 200
    assert created.json()["credit_price"] is None
    assert updated.json()["credit_price"] == 300
    assert "vps-large" in {i["id"] for i in (await cart.http.get("/catalogue")).json()["items"]}

    gone = await cart.http.delete("/catalogue/items/vps-large", headers=OPERATOR)

    assert gone.status_code == 200
    assert gone.json()["active"] is False
    assert "vps-large" not in {i["id"] for i in (await cart.http.get("/catalogue")).json()["items"]}
    missing = await cart.http.delete("/catalogue/items/nope", headers=OPERATOR)
    assert (missing.status_code, missing.json()["code"]) == (404, "item_not_found")


async def test_catalogue_items_are_validated(cart: CartRig) -> None:
    good = {"kind": "service_job", "name": "Backup", "unit_price": 100, "currency": "EUR"}
    for bad in (
        {**good, "kind": "gift_card"},
        {**good, "unit_price": -1},
        {**good, "unit_price": 10.5},
        {**good, "currency": "euro"},
        {**good, "credit_price": -5},
    ):
        response = await cart.http.put("/catalogue/items/backup", json=bad, headers=OPERATOR)
        assert response.status_code == 422, bad
        assert response.json()["code"] == "validation_error"
    bad_slug = await cart.http.put("/catalogue/items/Bad Slug", json=good, headers=OPERATOR)
    assert bad_slug.status_code == 422


async def test_a_cart_with_several_kinds_is_totalled_by_the_server(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=2, vps_small=1, credits_100=1, setup_job=3)

    with_credits = (await cart.http.get(f"/carts/{cart_id}", headers=ALICE)).json()
    money_only = (
        await cart.http.get(f"/carts/{cart_id}", params={"use_credits": "false"}, headers=ALICE)
    ).json()

    assert with_credits["status"] == "open"
    assert [line["item_id"] for line in with_credits["lines"]] == [
        "pkg-10",
        "vps-small",
        "credits-100",
        "setup-job",
    ]
    pkg = with_credits["lines"][0]
    assert (pkg["kind"], pkg["quantity"], pkg["unit_price"], pkg["credit_price"]) == (
        "session_package",
        2,
        5000,
        400,
    )
    assert (pkg["units"], pkg["paid_with"], pkg["available"]) == (20, "credits", True)
    assert with_credits["totals"] == {
        "item_count": 7,
        "units_total": 2 * 10 + 1 + 100 + 3,
        "money_total": 1000,
        "credits_total": 2 * 400 + 120 + 3 * 250,
        "currency": "EUR",
    }
    assert money_only["totals"]["money_total"] == 2 * 5000 + 1500 + 1000 + 3 * 3000
    assert money_only["totals"]["credits_total"] == 0


async def test_setting_a_quantity_again_replaces_it_and_delete_removes_the_line(
    cart: CartRig,
) -> None:
    cart_id = await cart.new_cart(pkg_10=1, vps_small=1)

    again = await cart.http.put(
        f"/carts/{cart_id}/lines/pkg-10", json={"quantity": 5}, headers=ALICE
    )
    removed = await cart.http.delete(f"/carts/{cart_id}/lines/vps-small", headers=ALICE)

    assert [(x["item_id"], x["quantity"]) for x in again.json()["lines"]] == [
        ("pkg-10", 5),
        ("vps-small", 1),
    ]
    assert [(x["item_id"], x["quantity"]) for x in removed.json()["lines"]] == [("pkg-10", 5)]
    assert removed.json()["totals"]["units_total"] == 50


async def test_a_client_sent_price_is_refused_not_used(cart: CartRig) -> None:
    cart_id = await cart.new_cart()

    tampered = await cart.http.put(
        f"/carts/{cart_id}/lines/pkg-10",
        json={"quantity": 1, "unit_price": 1, "credit_price": 0},
        headers=ALICE,
    )

    assert tampered.status_code == 422
    assert tampered.json()["code"] == "validation_error"
    assert (await cart.http.get(f"/carts/{cart_id}", headers=ALICE)).json()["lines"] == []


async def test_quantities_must_be_1_to_99(cart: CartRig) -> None:
    cart_id = await cart.new_cart()
    for quantity in (0, 100, -3):
        response = await cart.http.put(
            f"/carts/{cart_id}/lines/pkg-10", json={"quantity": quantity}, headers=ALICE
        )
        assert response.status_code == 422
        assert response.json()["code"] == "quantity_out_of_range"
    ok = await cart.http.put(f"/carts/{cart_id}/lines/pkg-10", json={"quantity": 99}, headers=ALICE)
    assert ok.status_code == 200


async def test_unknown_or_inactive_items_cannot_be_added(cart: CartRig) -> None:
    cart_id = await cart.new_cart()
    await cart.http.delete("/catalogue/items/setup-job", headers=OPERATOR)

    for item_id in ("no-such-item", "setup-job"):
        response = await cart.http.put(
            f"/carts/{cart_id}/lines/{item_id}", json={"quantity": 1}, headers=ALICE
        )
        assert response.status_code == 422
        assert response.json()["code"] == "item_unavailable"


async def test_an_item_in_another_currency_cannot_join_the_cart(cart: CartRig) -> None:
    item = {"kind": "server_plan", "name": "VPS US", "unit_price": 1700, "currency": "USD"}
    await cart.http.put("/catalogue/items/vps-us", json=item, headers=OPERATOR)
    cart_id = await cart.new_cart()

    response = await cart.http.put(
        f"/carts/{cart_id}/lines/vps-us", json={"quantity": 1}, headers=ALICE
    )

    assert (response.status_code, response.json()["code"]) == (422, "mixed_currencies")


async def test_an_item_withdrawn_after_it_was_added_shows_as_unavailable(cart: CartRig) -> None:
    cart_id = await cart.new_cart(pkg_10=1, setup_job=2)
    await cart.http.delete("/catalogue/items/setup-job", headers=OPERATOR)

    view = (await cart.http.get(f"/carts/{cart_id}", headers=ALICE)).json()
    checkout = await cart.checkout(cart_id, "k-withdrawn")

    setup = next(x for x in view["lines"] if x["item_id"] == "setup-job")
    assert (setup["available"], setup["paid_with"]) == (False, None)
    assert view["totals"]["item_count"] == 1
    assert checkout.status_code == 422
    assert checkout.json()["code"] == "item_unavailable"


async def test_another_users_cart_does_not_exist_for_you(cart: CartRig) -> None:
    cart_id = await cart.new_cart("alice", pkg_10=1)

    responses = [
        await cart.http.get(f"/carts/{cart_id}", headers=BOB),
        await cart.http.put(f"/carts/{cart_id}/lines/vps-small", json={"quantity": 1}, headers=BOB),
        await cart.http.delete(f"/carts/{cart_id}/lines/pkg-10", headers=BOB),
        await cart.checkout(cart_id, "bob-key", user_id="bob"),
    ]

    assert [(r.status_code, r.json()["code"]) for r in responses] == [(404, "cart_not_found")] * 4
    lines = (await cart.http.get(f"/carts/{cart_id}", headers=ALICE)).json()["lines"]
    assert [(x["item_id"], x["quantity"]) for x in lines] == [("pkg-10", 1)]


async def test_carts_need_a_valid_token(cart: CartRig) -> None:
    missing = await cart.http.post("/carts")
    forged = await cart.http.post("/carts", headers={"Authorization": "Bearer not-a-jwt"})

    assert (missing.status_code, missing.json()["code"]) == (401, "missing_token")
    assert (forged.status_code, forged.json()["code"]) == (401, "invalid_token")
