"""A credit pack's grant is kept until payments confirms it (CreditsGranted) and sent again while
it is not: a GrantCredits lost on its way (dead-lettered after the retry horizon, a purged queue)
still reaches payments. Driven through the dispatcher on SQLite; the re-sender's rounds are run
by the tests at the times they choose."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.payments.bootstrap import build as build_payments
from services.provisioning.grant_resender import resend_due_grants
from shared.messages import contracts as c
from tests.support.payments import payments_settings
from tests.support.provisioning import MakeRig, ProvisioningRig, job_created, line, provision
from tests.support.rig import Rigs, ServiceRig, sqlite_url

FIRST_WAIT = timedelta(seconds=900)  # ProvisioningSettings.grant_resend_after_seconds


async def credit_pack_provisioned(rig: ProvisioningRig, *, user_id: str = "alice") -> str:
    """An order of one credit-pack line (line 2: 2 x 100 credits), provisioned; its id."""
    order_id = await job_created(
        rig, line(2, "credit_pack", "credits-100", quantity=2, units_per_item=100), user_id=user_id
    )
    await provision(rig, order_id)
    return order_id


async def grants_sent(rig: ProvisioningRig, order_id: str) -> list[c.GrantCredits]:
    return [m for m in await rig.messages_for(order_id) if isinstance(m, c.GrantCredits)]


async def last_sent_at(rig: ProvisioningRig, grant_id: str) -> datetime:
    grant = await rig.credit_grant(grant_id)
    assert grant is not None
    return grant.last_sent_at


def confirmation(order_id: str) -> c.CreditsGranted:
    return c.CreditsGranted(grant_id=f"{order_id}:2", user_id="alice", credits=200)


# --- recorded with the grant, confirmed by payments' answer ---------------------------------------


async def test_a_credit_pack_records_its_grant_as_unconfirmed(rig: ProvisioningRig) -> None:
    before = datetime.now(UTC)
    order_id = await credit_pack_provisioned(rig)

    grant = await rig.credit_grant(f"{order_id}:2")

    assert grant is not None
    assert (grant.order_id, grant.user_id, grant.credits, grant.reason) == (
        order_id,
        "alice",
        200,
        "credit pack",
    )
    assert (grant.sends, grant.confirmed_at) == (1, None)
    assert before <= grant.created_at == grant.last_sent_at <= datetime.now(UTC)
    assert grant.next_send_at == grant.last_sent_at + FIRST_WAIT


async def test_credits_granted_confirms_the_grant_and_a_repeat_changes_nothing(
    rig: ProvisioningRig,
) -> None:
    order_id = await credit_pack_provisioned(rig)

    await rig.deliver(confirmation(order_id), correlation_id=order_id)
    first = await rig.credit_grant(f"{order_id}:2")
    # Payments answers every GrantCredits, a re-sent one too: a second answer is a new envelope.
    await rig.deliver(confirmation(order_id), correlation_id=order_id)
    second = await rig.credit_grant(f"{order_id}:2")

    assert first is not None and first.confirmed_at is not None
    assert second is not None and second.confirmed_at == first.confirmed_at


async def test_credits_granted_for_a_grant_this_service_never_sent_is_ignored(
    rig: ProvisioningRig,
) -> None:
    # An operator's grant through payments' API is announced to every subscriber alike.
    operator_grant = c.CreditsGranted(grant_id="api:op-key-1", user_id="bob", credits=5)

    await rig.deliver(operator_grant, correlation_id="op-trace")

    assert await rig.credit_grant("api:op-key-1") is None
    assert await rig.emitted(correlation_id="op-trace") == []


# --- sent again until confirmed -------------------------------------------------------------------


async def test_a_lost_grant_is_sent_again_with_the_same_grant_id_once_its_wait_passed(
    rig: ProvisioningRig,
) -> None:
    order_id = await credit_pack_provisioned(rig)
    [original] = await grants_sent(rig, order_id)
    sent_at = await last_sent_at(rig, original.grant_id)

    # Nothing answered it (lost on its way to payments): not yet due...
    almost = sent_at + FIRST_WAIT - timedelta(seconds=1)
    assert await resend_due_grants(rig.runtime, now=almost) == 0
    assert await grants_sent(rig, order_id) == [original]
    # ...and sent again, the same grant, once its wait has passed.
    assert await resend_due_grants(rig.runtime, now=sent_at + FIRST_WAIT) == 1
    assert await grants_sent(rig, order_id) == [original, original]

    grant = await rig.credit_grant(original.grant_id)
    assert grant is not None and grant.confirmed_at is None
    assert (grant.sends, grant.last_sent_at) == (2, sent_at + FIRST_WAIT)
    assert grant.next_send_at == grant.last_sent_at + 2 * FIRST_WAIT


async def test_the_wait_doubles_with_each_send_of_a_grant_still_unconfirmed(
    rig: ProvisioningRig,
) -> None:
    order_id = await credit_pack_provisioned(rig)
    grant_id = f"{order_id}:2"
    second_send = await last_sent_at(rig, grant_id) + FIRST_WAIT
    assert await resend_due_grants(rig.runtime, now=second_send) == 1

    almost = second_send + 2 * FIRST_WAIT - timedelta(seconds=1)
    assert await resend_due_grants(rig.runtime, now=almost) == 0
    assert await resend_due_grants(rig.runtime, now=second_send + 2 * FIRST_WAIT) == 1
    assert len(await grants_sent(rig, order_id)) == 3


async def test_a_confirmed_grant_is_never_sent_again(rig: ProvisioningRig) -> None:
    order_id = await credit_pack_provisioned(rig)
    await rig.deliver(confirmation(order_id), correlation_id=order_id)

    assert await resend_due_grants(rig.runtime, now=datetime.now(UTC) + timedelta(days=30)) == 0
    assert len(await grants_sent(rig, order_id)) == 1


async def test_a_grant_confirmed_after_a_resend_is_not_sent_again(rig: ProvisioningRig) -> None:
    order_id = await credit_pack_provisioned(rig)
    later = await last_sent_at(rig, f"{order_id}:2") + FIRST_WAIT
    assert await resend_due_grants(rig.runtime, now=later) == 1
    await rig.deliver(confirmation(order_id), correlation_id=order_id)

    assert await resend_due_grants(rig.runtime, now=later + timedelta(days=30)) == 0
    assert len(await grants_sent(rig, order_id)) == 2


async def test_due_grants_are_sent_in_bounded_batches_until_none_is_left(
    rig: ProvisioningRig,
) -> None:
    orders = [await credit_pack_provisioned(rig, user_id=f"user-{n}") for n in range(5)]
    later = datetime.now(UTC) + FIRST_WAIT

    assert await resend_due_grants(rig.runtime, now=later, batch=2) == 5
    for order_id in orders:
        assert len(await grants_sent(rig, order_id)) == 2


async def test_the_first_resend_wait_comes_from_settings(make_rig: MakeRig) -> None:
    rig = await make_rig(grant_resend_after_seconds=20)
    order_id = await credit_pack_provisioned(rig)

    grant = await rig.credit_grant(f"{order_id}:2")

    assert grant is not None
    assert grant.next_send_at == grant.last_sent_at + timedelta(seconds=20)


# --- the round trip with payments ---------------------------------------------------------------


async def test_a_lost_grant_reaches_payments_when_sent_again_and_is_credited_once(
    rig: ProvisioningRig, tmp_path: Path
) -> None:
    async with Rigs() as rigs:
        payments = await rigs.start(
            ServiceRig, build_payments, payments_settings(sqlite_url(tmp_path / "payments.db"))
        )
        order_id = await credit_pack_provisioned(rig)
        [lost] = await rig.emitted(c.GrantCredits.TYPE, correlation_id=order_id)
        sent_at = await last_sent_at(rig, f"{order_id}:2")

        # The first GrantCredits never reaches payments; the re-sent one does...
        assert await resend_due_grants(rig.runtime, now=sent_at + FIRST_WAIT) == 1
        [_, resent] = await rig.emitted(c.GrantCredits.TYPE, correlation_id=order_id)
        await payments.redeliver(resent)
        # ...and so, later, does the lost one (an operator replays the dead letters).
        await payments.redeliver(lost)
        for answer in await payments.emitted(c.CreditsGranted.TYPE, correlation_id=order_id):
            await rig.redeliver(answer)

        balance = await payments.http.get("/accounts/me", headers=payments.as_user("alice"))
        assert balance.json()["available"] == 200
        grant = await rig.credit_grant(f"{order_id}:2")
        assert grant is not None and grant.confirmed_at is not None
        later = sent_at + timedelta(days=30)
        assert await resend_due_grants(rig.runtime, now=later) == 0
