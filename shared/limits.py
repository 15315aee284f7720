"""The bounds of money, credits and quantities the public API admits, stated once.

Money is integer minor units, credits are integers. A line may cost up to MAX_LINE_TOTAL, which
is past 2**31, so every money and credit column in every service is 64-bit (BIGINT); a checkout
is refused (cart `order_total_too_large`) when its money or its credits would pass
MAX_ORDER_TOTAL, which keeps every sum a service stores or carries far inside 2**63 and exact
as a JSON number even where it is read as a double (2**53).
"""

from __future__ import annotations

# A catalogue item's unit price (minor units), credit price and units per item (cart's PUT).
MAX_UNIT_PRICE = 1_000_000_000
# Items of one kind in one cart line.
MIN_QUANTITY = 1
MAX_QUANTITY = 99
MAX_LINE_TOTAL = MAX_UNIT_PRICE * MAX_QUANTITY
# The money total and the credits total of one checkout, each.
MAX_ORDER_TOTAL = 10**15
# One operator grant of credits (payments' POST /accounts/{user}/grants).
MAX_GRANT_CREDITS = MAX_UNIT_PRICE

assert MAX_LINE_TOTAL > 2**31 - 1, "the reason the columns are 64-bit"
assert MAX_ORDER_TOTAL < 2**53
