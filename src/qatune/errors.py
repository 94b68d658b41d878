"""Errors a user can cause. Each message names the place, what was expected, what was
found and how to fix it; the CLI prints it without a traceback and exits non-zero."""

from __future__ import annotations


import re


def first_line(error: BaseException) -> str:
    """An error's first line, without terminal colours or a closing period (the messages that
    quote it add their own punctuation); its type's name when it has no text."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__


class QATuneError(Exception):
    """Base class of every error qatune raises for bad input, bad settings or a bad model."""


class DataError(QATuneError):
    """A data file cannot be read or used (bad JSON, wrong field type, answer not in context, ...)."""


class SettingsError(QATuneError, ValueError):
    """A setting or command-line value is out of range or inconsistent with another one."""


class ArgumentTypeError(QATuneError, TypeError):
    """A Python argument of the wrong kind: None or a number where a path goes, a file's name
    where a list of examples goes."""


class ModelError(QATuneError):
    """A model or tokenizer cannot be loaded or is unsuitable (no offsets, missing files, ...)."""
