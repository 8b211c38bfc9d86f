"""Exceptions that the CLI turns into a readable one-paragraph message (no bare stack trace)."""

from __future__ import annotations


class BiasshiftError(Exception):
    """Base class: an error the user can act on. The message must say what and where."""


class ConfigError(BiasshiftError):
    """Bad command-line option or configuration value."""


class DataError(BiasshiftError):
    """A benchmark data file is missing, unreadable or malformed.

    The message names the file, and the row and field when one is at fault.
    """

    def __init__(self, message: str, *, path: object = None, row: int | None = None, field: str | None = None):
        where = []
        if path is not None:
            where.append(f"file {path}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        full = f"{message} ({', '.join(where)})" if where else message
        super().__init__(full)
        self.path = path
        self.row = row
        self.field = field


class ModelLoadError(BiasshiftError):
    """The model could not be found or loaded."""


class StoreError(BiasshiftError):
    """The run directory's store is inconsistent with the requested run."""


class DependencyError(BiasshiftError):
    """An optional dependency needed for the requested feature is not installed."""
