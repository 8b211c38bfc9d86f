"""Render a :class:`~.compare.Report` as a terminal table (rich), Markdown, CSV and JSON.

Conventions shared by every format (and the HTML in :mod:`.html`):
- a missing value (undefined metric, no result) is written ``n/a`` (CSV: an empty cell, JSON: null),
  never as a number;
- summary cells read ``value (arrow, % change)``: the arrow is the direction of the change of the metric
  (up, down, = for none), ``*`` marks a change significant after Holm's correction at alpha; where the
  relative change is undefined (base value 0) the absolute change is shown instead;
- whether a change means *more* or *less* bias comes from the benchmark's ``higher_is_more_biased``; for a
  quality anchor (``is_quality_metric``, e.g. perplexity) it means worse or better quality instead.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from .compare import BASE, Comparison, Report, ValueRow

UP, DOWN, SAME = "↑", "↓", "="


# ----------------------------------------------------------------------------------------------- numbers
def fmt_num(v: float | None) -> str:
    if v is None:
        return "n/a"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 0.001:
        return f"{v:.4f}"
    return f"{v:.2e}"


def fmt_change(v: float | None) -> str:
    if v is None:
        return "n/a"
    return ("+" if v > 0 else "") + fmt_num(v) if v != 0 else "0"


def fmt_rel(r: float | None) -> str:
    return "n/a" if r is None else f"{100 * r:+.1f}%"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    if p < 1e-4:
        return f"{p:.1e}"
    return f"{p:.4f}".rstrip("0").rstrip(".") if p < 1 else "1"


def fmt_ci(r: Comparison) -> str:
    if r.ci_low is None or r.ci_high is None:
        return "n/a"
    return f"[{fmt_change(r.ci_low)}, {fmt_change(r.ci_high)}]"


def arrow(change: float | None) -> str:
    if change is None:
        return ""
    return UP if change > 0 else DOWN if change < 0 else SAME


def summary_cell(r: Comparison | None, alpha: float) -> str:
    """``value (arrow change%*)`` for a variant cell; 'n/a' when the variant's value is missing."""
    if r is None:
        return "–"
    if r.value is None:
        return "n/a"
    if r.change is None:
        return fmt_num(r.value)
    star = "*" if r.significant else ""
    amount = fmt_rel(r.rel_change) if r.rel_change is not None else f"Δ {fmt_change(r.change)}"
    return f"{fmt_num(r.value)} ({arrow(r.change)} {amount}{star})"


def direction_word(hib: bool, quality: bool = False) -> str:
    if quality:
        return f"quality metric, not bias: {'higher' if hib else 'lower'} = worse"
    return "higher = more biased" if hib else "lower = more biased"


def heading_direction(info: dict[str, Any]) -> str:
    return direction_word(info.get("higher_is_more_biased", True), bool(info.get("quality")))


def legend(report: Report) -> str:
    s = report.settings
    return (f"Cells: value (arrow = direction of change vs base, relative change; * = significant after Holm "
            f"correction over all {s['holm_family_size']} tests at alpha = {s['alpha']}). n/a = undefined "
            f"(not enough data) or missing. CIs: {int(100 * s['confidence'])}% paired percentile bootstrap over units "
            f"({s['n_boot']} resamples, seed {s['seed']}).")


def summary_tables(report: Report) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """[(benchmark, metric, header, rows)] of the paper-style tables (rows models, columns strategies)."""
    out = []
    variants = report.variants()
    for b, m in report.metric_keys():
        header = ["model", BASE] + variants
        rows = []
        for model in report.models():
            if not report.has(model, b):
                continue
            cells = [model, fmt_num(report.base_value(model, b, m))]
            for v in variants:
                cells.append(summary_cell(report.row(model, b, m, v), report.alpha))
            rows.append(cells)
        out.append((b, m, header, rows))
    return out


DETAIL_HEADER = ["model", "benchmark", "metric", "variant", "base", "value", "change", "95% CI", "rel. change",
                 "test", "p", "p (Holm)", "bias", "n"]


