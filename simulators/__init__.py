"""Simulators of the external systems checkout-saga talks to, behaving as the real ones do:
`stripe/` (Stripe's API, Checkout pay page and webhooks) and `panel/` (a server panel). Tests, the
demo, the dev stack and the chaos run use them; nothing under `services/` imports them, and the
service wheel and image do not ship them.
"""
