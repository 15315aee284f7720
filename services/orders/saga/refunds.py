"""What to give back when some units of a paid order could not be delivered. Pure.

The rounding rule. Every line is paid wholly one way (`paid_with`): in credits or in money, never
split, so a failed credit unit refunds exactly its own credits (`unit_credits`). Money is refunded
out of what was actually charged: a money line with `k` of its `quantity` units failed gets
`floor(line_money * k * amount_paid / (quantity * money_total))` minor units (one floor, so a
whole failed line gets exactly what it got before units were counted), and when every unit of
every money line failed the refund is exactly `amount_paid` (the rounding remainder goes back
too). A refund therefore never exceeds the charge, and all-failed is whole. When the charge
equals the list price (always, today: prices are server-side) the floor is exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shared.messages.contracts import CheckoutLine


@dataclass(frozen=True)
class RefundShare:
    money: int
    credits: int
    # Failed units per line number, for the lines that had any.
    failed_units: tuple[tuple[int, int], ...]
    # Every line's quantity, by line number: tells a whole failed line from a partial one.
    quantities: tuple[tuple[int, int], ...] = ()

    @property
    def empty(self) -> bool:
        return self.money == 0 and self.credits == 0

    @property
    def lines(self) -> tuple[int, ...]:
        return tuple(n for n, _ in self.failed_units)

    @property
    def key(self) -> str:
        """The refund's idempotency key: `n` for a whole failed line, `nxk` for k of its units.
        A whole line keeps the key it had before units were counted."""
        return "failed-lines-" + "-".join(
            str(n) if self._whole(n, k) else f"{n}x{k}" for n, k in self.failed_units
        )

    def _whole(self, line_no: int, units: int) -> bool:
        return units >= dict(self.quantities).get(line_no, units)


def share_of_failed(
    lines: Iterable[CheckoutLine],
    failed: Mapping[int, int] | Iterable[int],
    *,
    amount_paid: int,
) -> RefundShare:
    """`failed` maps a line number to its failed units; a bare line number means all of them."""
    lines = tuple(lines)
    quantity = {line.line_no: line.quantity for line in lines}
    if isinstance(failed, Mapping):
        units = {n: min(k, quantity[n]) for n, k in failed.items() if k > 0 and n in quantity}
    else:
        units = {n: quantity[n] for n in failed if n in quantity}
    money_total = sum(line.money for line in lines)
    money_lines = [line for line in lines if line.money > 0]
    if money_lines and all(units.get(line.line_no) == line.quantity for line in money_lines):
        money = amount_paid
    elif money_total == 0:
        money = 0
    else:
        money = sum(
            line.money * units.get(line.line_no, 0) * amount_paid // (line.quantity * money_total)
            for line in money_lines
        )
    credits = sum(
        (line.unit_credits or 0) * units.get(line.line_no, 0) for line in lines if line.credits
    )
    return RefundShare(
        money=money,
        credits=credits,
        failed_units=tuple(sorted(units.items())),
        quantities=tuple(sorted(quantity.items())),
    )