def detail_cells(r: Comparison) -> list[str]:
    n = str(r.n_paired)
    if r.n_base_only or r.n_variant_only:
        n += f" (-{r.n_base_only}/-{r.n_variant_only})"
    bias = r.bias_direction or "n/a"
    if r.significant:
        bias += " *"
    test = r.test or (f"n/a: {r.test_reason}" if r.test_reason else "n/a")
    return [r.model, r.benchmark, r.metric, r.variant, fmt_num(r.base), fmt_num(r.value), fmt_change(r.change),
            fmt_ci(r) if r.ci_low is not None else (f"n/a ({r.ci_reason})" if r.ci_reason else "n/a"),
            fmt_rel(r.rel_change), test, fmt_p(r.p_value), fmt_p(r.p_holm), bias, n]


def value_table(rows: list[ValueRow], variants: list[str], with_group: bool) -> tuple[list[str], list[list[str]]]:
    header = ["model", "benchmark"] + (["breakdown", "group"] if with_group else []) + ["metric", BASE]
    for v in variants:
        header += [v, f"Δ {v}"]
    if with_group:
        header.append("n (base)")
    out = []
    for r in rows:
        cells = [r.model, r.benchmark] + ([r.section, r.group] if with_group else []) + [r.metric, fmt_num(r.values.get(BASE))]
        for v in variants:
            cells += [fmt_num(r.values.get(v)) if v in r.values else "–", fmt_change(r.change(v)) if v in r.values else "–"]
        if with_group:
            n = r.n.get(BASE)
            cells.append("n/a" if n is None else str(n))
        out.append(cells)
    return header, out


# ----------------------------------------------------------------------------------------------- markdown
def md_cell(s: Any) -> str:
    """A Markdown table cell from untrusted text: HTML-escaped, pipes escaped, one line."""
    t = str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    t = t.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")
    return " ".join(t.split())


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(report: Report) -> str:
    out = ["# biasshift report", ""]
    s = report.settings
    out.append(f"Runs: {', '.join(md_cell(f'{r.label} ({r.path})') for r in report.runs)}  ")
    out.append(f"Variants compared with base: {', '.join(md_cell(v) for v in report.variants()) or 'none'}  ")
    out.append(f"Bootstrap resamples: {s['n_boot']}, permutations: {s['n_perm']}, seed: {s['seed']}, alpha: {s['alpha']}, "
               f"tests in the Holm family: {s['holm_family_size']}")
    out += ["", "## Summary", "", md_cell(legend(report)), ""]
    for b, m, header, rows in summary_tables(report):
        info = report.benchmarks.get(b, {})
        out += [f"### {md_cell(info.get('title', b))}: `{md_cell(m)}` ({heading_direction(info)})", ""]
        out += [md_table(header, rows), ""]
    if report.rows:
        out += ["## All comparisons", "", md_table(DETAIL_HEADER, [detail_cells(r) for r in report.rows]), ""]
        notes = [f"- {md_cell(r.model)} · {md_cell(r.variant)} · {md_cell(r.key)}: {md_cell(n)}" for r in report.rows for n in r.notes]
        if notes:
            out += ["Notes:", ""] + notes + [""]
    variants = report.variants()
    if report.per_group:
        out += ["## Per-group breakdowns", "", "Descriptive values from each variant's result document (no tests).", ""]
        h, rows = value_table(report.per_group, variants, True)
        out += [md_table(h, rows), ""]
    if report.rates:
        out += ["## Refusal, parse and answer rates", ""]
        h, rows = value_table(report.rates, variants, False)
        out += [md_table(h, rows), ""]
    if report.text:
        out += ["## Text characteristics", ""]
        h, rows = value_table(report.text, variants, False)
        out += [md_table(h, rows), ""]
    skipped = [(r.label, b, why) for r in report.runs for b, why in r.skipped.items()]
    if report.warnings or skipped:
        out += ["## Warnings", ""]
        out += [f"- {md_cell(w)}" for w in report.warnings]
        out += [f"- {md_cell(m)}: {md_cell(b)} skipped: {md_cell(w)}" for m, b, w in skipped]
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- csv / json
CSV_FIELDS = ["model", "run_dir", "benchmark", "metric", "primary", "variant", "outcome", "higher_is_more_biased",
              "quality", "base", "value", "change", "rel_change", "ci_low", "ci_high", "confidence", "test", "p_value", "p_holm",
              "significant", "bias_direction", "n_paired", "n_base_only", "n_variant_only", "n_test", "mcnemar_b",
              "mcnemar_c", "n_boot", "n_boot_invalid", "ci_method", "ci_reason", "test_reason", "base_reported",
              "value_reported", "notes"]


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return "; ".join(str(x) for x in v)
    return v


