"""The checkout saga, orchestrated by orders.

`state` (its vocabulary), `machine` (the pure state machine) and `refunds` (what to give back) do
no I/O. `store` writes a new saga or a decision in the caller's transaction; `runner` is the one
way to move a stored saga: lock it, decide, store, emit.
"""
