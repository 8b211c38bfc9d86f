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


class LockError(BiasshiftError):
    """Another biasshift process holds the run directory's lock (one writer per run directory)."""


#: exit codes of the CLI (docs/reliability.md): 0 success / gate passed, 1 the gate found a significant bias
#: increase, 2 an error the user can act on (bad input, full disk, locked or damaged run directory),
#: 3 an unexpected internal error (a bug; the message says how to get the traceback), 130 interrupted.
EXIT_OK, EXIT_GATE_FAILED, EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def os_error_message(exc: OSError, what: str, path: object = None) -> str:
    """One line for an OS error while ``what`` (e.g. 'writing the result document'), naming the path and a fix."""
    import errno

    where = path if path is not None else (exc.filename or "?")
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        fix = "the disk is full: free space (or point --out / BIASSHIFT_CACHE at a larger disk) and rerun the same command to resume"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "no permission to write there: choose a writable location"
    else:
        fix = "fix the file system problem and rerun the same command to resume"
    return f"{what} failed at {where}: {exc.strerror or exc} ({fix})"


class DiskError(BiasshiftError):
    """Writing to disk failed (full disk, read-only file system, ...); finished work is kept."""

    def __init__(self, exc: OSError, what: str, path: object = None) -> None:
        super().__init__(os_error_message(exc, what, path))
        self.errno = exc.errno
