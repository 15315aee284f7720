"""What to give back when some lines of a paid order could not be delivered. Pure.

The rounding rule. Every line is paid wholly one way (`paid_with`): in credits or in money, never
split, so a failed credit line refunds exactly its own credits. Money is refunded out of what was
actually charged: each failed money line gets `floor(line_money * amount_paid / money_total)`
minor units, and when every money line failed the refund is exactly `amount_paid` (the rounding
remainder goes back too). A refund therefore never exceeds the charge, and all-failed is whole.
When the charge equals the list price (always, today: prices are server-side) the floor is exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.messages.contracts import CheckoutLine


@dataclass(frozen=True)
class RefundShare:
    money: int
    credits: int
    lines: tuple[int, ...]

    @property
    def empty(self) -> bool:
        return self.money == 0 and self.credits == 0


def share_of_failed(
    lines: Iterable[CheckoutLine], failed_line_nos: Iterable[int], *, amount_paid: int
) -> RefundShare:
    lines = tuple(lines)
    failed = frozenset(failed_line_nos)
    money_total = sum(line.money for line in lines)
    money_lines = [line for line in lines if line.money > 0]
    failed_money = [line for line in money_lines if line.line_no in failed]
    if money_lines and len(failed_money) == len(money_lines):
        money = amount_paid
    elif money_total == 0:
        money = 0
    else:
        money = sum(line.money * amount_paid // money_total for line in failed_money)
    credits = sum(line.credits for line in lines if line.line_no in failed)
    return RefundShare(money=money, credits=credits, lines=tuple(sorted(failed)))
