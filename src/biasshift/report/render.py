"""Render a :class:`~.compare.Report` as a terminal table (rich), Markdown, CSV and JSON.

Conventions shared by every format (and the HTML in :mod:`.html`):
- a missing value (undefined metric, no result) is written ``n/a`` (CSV: an empty cell, JSON: null),
  never as a number;
- summary cells read ``value (arrow, % change)``: the arrow is the direction of the change of the metric
  (up, down, = for none), ``*`` marks a change significant after Holm's correction at alpha; where the
  relative change is undefined (base value 0) the absolute change is shown instead;
- whether a change means *more* or *less* bias comes from the distance to the benchmark's ``neutral``
  point where it declares one (CrowS-Pairs 50, BBQ 0, dialect gap 0), else from ``higher_is_more_biased``;
  for a quality anchor (``is_quality_metric``, e.g. perplexity) it means worse or better quality instead;
- only a change significant after Holm is called more or less biased (or coloured); any other reads
  "no significant change" with its CI; an undefined value says why (notes, unusable-answer rates).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
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


def direction_word(hib: bool, quality: bool = False, neutral: float | None = None) -> str:
    if quality:
        return f"quality metric, not bias: {'higher' if hib else 'lower'} = worse"
    if neutral is not None:
        return f"{neutral:g} = unbiased; farther from {neutral:g} = more biased"
    return "higher = more biased" if hib else "lower = more biased"


def heading_direction(info: dict[str, Any]) -> str:
    return direction_word(info.get("higher_is_more_biased", True), bool(info.get("quality")), info.get("neutral"))


def fmt_bias_ci(r: Comparison) -> str:
    lo, hi = r.bias_ci
    return "n/a" if lo is None or hi is None else f"[{fmt_change(lo)}, {fmt_change(hi)}]"


def verdict(r: Comparison) -> str:
    """'more biased *' only when Holm-significant; else 'no significant change (95% CI [..])'; n/a says why."""
    if r.bias_change is None:
        why = r.undefined_reason or r.test_reason or r.ci_reason
        return f"n/a: {why}" if why else "n/a"
    pct = int(round(100 * r.confidence))
    what = f" in |{r.metric} - {r.neutral:g}|" if r.neutral is not None else ""
    if not r.significant:
        if r.p_holm is None:
            return f"not tested ({r.test_reason or 'no test'})" if r.test_reason else "not tested"
        return f"no significant change{what} ({pct}% CI {fmt_bias_ci(r)})"
    return f"{r.bias_direction} *"


def undefined_notes(report: Report, benchmark: str, metric: str) -> list[str]:
    """'model · variant: why' for every comparison of this metric whose value is undefined."""
    out = []
    for r in report.rows:
        if r.benchmark == benchmark and r.metric == metric and r.group is None and (r.value is None or r.base is None):
            why = r.undefined_reason or r.ci_reason or r.test_reason or "no value"
            out.append(f"{r.model} · {r.variant}: {why}")
    return out


def legend(report: Report) -> str:
    s = report.settings
    return (f"Cells: value (arrow = direction of change vs base, relative change; * = significant after Holm "
            f"correction over all {s['holm_family_size']} tests at alpha = {s['alpha']}); only * changes are called more or "
            f"less biased and coloured, any other reads 'no significant change' with its CI. Where a benchmark declares a "
            f"neutral point, bias = |value - neutral|: the test, the * and the colours refer to the change of that distance, "
            f"the cells show the signed values. n/a = undefined (the reason is listed) or missing. CIs: {int(100 * s['confidence'])}% paired percentile bootstrap over units "
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
                 "|value - neutral|", "test", "p", "p (Holm)", "bias", "n"]


def detail_cells(r: Comparison) -> list[str]:
    n = str(r.n_paired)
    if r.n_base_only or r.n_variant_only:
        n += f" (-{r.n_base_only}/-{r.n_variant_only})"
    bias = verdict(r)
    test = r.test or (f"n/a: {r.test_reason}" if r.test_reason else "n/a")
    dist = "" if r.neutral is None else (f"{fmt_num(r.dist_base)} → {fmt_num(r.dist_value)} ({fmt_change(r.dist_change)}, "
                                          f"CI {fmt_bias_ci(r)})")
    return [r.model, r.benchmark, r.metric_label, r.variant, fmt_num(r.base), fmt_num(r.value), fmt_change(r.change),
            fmt_ci(r) if r.ci_low is not None else (f"n/a ({r.ci_reason})" if r.ci_reason else "n/a"),
            fmt_rel(r.rel_change), dist, test, fmt_p(r.p_value), fmt_p(r.p_holm), bias, n]


# ----------------------------------------------------------------------------------------------- new sections
def consistency_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """Strategy x benchmark rows, one column per model: each model's change of the bias measure."""
    models = report.models()
    header = ["strategy", "benchmark", "metric"] + models + ["across models"]
    rows = []
    for c in report.consistency():
        cells = [c["variant"], c["benchmark"], c["metric"]]
        for m in models:
            r = report.row(m, c["benchmark"], c["metric"], c["variant"])
            if r is None:
                cells.append("–")
            elif r.bias_change is None:
                cells.append("n/a")
            else:
                tag = f"{r.bias_direction} *" if r.significant else "n.s."
                cells.append(f"{arrow(r.change)} {fmt_change(r.change)} ({tag}, p Holm {fmt_p(r.p_holm)})")
        v = c["verdict"]
        cells.append({"disagree": "DISAGREE: significant effects in opposite directions",
                      "agree": f"agree ({c['n_significant']} of {c['n_models']} significant)"}.get(v, v))
        rows.append(cells)
    return header, rows


