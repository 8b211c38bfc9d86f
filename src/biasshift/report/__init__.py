"""Comparison, statistics and reports (docs/report.md).

``build_report(run_dirs)`` compares every variant with base in each run directory (paired bootstrap CI,
paired test by the benchmark's ``outcome``, Holm over the whole table); ``write_report`` renders it as
Markdown, CSV, JSON and one self-contained HTML file; ``gate`` turns it into a pass/fail CI check.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .compare import BASE, Comparison, Report, RunData, ValueRow, build_report, load_run, load_runs, parse_metric_specs
from .diff import ItemDiff, item_diff
from .gate import GateResult, Threshold, describe, gate, parse_threshold
from .render import to_csv, to_json, to_markdown, to_terminal

FORMATS = ("terminal", "html", "md", "csv", "json")
_ALIASES = {"markdown": "md", "htm": "html", "term": "terminal", "rich": "terminal"}


def parse_formats(spec: str | Iterable[str]) -> list[str]:
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for p in parts:
        p = _ALIASES.get(p.strip().lower(), p.strip().lower())
        if not p:
            continue
        if p == "all":
            return list(FORMATS)
        if p not in FORMATS:
            raise ConfigError(f"unknown report format {p!r}; choose from {', '.join(FORMATS)} (comma-separated)")
        if p not in out:
            out.append(p)
    if not out:
        raise ConfigError("--format is empty")
    return out


def write_report(report: Report, out: str | Path, formats: Iterable[str] = ("html", "md", "csv", "json"),
                 console: Any = None) -> list[Path]:
    """Write the requested formats into ``out`` (created); 'terminal' prints to ``console``. Returns the files."""
    from .html import to_html
    from .render import efficiency_csv, groups_csv

    fmts = parse_formats(list(formats))
    written: list[Path] = []
    files = [f for f in fmts if f != "terminal"]
    if files:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
    # ---- compression-rate sweep (report/sweep.py): a section only when a run has >= 2 rates of one pruning method
    from . import sweep as sweep_mod

    sweep = sweep_mod.build_sweep(report)
    # ---- end sweep
    for f in files:
        if f == "html":
            p = out / "report.html"
            sweep_html = None if sweep is None else sweep_mod.html_section(sweep, True)
            p.write_text(to_html(report, sweep_html=sweep_html), encoding="utf-8")
            written.append(p)
        elif f == "md":
            p = out / "report.md"
            sweep_md = "" if sweep is None else "\n" + sweep_mod.to_markdown(sweep, images=True) + "\n"  # sweep section
            p.write_text(to_markdown(report) + sweep_md, encoding="utf-8")
            written.append(p)
        elif f == "csv":
            p = out / "comparison.csv"
            p.write_text(to_csv(report), encoding="utf-8")
            g = out / "groups.csv"
            g.write_text(groups_csv(report), encoding="utf-8")
            eff = out / "efficiency.csv"
            eff.write_text(efficiency_csv(report), encoding="utf-8")
            written += [p, g, eff]
        elif f == "json":
            p = out / "comparison.json"
            p.write_text(to_json(report), encoding="utf-8")
            written.append(p)
    if sweep is not None:  # ---- sweep files: sweep.csv / sweep.json with csv / json, its PNGs with html or md
        if "csv" in fmts:
            written.append(out / "sweep.csv")
            written[-1].write_text(sweep_mod.to_csv(sweep), encoding="utf-8")
        if "json" in fmts:
            written.append(out / "sweep.json")
            written[-1].write_text(sweep_mod.to_json(sweep), encoding="utf-8")
        if "md" in fmts or "html" in fmts:
            written += sweep_mod.write_figures(sweep, out)
    if "terminal" in fmts and console is not None:
        to_terminal(report, console)
        if sweep is not None:
            sweep_mod.to_terminal(sweep, console)
    return written


__all__ = [
    "BASE", "Comparison", "GateResult", "Report", "RunData", "Threshold", "ValueRow", "build_report", "describe",
    "gate", "load_run", "load_runs", "parse_formats", "parse_metric_specs", "parse_threshold", "to_csv", "to_json",
    "to_markdown", "to_terminal", "write_report", "FORMATS", "ItemDiff", "item_diff",
]
