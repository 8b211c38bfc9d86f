"""One self-contained HTML file: inline CSS, figures as inline base64 PNG, no script, no network.

The item-level tables ("what changed") sort and filter without any script: every sort order is rendered
(the tables are top-k, so this is small) and radio buttons / a checkbox select, through CSS ``:checked``
rules, which order is shown and which rows are hidden (flipped only, one group).

Everything taken from a run directory (model names, group names, notes, model generations) is
untrusted and goes through :func:`e` (HTML-escaped, quotes included) before it reaches the page; a
Content-Security-Policy that forbids scripts, and any resource other than inline styles and data: images,
is a second line of defence.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from . import plots
from .compare import BASE, Comparison, Report
from .render import (DETAIL_HEADER, DIFF_HEADER, EFF_HEADER, TRADE_HEADER, consistency_table, detail_cells, diff_title,
                     efficiency_rows, heading_direction, legend, summary_tables, tradeoff_rows, undefined_notes, value_table)

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.85em}
th,td{border:1px solid #d0d0d0;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f3f3f3}td.l,th.l{text-align:left}
td.worse{background:#fbe3e3;color:#8b0000;font-weight:600}td.better{background:#e3f1fb;color:#104e8b;font-weight:600}
td.na{color:#888}
.meta,.legend,.note{color:#555;font-size:.85em}
nav a{margin-right:1em}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.5em 0}
pre{white-space:pre-wrap;word-break:break-word;background:#f7f7f7;border:1px solid #e2e2e2;padding:.5em;
 font-size:.8em;max-height:20em;overflow:auto;text-align:left;margin:0}
.gen td{min-width:15em}
details{margin:.5em 0}
td.disagree{background:#fff1cc;font-weight:600}
.diff{margin:.5em 0 1.5em}.diff .ctl{font-size:.85em;color:#333;margin:.3em 0}.diff label{margin-right:.8em;cursor:pointer}
.diff tbody{display:none}.diff td.txt{text-align:left;white-space:pre-wrap;max-width:28em;word-break:break-word}
.diff td.l{white-space:pre-wrap;max-width:18em;word-break:break-word}
.diff input.s0:checked~table tbody.s0,.diff input.s1:checked~table tbody.s1,.diff input.s2:checked~table tbody.s2,
.diff input.s3:checked~table tbody.s3{display:table-row-group}
.diff input.ff:checked~table tr.nf{display:none}
"""
MAX_FILTER_GROUPS = 30
CSS += "".join(f".diff input.g{k}:checked~table tbody tr:not(.g{k}){{display:none}}" for k in range(MAX_FILTER_GROUPS))


