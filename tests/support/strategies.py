"""Hypothesis strategies drawn by more than one test module. A strategy one module alone draws
from stays in that module, next to the property it feeds."""

from __future__ import annotations

from hypothesis import strategies as st

from services.cart.domain import LineItem

item_kinds = st.sampled_from(["credit_pack", "session_package", "server_plan", "service_job"])

# Any line a cart can hold: prices in minor units, with or without a credit price.
line_items = st.builds(
    LineItem,
    item_id=st.from_regex(r"[a-z]{1,8}-[0-9]{1,3}", fullmatch=True),
    kind=item_kinds,
    name=st.text(min_size=1, max_size=20),
    quantity=st.integers(min_value=1, max_value=99),
    unit_price=st.integers(min_value=0, max_value=10**7),
    currency=st.just("EUR"),
    credit_price=st.none() | st.integers(min_value=0, max_value=10**6),
    units_per_item=st.integers(min_value=0, max_value=1000),
)
