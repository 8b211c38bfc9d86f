"""Matplotlib figures for the HTML report, returned as PNG bytes (object API only: no pyplot state).

Labels come from run directories (model, group and country names), so mathtext parsing is turned off
and ``$`` is escaped: a name can never be interpreted as markup.
"""

from __future__ import annotations

import io
import math
from contextlib import contextmanager
from typing import Iterator

from .compare import BASE, Report, ValueRow
from .render import fmt_num

MANY_GROUPS = 25  # breakdowns with more groups (countries) get a horizontal bar chart
MAX_BARS = 60


@contextmanager
def _rc() -> Iterator[None]:
    import matplotlib

    rc = {"font.size": 9, "axes.titlesize": 10, "svg.fonttype": "none"}
    if "text.parse_math" in matplotlib.rcParams:
        rc["text.parse_math"] = False
    with matplotlib.rc_context(rc):
        yield


def _t(s: object) -> str:
    return str(s).replace("$", r"\$")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def _row_label(report: Report, model: str, variant: str) -> str:
    return variant if len(report.runs) == 1 else f"{model} · {variant}"


def heatmap_matrix(report: Report):
    """(columns, rows, colour values, labels) of the heatmap. Only Holm-significant cells get a colour value:
    +-|relative change of the bias measure| in % (distance from neutral where declared), red = more biased;
    every other cell is NaN (drawn grey) and its label says 'n.s.'. The label is the signed relative change."""
    import numpy as np

    rows = [r for r in report.rows if r.group is None]
    keys = list(dict.fromkeys((r.benchmark, r.metric) for r in rows))
    ylab = list(dict.fromkeys((r.model, r.variant) for r in rows))
    vals = np.full((len(ylab), len(keys)), np.nan)
    ann = [["n/a"] * len(keys) for _ in ylab]
    for r in rows:
        i, j = ylab.index((r.model, r.variant)), keys.index((r.benchmark, r.metric))
        if r.rel_change is not None:
            ann[i][j] = f"{100 * r.rel_change:+.1f}%"
        elif r.change is not None:
            ann[i][j] = f"Δ {fmt_num(r.change)}"
        else:
            continue
        if not r.significant:
            ann[i][j] += " n.s."
            continue
        ann[i][j] += "*"
        size = r.bias_rel_change
        mag = 100.0 if size is None else min(100.0, 100 * abs(size))  # a change from 0 (or from neutral) saturates
        vals[i, j] = mag if r.worse else -mag
    return keys, ylab, vals, ann


def heatmap(report: Report) -> bytes | None:
    """% change per (model · strategy) x benchmark metric; colour (significant cells only) = bias direction."""
    import numpy as np

    keys, ylab, vals, ann = heatmap_matrix(report)
    if not keys or not ylab:
        return None
    with _rc():
        finite = vals[np.isfinite(vals)]
        vmax = min(100.0, max(1.0, float(np.abs(finite).max()))) if finite.size else 1.0  # saturates at +-100%
        fig = _figure(1.7 * len(keys) + 3, 0.45 * len(ylab) + 1.8)
        ax = fig.add_subplot()
        import matplotlib

        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#dddddd")
        im = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto")
        def xlab(b: str, m: str) -> str:
            info = report.benchmarks.get(b, {})
            return (b if m == info.get("primary_metric") else f"{b}.{m}") + (" (quality)" if info.get("quality") else "")

        ax.set_xticks(range(len(keys)), [_t(xlab(b, m)) for b, m in keys], rotation=30, ha="right")
        ax.set_yticks(range(len(ylab)), [_t(_row_label(report, m, v)) for m, v in ylab])
        for i in range(len(ylab)):
            for j in range(len(keys)):
                dark = bool(np.isfinite(vals[i, j]) and abs(vals[i, j]) > 0.55 * vmax)
                ax.text(j, i, _t(ann[i][j]), ha="center", va="center", fontsize=8, color="white" if dark else "black")
        cb = fig.colorbar(im, ax=ax)
        cb.set_label("% change of the bias measure\n(significant only): red = more bias\nor worse quality, blue = less")
        ax.set_title("relative change vs base\ncoloured = significant after Holm (*); grey = n.s. or n/a")
        return _png(fig)


