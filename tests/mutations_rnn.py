"""Variants of notebook rnn (see tests/mutations.py)."""

from tests.mutations import Variant, variants  # noqa: F401

VARIANTS: list[Variant] = []
