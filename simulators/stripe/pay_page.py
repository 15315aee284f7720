"""HTML of the simulated hosted Checkout page (stands in for checkout.stripe.com)."""

from __future__ import annotations

from html import escape

from .objects import StripeObject

OUTCOMES = ("pay", "fail", "abandon")

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 32rem; margin: 3rem auto; color: #1a1f36; }
h1 { font-size: 1.3rem; } .amount { font-size: 2rem; margin: 1rem 0; }
table { width: 100%; border-collapse: collapse; margin-bottom: 1.5rem; }
td { padding: .3rem 0; border-bottom: 1px solid #e3e8ee; } td.num { text-align: right; }
form { display: flex; gap: .5rem; } button { flex: 1; padding: .7rem; font-size: 1rem; }
.note { color: #697386; font-size: .85rem; }
"""


def format_amount(amount: int, currency: str) -> str:
    # Display only; most currencies have 2 decimals and zero-decimal ones are not
    # special-cased here (the simulator never converts amounts, it only shows them).
    return f"{amount / 100:.2f} {currency.upper()}"


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def checkout_page(session: StripeObject, line_items: list[tuple[str, int, int]]) -> str:
    """The pay page of an open session; ``line_items`` are (name, unit_amount, quantity)."""
    sid = escape(session["id"])
    currency = session["currency"]
    rows = "".join(
        f"<tr><td>{escape(name)} &times; {qty}</td>"
        f"<td class='num'>{escape(format_amount(unit * qty, currency))}</td></tr>"
        for name, unit, qty in line_items
    )
    buttons = "".join(
        f"<button type='submit' name='outcome' value='{o}'>{o.capitalize()}</button>"
        for o in OUTCOMES
    )
    body = (
        f"<h1>Stripe simulator: Checkout</h1><p class='note'>Session {sid}</p>"
        f"<div class='amount'>{escape(format_amount(session['amount_total'], currency))}</div>"
        f"<table>{rows}</table>"
        f"<form method='post' action='/pay/{sid}'>{buttons}</form>"
        "<p class='note'>Pay completes the session. Fail simulates a declined card: the "
        "session stays open. Abandon leaves: the session expires at its expires_at.</p>"
    )
    return _page("Checkout (simulated)", body)


def message_page(title: str, message: str) -> str:
    return _page(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>")