def e(x: Any) -> str:
    """HTML-escape any value for element content and (quoted) attribute values."""
    return html.escape("" if x is None else str(x), quote=True)


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    return f'<img alt="{e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(header: list[str], rows: list[list[str]], classes: list[list[str]] | None = None, left: int = 1) -> str:
    out = ["<table><thead><tr>"]
    out += [f'<th class="{"l" if i < left else ""}">{e(h)}</th>' for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for ri, row in enumerate(rows):
        out.append("<tr>")
        for i, c in enumerate(row):
            cls = ["l"] if i < left else []
            if classes and classes[ri][i]:
                cls.append(classes[ri][i])
            if c in ("n/a", "–"):
                cls.append("na")
            out.append(f'<td class="{" ".join(cls)}">{e(c)}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _cls(r: Comparison | None) -> str:
    if r is None or not r.significant:
        return ""
    return "worse" if r.worse else "better" if r.worse is False and r.bias_change else ""


def _section(id_: str, title: str, body: str) -> str:
    return f'<section id="{e(id_)}"><h2>{e(title)}</h2>{body}</section>' if body else ""


def _diff_table(i: int, d: Any) -> str:
    """One item-level table with CSS-only sorting (four pre-rendered orders) and filters (flipped only, group)."""
    out = [f'<div class="diff"><h3>{e(diff_title(d))}</h3>']
    if d.note:
        out.append(f'<p class="note">{e(d.note)}</p>')
    if not d.rows:
        return "".join(out) + "</div>"
    p = f"d{i}"
    orders = [("rank", list(range(len(d.rows)))),
              ("size", sorted(range(len(d.rows)), key=lambda k: -(d.rows[k].size if d.rows[k].size is not None else -1.0))),
              ("unit", sorted(range(len(d.rows)), key=lambda k: (d.rows[k].unit, d.rows[k].item))),
              ("group", sorted(range(len(d.rows)), key=lambda k: (d.rows[k].group, k)))]
    groups = list(dict.fromkeys(r.group for r in d.rows if r.group))
    out.append('<span class="ctl">sort: </span>')  # the inputs are siblings of the table, for the ~ selectors
    for k, (name, _) in enumerate(orders):
        out.append(f'<input type="radio" class="s{k}" name="{p}s" id="{p}s{k}"{" checked" if k == 0 else ""}>'
                   f'<label for="{p}s{k}">{e(name)}</label>')
    out.append(f'<span class="ctl"> · </span><input type="checkbox" class="ff" id="{p}f"><label for="{p}f">flipped only</label>')
    if 1 < len(groups) <= MAX_FILTER_GROUPS:
        out.append('<span class="ctl"> · group: </span><input type="radio" class="gall" name="' + p + 'g" id="' + p + 'gall" checked>'
                   f'<label for="{p}gall">all</label>')
        for k, g in enumerate(groups):
            out.append(f'<input type="radio" class="g{k}" name="{p}g" id="{p}g{k}"><label for="{p}g{k}">{e(g)}</label>')
    sort_col = {"#": 0, "size": 1, "unit": 2, "group": 3}
    head = []
    for h in DIFF_HEADER:
        if h in sort_col:
            head.append(f'<th class="l"><label for="{p}s{sort_col[h]}">{e(h)} ▾</label></th>')
        else:
            head.append(f'<th class="l">{e(h)}</th>')
    out.append("<table><thead><tr>" + "".join(head) + "</tr></thead>")
    for k, (_, order) in enumerate(orders):
        out.append(f'<tbody class="s{k}">')
        for idx in order:
            r = d.rows[idx]
            cls = (["nf"] if not r.flipped else []) + ([f"g{groups.index(r.group)}"] if r.group in groups else [])
            cells = [str(idx + 1), r.unit, r.item, r.group, "yes" if r.flipped else "no",
                     "n/a" if r.size is None else f"{r.size:.4g}", r.change, r.base, r.variant]
            out.append(f'<tr class="{" ".join(cls)}">' + "".join(f'<td class="l">{e(c)}</td>' for c in cells)
                       + f'<td class="txt">{e(r.text)}</td></tr>')
        out.append("</tbody>")
    out.append("</table></div>")
    return "".join(out)


def to_html(report: Report, figures: bool = True, sweep_html: str | None = None) -> str:
    """``sweep_html``: the compression-rate sweep section (``sweep.html_section``), placed after the summary."""
    s = report.settings
    variants = report.variants()
    parts: list[str] = []

    # ---- summary
    body = [f'<p class="legend">{e(legend(report))} Coloured cells: significant change towards more bias '
            f'(red) or less bias (blue); for quality metrics (perplexity), worse (red) or better (blue) quality.</p>']
    for b, m, header, rows in summary_tables(report):
        info = report.benchmarks.get(b, {})
        classes = [["", ""] + [_cls(report.row(row[0], b, m, v)) for v in variants] for row in rows]
        body.append(f"<h3>{e(info.get('title', b))}: <code>{e(m)}</code> ({e(heading_direction(info))})</h3>")
        if info.get("primary_description") and m == info.get("primary_metric"):
            body.append(f'<p class="note">{e(info["primary_description"])}</p>')
        body.append(_table(header, rows, classes))
        und = undefined_notes(report, b, m)
        if und:
            body.append('<p class="note">Undefined (n/a): ' + "; ".join(e(u) for u in und) + "</p>")
    parts.append(_section("summary", "Summary", "".join(body)))
    if sweep_html is not None:  # ---- compression-rate sweep (rendered by report/sweep.py)
        parts.append(_section("sweep", "Compression-rate sweep", sweep_html))

    # ---- consistency across models (several runs)
    ch, crows = consistency_table(report)
    if crows:
        cls = [[""] * (len(ch) - 1) + ["disagree" if r[-1].startswith("DISAGREE") else ""] for r in crows]
        parts.append(_section("consistency", "Consistency across models",
                              '<p class="note">Each model\'s change of the bias measure for the same strategy; only '
                              'significant (Holm) changes are called more/less biased. DISAGREE: significant effects in '
                              'opposite directions.</p>' + _table(ch, crows, cls, left=3)))

    # ---- efficiency and trade-off
    if report.efficiency:
        body = ['<p class="note">Measured in this run (same device and batch policy): memory footprint and build time of '
                'each variant, the engine\'s throughput per request kind (tokens = forward + generated), speed-up = base '
                'seconds per token / variant seconds per token. "not measured" = the run holds no such record.</p>',
                _table(EFF_HEADER, efficiency_rows(report), left=2)]
        if report.tradeoffs:
            body.append('<p class="note">Trade-off per benchmark: bias change (of |value - neutral| where declared) with its CI '
                        'against what the variant saves. Pareto-efficient: no other point (base included) saves at least '
                        'as much with at most the same |bias change| and is strictly better on one.</p>')
            body.append(_table(TRADE_HEADER, tradeoff_rows(report), left=3))
            if figures:
                for run in report.runs:
                    for b in run.benchmarks:
                        body.append(_img(plots.tradeoff(report, run.label, b), f"trade-off for {b}"))
        parts.append(_section("efficiency", "Efficiency and trade-off", "".join(body)))
    if figures and report.rows:
        parts.append(_section("heatmap", "Relative change (strategy x benchmark)", _img(plots.heatmap(report), "heatmap of relative change")))

    # ---- detail
    if report.rows:
        rows = [detail_cells(r) for r in report.rows]
        classes = [[""] * len(DETAIL_HEADER) for _ in rows]
        for i, r in enumerate(report.rows):
            classes[i][DETAIL_HEADER.index("bias")] = _cls(r)
        body = [_table(DETAIL_HEADER, rows, classes, left=4)]
        notes = [(r, n) for r in report.rows for n in r.notes]
        if notes:
            body.append("<details><summary>Notes</summary><ul>")
            body += [f"<li>{e(r.model)} · {e(r.variant)} · {e(r.key)}: {e(n)}</li>" for r, n in notes]
            body.append("</ul></details>")
        methods = sorted({m for r in report.rows for m in (r.test, r.ci_method) if m})
        body.append('<p class="note">Methods used: ' + "; ".join(e(m) for m in methods) + "</p>")
        if figures:
            body.append(_img(plots.forest(report), "forest plot of changes with confidence intervals"))
        parts.append(_section("comparisons", "All comparisons", "".join(body)))

    # ---- what changed, item by item
    if report.diffs:
        body = ['<p class="note">Per variant and benchmark, the items whose outcome flipped or moved most (paired by unit). '
                'Sort with the header links or the buttons, filter by flips and by group; all text is shown as plain text.</p>']
        for i, d in enumerate(report.diffs):
            body.append(_diff_table(i, d))
        parts.append(_section("diff", "What changed, item by item", "".join(body)))

    # ---- per-group breakdowns
    if report.per_group:
        body = ['<p class="note">Descriptive values from each variant\'s result document (no tests, no CIs).</p>']
        for run in report.runs:
            for b in run.benchmarks:
                rows_b = [r for r in report.per_group if r.model == run.label and r.benchmark == b]
                if not rows_b:
                    continue
                body.append(f"<h3>{e(run.label)} · {e(report.benchmarks.get(b, {}).get('title', b))}</h3>")
                if figures:
                    body.append(_img(plots.group_bars(report, run.label, b, rows_b), f"per-group values for {b}"))
                    primary = report.benchmarks.get(b, {}).get("primary_metric")
                    for sec in dict.fromkeys(r.section for r in rows_b):
                        srows = [r for r in rows_b if r.section == sec]
                        if plots.is_many(sec, srows):
                            metric = plots.section_metric(srows, primary)
                            body.append(_img(plots.country_bars(report, run.label, b, srows, metric), f"{b} {metric} by {sec}"))
                h, rows = value_table(rows_b, variants, True)
                body.append(f"<details><summary>table ({len(rows)} rows)</summary>{_table(h, rows, left=5)}</details>")
        parts.append(_section("groups", "Per-group breakdowns", "".join(body)))

    # ---- rates and text
    for id_, title, rows_v in (("rates", "Refusal, parse and answer rates", report.rates),
                               ("text", "Text characteristics", report.text)):
        if rows_v:
            h, rows = value_table(rows_v, variants, False)
            parts.append(_section(id_, title, _table(h, rows, left=3)))

    # ---- sample generations (untrusted model output)
    if report.samples:
        body = ['<p class="note">A few generations per generation benchmark, as the models wrote them '
                '(shown as plain text).</p>']
        for smp in report.samples:
            vs = [BASE] + [v for v in smp.outputs if v != BASE]
            body.append(f"<h3>{e(smp.model)} · {e(smp.benchmark)} · {e(smp.key)}</h3>")
            body.append(f"<details><summary>prompt</summary><pre>{e(smp.prompt)}</pre></details>")
            body.append('<table class="gen"><thead><tr>' + "".join(f'<th class="l">{e(v)}</th>' for v in vs) + "</tr></thead><tbody><tr>")
            for v in vs:
                texts = smp.outputs.get(v)
                if not texts:
                    body.append('<td class="l na">n/a</td>')
                    continue
                extra = f'<p class="note">+{len(texts) - 1} more sample(s)</p>' if len(texts) > 1 else ""
                body.append(f'<td class="l"><pre>{e(texts[0])}</pre>{extra}</td>')
            body.append("</tr></tbody></table>")
        parts.append(_section("samples", "Sample generations", "".join(body)))

    # ---- provenance and warnings
    body = []
    for run in report.runs:
        body.append(f"<h3>{e(run.label)}</h3><p class=\"meta\">model <code>{e(run.model_id)}</code>, run directory "
                    f"<code>{e(run.path)}</code>; variants: {e(', '.join(run.variants))}; benchmarks: {e(', '.join(run.benchmarks))}</p>")
        for b, why in run.skipped.items():
            body.append(f'<p class="note">skipped {e(b)}: {e(why)}</p>')
        cfg = {v: {k: info.get(k) for k in ("strategy", "config", "memory_footprint_bytes", "build_seconds", "measured", "notes")
                   if k in info}
               for v, info in run.variant_info.items()}
        body.append(f"<details><summary>variant settings</summary><pre>{e(json.dumps(cfg, indent=1, default=str))}</pre></details>")
    if report.warnings:
        body.append("<ul>" + "".join(f"<li>{e(w)}</li>" for w in report.warnings) + "</ul>")
    parts.append(_section("runs", "Runs", "".join(body)))

    nav = "".join(f'<a href="#{i}">{t}</a>' for i, t in (("summary", "Summary"), ("sweep", "Sweep"), ("consistency", "Consistency"),
                                                          ("efficiency", "Efficiency"), ("diff", "What changed"),
                                                          ("comparisons", "Comparisons"),
                                                          ("groups", "Groups"), ("rates", "Rates"), ("text", "Text"),
                                                          ("samples", "Samples"), ("runs", "Runs")) if f'id="{i}"' in "".join(parts))
    meta = (f"{len(report.runs)} run(s); strategies: {', '.join(variants) or 'none (base only)'}; "
            f"{s['n_boot']} bootstrap resamples, {s['n_perm']} permutations, seed {s['seed']}, alpha {s['alpha']}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>biasshift report</title><style>{CSS}</style></head><body>"
        f'<h1>biasshift report</h1><p class="meta">{e(meta)}</p><nav>{nav}</nav>'
        + "".join(parts)
        + "</body></html>\n"
    )
