"""argparse types shared by the commands.

Light on purpose (no torch): `add_arguments` of every command runs before its work starts, so that
`--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse


def _number(text: str, kind, ok, expected: str):
    """`text` as an int or float for which ok(value) holds, else an argparse error."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(text, int, lambda v: v >= 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(text, float, lambda v: 0 < v < float("inf"), "a number > 0")


def probability(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    return _number(text, float, lambda v: 0 < v <= 1, "a number in (0, 1]")
