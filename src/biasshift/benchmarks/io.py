"""Strict readers for upstream CSV / JSONL files: every problem names the file, row and field.

Row numbers are 1-based data rows (the CSV header is not counted; for JSONL, the line number).
"""

from __future__ import annotations

import ast
import csv
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import DataError

csv.field_size_limit(1 << 26)


def _read_text(path: Path, kind: str) -> str:
    """The whole file as text (a UTF-8 BOM is dropped); a decoding error names the line and data row."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise DataError("is a directory, not a file", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}", path=path) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start:exc.start + 1].hex()
        if kind == "csv":  # the data row (header not counted), found by parsing the valid prefix
            prefix = data[:exc.start].decode("utf-8-sig", errors="replace")
            try:
                n = len(list(csv.reader(io.StringIO(prefix))))
            except csv.Error:
                n = line
            row = max(1, n - 1 if prefix and not prefix.endswith("\n") else n)
        else:
            row = line
        raise DataError(f"not UTF-8 text: byte 0x{bad} at byte offset {exc.start}, line {line} ({exc.reason}); "
                        "re-save the file as UTF-8", path=path, row=row) from None


def read_csv_rows(path: Path, required: Iterable[str], allow_empty: bool = False) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV file with a header; a file with a header but no data row is an error unless ``allow_empty``."""
    text = _read_text(path, "csv")
    try:
        with io.StringIO(text, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(
                    f"missing column(s) {', '.join(missing)}; the header has: {', '.join(h or '(unnamed)' for h in header)}",
                    path=path,
                    field=missing[0],
                )
            rows = []
            for i, row in enumerate(reader, start=1):
                if None in row:
                    raise DataError(f"row has {len(header) + len(row[None])} fields, the header {len(header)}", path=path, row=i)
                rows.append((i, row))
    except csv.Error as exc:
        raise DataError(f"malformed CSV: {exc}", path=path) from None
    if not rows and not allow_empty:
        raise DataError("no data rows (the file holds only a header)" if header else "empty file", path=path)
    return rows


def read_jsonl(path: Path, required: Iterable[str]) -> list[tuple[int, dict[str, Any]]]:
    required = list(required)
    rows = []
    text = _read_text(path, "jsonl")  # a UTF-8 BOM is accepted, as for CSV
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc.msg} at column {exc.colno}", path=path, row=i) from None
        except ValueError as exc:
            raise DataError(str(exc), path=path, row=i, field=_non_finite_field(line)) from None
        if not isinstance(obj, dict):
            raise DataError("expected a JSON object", path=path, row=i)
        for c in required:
            if c not in obj or obj[c] is None:
                raise DataError("missing value", path=path, row=i, field=c)
        rows.append((i, obj))
    if not rows:
        raise DataError("no rows", path=path)
    return rows


def _non_finite_field(line: str) -> str | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if isinstance(obj, dict):
        return next((k for k, v in obj.items() if isinstance(v, float) and not math.isfinite(v)), None)
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (NaN/Infinity are not valid JSON values)")


def read_json(path: Path) -> Any:
    """A whole-file JSON document; syntax errors name the line, encoding and I/O errors the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc.msg} at column {exc.colno}", path=path, row=exc.lineno) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}", path=path) from None


def require_text(row: dict[str, Any], field: str, path: Path, lineno: int) -> str:
    v = row.get(field)
    if v is None or not str(v).strip():
        raise DataError("empty value", path=path, row=lineno, field=field)
    return str(v)


def literal(text: str, path: Path, lineno: int, field: str) -> Any:
    """A Python literal from a data cell, evaluated safely (never ``eval``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise DataError(f"cannot parse as a Python literal ({type(exc).__name__})", path=path, row=lineno, field=field) from None
