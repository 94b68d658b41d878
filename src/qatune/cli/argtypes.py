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


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (0: any free port).

    >>> port_number("8000")
    8000
    >>> port_number("70000")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: expected a port number from 0 to 65535, found '70000'
    """
    value = _whole_number(text, least=0) if text.strip().isdigit() else -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, found {text!r}")
    return value


def non_negative_number(text: str) -> float:
    """A finite number >= 0, e.g. `--max-wait-ms`.

    >>> non_negative_number("2.5")
    2.5
    >>> non_negative_number("-1")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: expected a number >= 0, found '-1'
    """
    import math

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, found {text!r}")
    return value