EFF_HEADER = ["model", "variant", "memory", "memory saved", "build time", "throughput (tokens/s, speed-up vs base)",
              "perplexity"]


def efficiency_rows(report: Report) -> list[list[str]]:
    from .efficiency import fmt_bytes, fmt_pct, fmt_x

    out = []
    for e in report.efficiency:
        tp = [f"{k.kind}: {k.tokens_per_s:.1f} tok/s ({fmt_x(k.speedup, 'no base figure')}; {k.requests} requests, "
              f"{k.tokens} tokens, {k.seconds:.1f} s)" if k.tokens_per_s is not None else f"{k.kind}: not measured"
              for k in e.throughput.values()]
        if e.shared_with_base:
            tp.append(f"answers shared with base for {', '.join(e.shared_with_base)} (no own throughput)")
        if e.not_measured:
            tp.append(f"not measured for {', '.join(e.not_measured)} (run written before throughput was recorded)")
        ppl = "not run" if e.perplexity is None else (fmt_num(e.perplexity)
                                                      + ("" if e.perplexity_rel_change is None else f" ({fmt_rel(e.perplexity_rel_change)})"))
        out.append([e.model, e.variant, fmt_bytes(e.memory_bytes), fmt_pct(e.memory_saved) if e.variant != BASE else "–",
                    "not measured" if e.build_seconds is None else f"{e.build_seconds:.1f} s", "; ".join(tp) or "not measured", ppl])
    return out


TRADE_HEADER = ["model", "benchmark", "variant", "memory saved", "speed-up", "bias change [CI]", "significant",
                "Pareto (memory)", "Pareto (speed)", "missing"]


def tradeoff_rows(report: Report) -> list[list[str]]:
    from .efficiency import fmt_pct, fmt_x

    def par(x: bool | None) -> str:
        return "n/a" if x is None else "yes" if x else "no"

    out = []
    for t in report.tradeoffs:
        ci = "n/a" if t.ci_low is None or t.ci_high is None else f"[{fmt_change(t.ci_low)}, {fmt_change(t.ci_high)}]"
        out.append([t.model, t.benchmark, t.variant, fmt_pct(t.memory_saved), fmt_x(t.speedup), f"{fmt_change(t.bias_change)} {ci}",
                    "yes" if t.significant else "no", par(t.pareto_memory), par(t.pareto_speed), "; ".join(t.why_missing)])
    return out