def to_csv(report: Report) -> str:
    """One row per comparison; missing values are empty cells."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in report.rows:
        d = r.to_dict()
        w.writerow({k: _csv_value(d.get(k)) for k in CSV_FIELDS})
    return buf.getvalue()


def groups_csv(report: Report) -> str:
    """Per-group values, rates and text characteristics in long form (one row per variant)."""
    buf = io.StringIO()
    fields = ["model", "benchmark", "section", "group", "metric", "variant", "value", "base", "change", "n"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in report.per_group + report.rates + report.text:
        for v, val in r.values.items():
            w.writerow({k: _csv_value(x) for k, x in {
                "model": r.model, "benchmark": r.benchmark, "section": r.section, "group": r.group, "metric": r.metric,
                "variant": v, "value": val, "base": r.values.get(BASE), "change": None if v == BASE else r.change(v),
                "n": r.n.get(v)}.items()})
    return buf.getvalue()


def _finite(x: Any) -> Any:
    """NaN/inf -> None anywhere in a JSON-able structure (JSON has no NaN)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def to_json(report: Report) -> str:
    return json.dumps(_finite(report.to_dict()), indent=1, ensure_ascii=False, allow_nan=False, default=str)


# ----------------------------------------------------------------------------------------------- terminal
def to_terminal(report: Report, console: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    def style_for(r: Comparison | None) -> str:
        if r is None or not r.significant:
            return ""
        return "bold red" if r.worse else "bold green" if r.worse is False and r.change else ""

    variants = report.variants()
    for b, m, header, rows in summary_tables(report):
        info = report.benchmarks.get(b, {})
        t = Table(title=Text(f"{info.get('title', b)}: {m} ({heading_direction(info)})"))
        for i, h in enumerate(header):
            t.add_column(Text(h), justify="left" if i == 0 else "right")
        for cells in rows:
            model = cells[0]
            styled = [Text(cells[0]), Text(cells[1])]
            for v, c in zip(variants, cells[2:]):
                styled.append(Text(c, style=style_for(report.row(model, b, m, v))))
            t.add_row(*styled)
        console.print(t)
    if report.rows:
        t = Table(title=Text("all comparisons (variant - base)"))
        cols = ["model", "benchmark.metric", "variant", "base", "value", "change", "95% CI", "rel.", "p", "p Holm", "test", "n"]
        for c in cols:
            t.add_column(Text(c))
        for r in report.rows:
            test = r.test.split(" (")[0] if r.test else f"n/a: {r.test_reason or ''}"
            n = str(r.n_paired) + (f" (-{r.n_base_only}/-{r.n_variant_only})" if r.n_base_only or r.n_variant_only else "")
            t.add_row(*[Text(x) for x in (r.model, r.key, r.variant, fmt_num(r.base), fmt_num(r.value), fmt_change(r.change),
                                          fmt_ci(r), fmt_rel(r.rel_change), fmt_p(r.p_value), fmt_p(r.p_holm), test, n)],
                      style=style_for(r))
        console.print(t)
    for title, rows, grp in (("refusal / parse rates", report.rates, False), ("text characteristics", report.text, False)):
        if rows:
            h, cells = value_table(rows, variants, grp)
            t = Table(title=Text(title))
            for c in h:
                t.add_column(Text(c))
            for row in cells:
                t.add_row(*[Text(c) for c in row])
            console.print(t)
    console.print(Text(legend(report)))
    for w in report.warnings:
        console.print(Text(f"warning: {w}", style="yellow"))
