"""Helpers written once for the whole test suite: rigs, harnesses, strategies, waiting."""
