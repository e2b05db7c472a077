"""Moved to :mod:`bocb.study_setup` (library code: the API and ``bocb plan`` share it); kept as an alias."""

from bocb.study_setup import KNOWN_SIZES, Prepared, prepare, register

__all__ = ["KNOWN_SIZES", "Prepared", "prepare", "register"]
