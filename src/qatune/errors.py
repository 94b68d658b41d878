"""Errors a user can cause. Each message names the place, what was expected, what was
found and how to fix it; the CLI prints it without a traceback and exits non-zero."""

from __future__ import annotations


class QATuneError(Exception):
    """Base class of every error qatune raises for bad input, bad settings or a bad model."""


class DataError(QATuneError):
    """A data file cannot be read or used (bad JSON, wrong field type, answer not in context, ...)."""


class SettingsError(QATuneError, ValueError):
    """A setting or command-line value is out of range or inconsistent with another one."""


class ModelError(QATuneError):
    """A model or tokenizer cannot be loaded or is unsuitable (no offsets, missing files, ...)."""
