"""Checks that keep the report honest about what a run directory holds (docs/reliability.md).

- result document names must be plain benchmark names equal to their file's name, so a document can
  never make the report open a file outside the run directory;
- the same run directory passed twice is refused (it would double the Holm family);
- a variant or benchmark that config.json asked for but that has no result document (a run killed
  before writing it) is reported as missing, never silently read as a base-only run;
- unit records that do not reproduce their result document's primary value are reported, and the
  statistics then use the unit records only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import benchmarks as bench_registry
from ..errors import BiasshiftError, ConfigError

_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")


def check_doc_name(doc_file: Path, name: Any) -> str:
    """The benchmark name of a result document, refused unless it is a plain name equal to the file's stem."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name != doc_file.stem:
        raise BiasshiftError(
            f"{doc_file} names benchmark {str(name)[:80]!r}, which is not the plain benchmark name of its file "
            f"({doc_file.stem!r}); registered benchmarks: {', '.join(bench_registry.names())}. The document was "
            "altered or is not a biasshift result: remove it or rerun `biasshift run`")
    return name


def unique_run_dirs(paths: Sequence[str | Path]) -> None:
    seen: dict[Path, str] = {}
    for p in paths:
        try:
            key = Path(p).expanduser().resolve()
        except OSError:
            key = Path(p)
        if key in seen:
            raise ConfigError(f"run directory {p} is given twice (also as {seen[key]}); each run directory may appear "
                              "once (a repeat would double its comparisons in the Holm correction)")
        seen[key] = str(p)


def missing_results(run: Any) -> list[dict[str, str]]:
    """(variant, benchmark) pairs config.json requested that have no result document and were not skipped."""
    cfg = run.config if isinstance(run.config, dict) else {}
    skipped = set(run.skipped)
    pairs = cfg.get("requested")
    if not isinstance(pairs, list):  # written before `requested` existed: every strategy x benchmark
        pairs = [[v, b] for v in cfg.get("strategies") or [] for b in cfg.get("benchmarks") or []]
    out = []
    for p in pairs:
        if not (isinstance(p, (list, tuple)) and len(p) == 2):
            continue
        v, b = str(p[0]), str(p[1])
        if b in skipped or b in run.variants.get(v, {}):
            continue
        out.append({"run": str(run.path), "model": run.label, "variant": v, "benchmark": b})
    return out


def missing_warnings(missing: list[dict[str, str]]) -> list[str]:
    by: dict[tuple[str, str], list[str]] = {}
    for m in missing:
        by.setdefault((m["run"], m["variant"]), []).append(m["benchmark"])
    return [f"{run}: variant {v} was requested (config.json) but has no result for {', '.join(bs)} (the run was "
            "interrupted or failed before writing it: rerun the same `biasshift run` command to finish it)"
            for (run, v), bs in by.items()]


def units_disagreement(bd: Any) -> str | None:
    """A message when ``bd``'s unit records do not reproduce its document's primary value (else None)."""
    if bd.units is None:
        return None
    info = bd.doc.benchmark
    try:
        cls = bench_registry.get(info.name)
        bench = cls(info.options)
        got = bench.compute(bd.units).value
    except Exception:  # unknown benchmark or units the benchmark cannot read: the statistics say so themselves
        return None
    want = bd.value
    if got is None and want is None:
        return None
    if got is not None and want is not None and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
        return None
    return (f"{bd.units_path} does not reproduce its result document ({bd.doc.variant.name}/{bd.name}: the units give "
            f"{info.primary_metric} = {got}, the document says {want}); the document or the units "
            "were altered or come from different runs. Values, CIs and tests here use the unit records; rerun "
            "`biasshift run` on the directory to rewrite both")


def annotate(runs: Sequence[Any]) -> tuple[list[dict[str, str]], list[str]]:
    """Missing results and unit/document disagreements of ``runs``; marks ``bd.units_disagree`` on each benchmark."""
    missing = [m for run in runs for m in missing_results(run)]
    warnings = missing_warnings(missing)
    for run in runs:
        for vd in run.variants.values():
            for bd in vd.values():
                msg = units_disagreement(bd)
                bd.units_disagree = msg is not None
                if msg:
                    warnings.append(msg)
    return missing, warnings
