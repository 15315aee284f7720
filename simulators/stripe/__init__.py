"""Stripe API simulator: Checkout Sessions, events and signed webhooks in Stripe's wire format."""
