"""One self-contained HTML file: inline CSS, figures as inline base64 PNG, no script, no network.

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
from .render import DETAIL_HEADER, detail_cells, heading_direction, legend, summary_tables, value_table

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
"""


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
    return "worse" if r.worse else "better" if r.worse is False and r.change else ""


def _section(id_: str, title: str, body: str) -> str:
    return f'<section id="{e(id_)}"><h2>{e(title)}</h2>{body}</section>' if body else ""


def to_html(report: Report, figures: bool = True) -> str:
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
    parts.append(_section("summary", "Summary", "".join(body)))
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
        cfg = {v: {k: info.get(k) for k in ("strategy", "config", "memory_footprint_bytes", "measured", "notes") if k in info}
               for v, info in run.variant_info.items()}
        body.append(f"<details><summary>variant settings</summary><pre>{e(json.dumps(cfg, indent=1, default=str))}</pre></details>")
    if report.warnings:
        body.append("<ul>" + "".join(f"<li>{e(w)}</li>" for w in report.warnings) + "</ul>")
    parts.append(_section("runs", "Runs", "".join(body)))

    nav = "".join(f'<a href="#{i}">{t}</a>' for i, t in (("summary", "Summary"), ("comparisons", "Comparisons"),
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
