"""argparse `type=` functions shared by several commands, so that a bad value reads the same
everywhere: argparse prints `qatune COMMAND: error: argument --top-k: <message>` and exits 2."""

from __future__ import annotations

import argparse


def whole_number_from_one(text: str) -> int:
    """A count that must be at least 1, e.g. `--top-k` (0 would silently mean "no answer").

    >>> whole_number_from_one("3")
    3
    >>> whole_number_from_one("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: expected a whole number >= 1, found '0'
    """
    return _whole_number(text, least=1)


def whole_number_from_zero(text: str) -> int:
    """A count that may be 0, e.g. `--save-every` (0: never) or `--max-problems`.

    >>> whole_number_from_zero("0")
    0
    >>> whole_number_from_zero("-1")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: expected a whole number >= 0, found '-1'
    """
    return _whole_number(text, least=0)


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, found {text!r}")
    return value