DIFF_HEADER = ["#", "unit", "item", "group", "flipped", "size", "change", "base", "variant", "text"]


def diff_rows(d: Any) -> list[list[str]]:
    return [[str(i + 1), r.unit, r.item, r.group, "yes" if r.flipped else "no", fmt_num(r.size), r.change, r.base, r.variant, r.text]
            for i, r in enumerate(d.rows)]


def diff_title(d: Any) -> str:
    return (f"{d.model} · {d.variant} · {d.benchmark}: {d.n_flipped} of {d.n_paired} paired units flipped, "
            f"{d.n_changed} changed; top {len(d.rows)} ranked by flips, then {d.size_label or 'size'}")


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
_SCHEME = re.compile(r"\b(javascript|vbscript|data|file)(\s*):", re.IGNORECASE)


def md_cell(s: Any) -> str:
    """A Markdown table cell from untrusted text: HTML-escaped, pipes escaped, one line, and inert.

    Square brackets are backslash-escaped so no link or image (``[x](javascript:...)``,
    ``![](https://remote/pixel.png)``, reference links) can form, and the colon of a ``javascript:``,
    ``vbscript:``, ``data:`` or ``file:`` scheme becomes ``&#58;`` so no renderer's autolinker makes it
    active either (docs/reliability.md).
    """
    t = str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    t = t.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")
    t = t.replace("[", "\\[").replace("]", "\\]")
    t = _SCHEME.sub(lambda m: m.group(1) + m.group(2) + "&#58;", t)
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
        und = undefined_notes(report, b, m)
        if und:
            out += ["Undefined (n/a):", ""] + [f"- {md_cell(u)}" for u in und] + [""]
    cons = consistency_table(report)
    if cons[1]:
        out += ["## Consistency across models", "",
                "Each model's change of the bias measure per strategy; DISAGREE flags significant effects in opposite directions.", "",
                md_table(*cons), ""]
    if report.efficiency:
        out += ["## Efficiency (measured in the run)", "", md_table(EFF_HEADER, efficiency_rows(report)), ""]
    if report.tradeoffs:
        out += ["### Trade-off: what a variant saves vs its bias change", "",
                "Bias change = change of |value - neutral| where a neutral point is declared. Pareto: no other variant "
                "(base included) saves at least as much with at most the same |bias change|, and strictly better on one.", "",
                md_table(TRADE_HEADER, tradeoff_rows(report)), ""]
    if report.diffs:
        out += ["## What changed, item by item", ""]
        for d in report.diffs:
            out += [f"### {md_cell(diff_title(d))}", ""]
            if d.note:
                out += [md_cell(d.note), ""]
            if d.rows:
                out += [md_table(DIFF_HEADER, diff_rows(d)), ""]
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
              "value_reported", "notes", "neutral", "dist_base", "dist_value", "dist_change", "dist_rel_change", "dist_ci_low",
              "dist_ci_high", "bias_change", "estimate_direction", "group_field", "group", "undefined_reason"]


_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)")


def csv_safe(text: str) -> str:
    """Neutralise spreadsheet formula injection (OWASP): a cell starting with = + - @ tab or CR gets a leading
    single quote, unless it is a plain number such as -0.5 (which stays numeric)."""
    if text and text[0] in "=+-@\t\r" and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool) or isinstance(v, int):
        return v
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return csv_safe("; ".join(str(x) for x in v))
    return csv_safe(str(v))


