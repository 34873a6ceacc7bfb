"""Variants of notebook decoder (see tests/mutations.py)."""

from tests.mutations import Variant, variants  # noqa: F401

VARIANTS: list[Variant] = []