def forest(report: Report) -> bytes | None:
    """Change with its bootstrap CI, one panel per benchmark metric (scales differ between metrics)."""
    main = [r for r in report.rows if r.group is None]
    keys = list(dict.fromkeys((r.benchmark, r.metric) for r in main))
    if not keys:
        return None
    with _rc():
        heights = [max(1, len([r for r in main if (r.benchmark, r.metric) == k])) for k in keys]
        fig = _figure(7.5, sum(0.35 * h + 0.9 for h in heights))
        axes = fig.subplots(len(keys), 1, squeeze=False, gridspec_kw={"height_ratios": [h + 1.5 for h in heights]})[:, 0]
        for ax, (b, m) in zip(axes, keys):
            rows = [r for r in main if (r.benchmark, r.metric) == (b, m)]
            labels = []
            for y, r in enumerate(rows):
                labels.append(_t(_row_label(report, r.model, r.variant)))
                c = r.bias_change
                if c is None:
                    ax.text(0, y, "n/a", ha="center", va="center", color="#777777")
                    continue
                color = ("#b2182b" if r.worse else "#2166ac" if c else "#444444") if r.significant else "#888888"
                lo, hi = r.bias_ci
                if lo is not None and hi is not None:
                    ax.plot([lo, hi], [y, y], color=color, lw=2)
                ax.plot([c], [y], marker="o", ms=7, color=color, mfc=color if r.significant else "white")
            ax.axvline(0, color="#888888", lw=1, ls="--")
            ax.set_yticks(range(len(rows)), labels)
            ax.set_ylim(len(rows) - 0.5, -0.5)
            neutral = rows[0].neutral if rows else None
            what = f"|{m} - {neutral:g}| (distance from neutral)" if neutral is not None else m
            ax.set_title(_t(f"{b}: change in {what}, variant - base, {int(100 * report.settings['confidence'])}% CI; "
                            "filled = significant"))
        fig.tight_layout()
        return _png(fig)


def section_metric(rows: list[ValueRow], primary: str | None) -> str:
    """The metric plotted for one breakdown: the benchmark's primary metric if the groups report it, else the first."""
    metrics = list(dict.fromkeys(r.metric for r in rows))
    return primary if primary in metrics else metrics[0]


def is_many(section: str, rows: list[ValueRow]) -> bool:
    """Breakdowns drawn as horizontal bars: countries, and anything with more than MANY_GROUPS groups."""
    return section == "country" or len({r.group for r in rows}) > MANY_GROUPS


def group_bars(report: Report, model: str, benchmark: str, rows: list[ValueRow]) -> bytes | None:
    """Grouped bars (one bar per variant), one panel per breakdown with few groups (its main metric only)."""
    import numpy as np

    primary = report.benchmarks.get(benchmark, {}).get("primary_metric")
    panels: dict[tuple[str, str], list[ValueRow]] = {}
    for sec in dict.fromkeys(r.section for r in rows):
        srows = [r for r in rows if r.section == sec]
        if is_many(sec, srows):
            continue
        m = section_metric(srows, primary)
        panels[(sec, m)] = [r for r in srows if r.metric == m]
    if not panels:
        return None
    with _rc():
        variants = [BASE] + [v for v in report.variants() if any(v in r.values for r in rows)]
        fig = _figure(8, 2.6 * len(panels) + 0.5)
        axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
        width = 0.8 / len(variants)
        for ax, ((section, metric), prs) in zip(axes, panels.items()):
            x = np.arange(len(prs))
            for k, v in enumerate(variants):
                ys = [r.values.get(v) for r in prs]
                ax.bar(x + (k - (len(variants) - 1) / 2) * width, [np.nan if y is None else y for y in ys], width, label=_t(v))
            ax.set_xticks(x, [_t(r.group) for r in prs], rotation=30 if len(prs) > 6 else 0, ha="right" if len(prs) > 6 else "center")
            ax.set_title(_t(f"{model} · {benchmark}: {metric} by {section}"))
            ax.legend(fontsize=7, ncols=min(4, len(variants)))
        fig.tight_layout()
        return _png(fig)


