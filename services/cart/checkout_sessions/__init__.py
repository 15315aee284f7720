"""Checkout sessions: the priced snapshot of a cart a shopper is about to pay for.

`rules` (pure: lifecycle, validation, the session's domain errors), `service` (use cases in the
caller's transaction, and the cleanup task), `store` (its statements), `api` (its routes and
what they answer with)."""