def records_csv(records: Any, fields: list[str]) -> str:
    """CSV of records with ``to_dict()``, one row each, columns ``fields``; missing values are empty cells."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in records:
        d = r.to_dict()
        w.writerow({k: _csv_value(d.get(k)) for k in fields})
    return buf.getvalue()


def to_csv(report: Report) -> str:
    """One row per comparison; missing values are empty cells."""
    return records_csv(report.rows, CSV_FIELDS)


def efficiency_csv(report: Report) -> str:
    """One row per (model, variant, request kind), then one per trade-off point (section column)."""
    buf = io.StringIO()
    fields = ["section", "model", "variant", "benchmark", "kind", "memory_footprint_bytes", "memory_saved", "build_seconds",
              "requests", "seconds", "forward_tokens", "generated_tokens", "tokens_per_s", "speedup", "perplexity",
              "bias_change", "ci_low", "ci_high", "significant", "pareto_memory", "pareto_speed", "note"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for e in report.efficiency:
        base = {"section": "efficiency", "model": e.model, "variant": e.variant, "memory_footprint_bytes": e.memory_bytes,
                "memory_saved": e.memory_saved, "build_seconds": e.build_seconds, "perplexity": e.perplexity}
        kinds = list(e.throughput.values())
        note = "; ".join(([f"answers shared with base: {', '.join(e.shared_with_base)}"] if e.shared_with_base else [])
                         + ([f"throughput not measured: {', '.join(e.not_measured)}"] if e.not_measured else []))
        if not kinds:
            w.writerow({k: _csv_value(v) for k, v in {**base, "note": note or "throughput not measured"}.items()})
        for k in kinds:
            w.writerow({k2: _csv_value(v) for k2, v in {**base, "kind": k.kind, "requests": k.requests, "seconds": k.seconds,
                                                        "forward_tokens": k.forward_tokens, "generated_tokens": k.generated_tokens,
                                                        "tokens_per_s": k.tokens_per_s, "speedup": k.speedup, "note": note}.items()})
    for t in report.tradeoffs:
        w.writerow({k: _csv_value(v) for k, v in {
            "section": "tradeoff", "model": t.model, "variant": t.variant, "benchmark": t.benchmark, "kind": t.kind,
            "memory_saved": t.memory_saved, "speedup": t.speedup, "bias_change": t.bias_change, "ci_low": t.ci_low,
            "ci_high": t.ci_high, "significant": t.significant, "pareto_memory": t.pareto_memory, "pareto_speed": t.pareto_speed,
            "note": "; ".join(t.why_missing)}.items()})
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


def finite_json(x: Any) -> Any:
    """NaN/inf -> None anywhere in a JSON-able structure (JSON has no NaN)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_json(v) for v in x]
    return x


def to_json(report: Report) -> str:
    return json.dumps(finite_json(report.to_dict()), indent=1, ensure_ascii=False, allow_nan=False, default=str)


# ----------------------------------------------------------------------------------------------- terminal
def to_terminal(report: Report, console: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    def style_for(r: Comparison | None) -> str:
        if r is None or not r.significant:
            return ""
        return "bold red" if r.worse else "bold green" if r.worse is False and r.bias_change else ""

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
        cols = ["model", "benchmark.metric", "variant", "base", "value", "change", "95% CI", "rel.", "p", "p Holm", "test", "bias", "n"]
        for c in cols:
            t.add_column(Text(c))
        for r in report.rows:
            test = r.test.split(" (")[0] if r.test else f"n/a: {r.test_reason or ''}"
            n = str(r.n_paired) + (f" (-{r.n_base_only}/-{r.n_variant_only})" if r.n_base_only or r.n_variant_only else "")
            t.add_row(*[Text(x) for x in (r.model, r.key, r.variant, fmt_num(r.base), fmt_num(r.value), fmt_change(r.change),
                                          fmt_ci(r), fmt_rel(r.rel_change), fmt_p(r.p_value), fmt_p(r.p_holm), test, verdict(r), n)],
                      style=style_for(r))
        console.print(t)
    for title, header, rows_ in (("consistency across models", *consistency_table(report)),
                                 ("efficiency (measured in the run)", EFF_HEADER, efficiency_rows(report)),
                                 ("trade-off: savings vs bias change", TRADE_HEADER, tradeoff_rows(report))):
        if rows_:
            t = Table(title=Text(title))
            for c in header:
                t.add_column(Text(c))
            for row in rows_:
                t.add_row(*[Text(c) for c in row])
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
