"""The chaos run: load, faults, and the invariant checker that proves nothing was lost."""