def country_bars(report: Report, model: str, benchmark: str, rows: list[ValueRow], metric: str | None = None) -> bytes | None:
    """Horizontal bars per country (breakdowns with many groups), sorted by the base value."""
    import numpy as np

    if not rows:
        return None
    metric = metric or rows[0].metric
    rows = [r for r in rows if r.metric == metric]
    variants = [BASE] + [v for v in report.variants() if any(v in r.values for r in rows)]
    note = ""
    if len(rows) > MAX_BARS:
        first = variants[1] if len(variants) > 1 else None

        def key(r: ValueRow) -> float:
            c = r.change(first) if first else r.values.get(BASE)
            return -abs(c) if c is not None else math.inf

        rows = sorted(rows, key=key)[:MAX_BARS]
        note = f" ({MAX_BARS} groups with the largest change shown)"
    rows = sorted(rows, key=lambda r: (r.values.get(BASE) is None, r.values.get(BASE) or 0.0))
    with _rc():
        fig = _figure(8, 0.22 * len(rows) * max(1, len(variants) / 2) + 1.5)
        ax = fig.add_subplot()
        y = np.arange(len(rows))
        h = 0.8 / len(variants)
        for k, v in enumerate(variants):
            xs = [r.values.get(v) for r in rows]
            ax.barh(y + (k - (len(variants) - 1) / 2) * h, [np.nan if x is None else x for x in xs], h, label=_t(v))
        ax.set_yticks(y, [_t(r.group) for r in rows], fontsize=7)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlabel(_t(metric))
        ax.set_title(_t(f"{model} · {benchmark}: {metric} by {rows[0].section}{note}"))
        ax.legend(fontsize=7)
        fig.tight_layout()
        return _png(fig)


def tradeoff(report: Report, model: str, benchmark: str) -> bytes | None:
    """Bias change (with CI) against memory saved and against speed-up vs base; Pareto-efficient variants ringed."""
    pts = [t for t in report.tradeoffs if t.model == model and t.benchmark == benchmark]
    axes_spec = [(a, lab) for a, lab in (("memory_saved", "memory saved vs base (%)"), ("speedup", "speed-up vs base (x)"))
                 if any(getattr(t, a) is not None and t.bias_change is not None for t in pts)]
    if not axes_spec:
        return None
    with _rc():
        fig = _figure(4.2 * len(axes_spec) + 0.6, 3.4)
        axes = fig.subplots(1, len(axes_spec), squeeze=False)[0]
        neutral = report.benchmarks.get(benchmark, {}).get("neutral")
        for ax, (attr, xlabel) in zip(axes, axes_spec):
            scale = 100.0 if attr == "memory_saved" else 1.0
            ref = 0.0 if attr == "memory_saved" else 1.0
            ax.plot([ref], [0.0], marker="s", color="#444444", ms=6)
            ax.annotate("base", (ref, 0.0), textcoords="offset points", xytext=(4, 4), fontsize=7)
            for t in pts:
                x = getattr(t, attr)
                if x is None or t.bias_change is None:
                    continue
                x *= scale
                color = "#b2182b" if t.significant and t.bias_change > 0 else "#2166ac" if t.significant else "#888888"
                if t.ci_low is not None and t.ci_high is not None:
                    ax.plot([x, x], [t.ci_low, t.ci_high], color=color, lw=1.5)
                pareto = t.pareto_memory if attr == "memory_saved" else t.pareto_speed
                ax.plot([x], [t.bias_change], marker="o", ms=7, color=color, mfc=color if t.significant else "white")
                if pareto:
                    ax.plot([x], [t.bias_change], marker="o", ms=14, mfc="none", mec="#1a9641", mew=2)
                ax.annotate(_t(t.variant + (" (Pareto)" if pareto else "")), (x, t.bias_change), textcoords="offset points",
                            xytext=(5, -10), fontsize=7)
            ax.axhline(0, color="#888888", lw=1, ls="--")
            ax.set_xlabel(_t(xlabel))
            ax.set_ylabel(_t("change of |value - %g|" % neutral if neutral is not None else "bias change"))
        fig.suptitle(_t(f"{model} · {benchmark}: savings vs bias change (CI bars; green ring = Pareto-efficient)"), fontsize=9)
        fig.tight_layout()
        return _png(fig)
