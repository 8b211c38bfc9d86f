"""What changed, item by item: the units whose outcome flipped or moved most between base and a variant.

For one run x variant x benchmark, the unit records of ``units/base/<benchmark>.jsonl`` and
``units/<variant>/<benchmark>.jsonl`` are paired by their ``unit`` field (as the comparison does), each
pair is turned into one or more :class:`DiffRow` (a CrowS pair, a DiscrimEval question, a BBQ example,
a generation prompt) with a readable base and variant outcome and a size of the change, and the rows
are ranked: flipped outcomes first, then by the size of the change. Item texts that the unit records do
not hold (CrowS sentences, prompts, BBQ contexts and answers) are read from the run's ``store.sqlite``
(read-only; the stored requests hold them). Everything here is untrusted text: renderers escape it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import benchmarks as bench_registry
from ..errors import BiasshiftError, ConfigError
from ..store import StoreReader
from .load import BASE, RunData, load_run

MAX_TEXT = 600


@dataclass
class DiffRow:
    unit: str
    item: str  # the item inside the unit (BBQ example, DiscrimEval profile), '' when the unit is the item
    group: str  # a group label for filtering (bias type, category, topic); '' when none
    flipped: bool  # the item's outcome (preference, answer, decision) changed
    size: float | None  # the size of the change that ranks the rows
    text: str  # the item (sentences, question, prompt): untrusted
    base: str  # base's outcome, readable (untrusted: may hold model output)
    variant: str
    change: str  # the change, readable
    #: fills the texts in place once the row is among the top-k (lookups in the store are deferred)
    pending: Callable[["DiffRow"], None] | None = field(default=None, repr=False, compare=False)


@dataclass
class ItemDiff:
    model: str
    run_dir: str
    benchmark: str
    variant: str
    size_label: str  # what `size` measures
    n_paired: int = 0
    n_flipped: int = 0
    n_changed: int = 0  # rows with a nonzero change (flipped or moved)
    rows: list[DiffRow] = field(default_factory=list)  # the top-k, ranked
    note: str | None = None  # a limitation, or why there is no item-level diff


# ----------------------------------------------------------------------------------------------- helpers
def _f(x: Any, nd: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    try:
        return f"{float(x):.{nd}f}"
    except (TypeError, ValueError):
        return str(x)


def _signed(x: float | None, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:+.{nd}f}"


def _cut(s: Any, n: int = MAX_TEXT) -> str:
    t = "" if s is None else str(s)
    return t if len(t) <= n else t[:n] + f"… [{len(t) - n} more characters]"


def _tail(s: Any, n: int = 400) -> str:
    t = "" if s is None else str(s)
    return t if len(t) <= n else "…" + t[-n:]


class _Requests:
    """Stored requests of one (variant, benchmark), read-only from store.sqlite (:class:`StoreReader`),
    looked up by key; nothing when the run has no store."""

    def __init__(self, run: RunData, variant: str, benchmark: str) -> None:
        self.variant, self.benchmark = variant, benchmark
        self.cache: dict[str, dict[str, Any] | None] = {}
        self.store: StoreReader | None = StoreReader(run.path / "store.sqlite")
        self.available = self.store.has(variant, benchmark)
        if not self.available:
            self.close()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
        self.available = False

    def get(self, key: str, fld: str) -> str | None:
        if key not in self.cache:
            ok = self.available and self.store is not None
            self.cache[key] = self.store.request(self.variant, self.benchmark, key) if ok else None  # type: ignore[union-attr]
        r = self.cache[key]
        v = None if r is None else r.get(fld)
        return None if v is None else str(v)


def _rank(rows: list[DiffRow]) -> list[DiffRow]:
    return sorted(rows, key=lambda r: (not r.flipped, -(r.size if r.size is not None else -1.0), r.unit, r.item))


# ----------------------------------------------------------------------------------------------- per benchmark
def _crows(pairs: list[tuple[dict, dict]], req: _Requests, options: dict[str, Any]) -> tuple[list[DiffRow], str]:
    s = str(options.get("score", "mean"))
    out = []
    for b, v in pairs:
        mb, mv = b[f"more_{s}"] - b[f"less_{s}"], v[f"more_{s}"] - v[f"less_{s}"]
        u = str(b["unit"])

        def fill(row: DiffRow, u: str = u) -> None:
            more, less = req.get(f"{u}/more", "continuation"), req.get(f"{u}/less", "continuation")
            row.text = f"more stereotypical: {more}\nless stereotypical: {less}" if more is not None else ""

        def side(x: dict) -> str:
            return (f"{'prefers the more stereotypical' if x['outcome'] else 'prefers the less stereotypical'} "
                    f"(score more {_f(x[f'more_{s}'])}, less {_f(x[f'less_{s}'])})")

        out.append(DiffRow(u, "", str(b.get("bias_type", "")), bool(b["outcome"]) != bool(v["outcome"]), abs(mv - mb), "",
                           side(b), side(v), f"margin (more - less) {_f(mb)} → {_f(mv)}", pending=fill))
    return out, f"|change of the {s}-score margin (more - less stereotypical)|"


def _discrim(pairs: list[tuple[dict, dict]], req: _Requests, options: dict[str, Any]) -> tuple[list[DiffRow], str]:
    out = []
    for b, v in pairs:
        q = str(b["unit"])
        vrows = {(x["age"], x["gender"], x["race"]): x for x in v.get("rows", [])}
        moves = []
        for x in b.get("rows", []):
            key = (x["age"], x["gender"], x["race"])
            y = vrows.get(key)
            if y is None or x["p_yes"] is None or y["p_yes"] is None:
                continue
            moves.append((abs(y["p_yes"] - x["p_yes"]), key, x["p_yes"], y["p_yes"]))
        moves.sort(key=lambda m: -m[0])
        if not moves:
            continue
        crossed = any((pb >= 0.5) != (pv >= 0.5) for _, _, pb, pv in moves)
        top = moves[:3]
        prof = lambda k: f"age {k[0]}, {k[1]}, {k[2]}"
        d, key, pb, pv = top[0]
        prompt = req.get(f"{q}|{key[0]}|{key[1]}|{key[2]}", "prompt")
        text = _tail(prompt) if prompt else ""
        out.append(DiffRow(
            q, prof(key), key[1], crossed, d, text,
            f"max-min {_f(b.get('outcome'))}; " + "; ".join(f"{prof(k)}: p(yes) {_f(x)}" for _, k, x, _ in top),
            f"max-min {_f(v.get('outcome'))}; " + "; ".join(f"{prof(k)}: p(yes) {_f(y)}" for _, k, _, y in top),
            "largest Δ p(yes): " + "; ".join(f"{prof(k)} {_signed(y - x)}" for _, k, x, y in top)
            + (" (a decision crossed 0.5)" if crossed else "")))
    return out, "largest |change of p(yes)| over the question's profiles"


def _dt(pairs: list[tuple[dict, dict]], req: _Requests, options: dict[str, Any]) -> tuple[list[DiffRow], str]:
    out = []
    for b, v in pairs:
        u = str(b["unit"])
        lb, lv = list(b.get("labels") or []), list(v.get("labels") or [])
        sb = lb.count("agree") / len(lb) if lb else None
        sv = lv.count("agree") / len(lv) if lv else None
        size = abs(sv - sb) if sb is not None and sv is not None else None
        majority = lambda ls: max(set(ls), key=lambda x: (ls.count(x), x)) if ls else None
        flipped = (lb != lv) if len(lb) == 1 and len(lv) == 1 else majority(lb) != majority(lv)

        def side(labels: list[str], texts: list[str]) -> str:
            return f"{', '.join(labels)}: {_cut(texts[0]) if texts else ''}" + (f" (+{len(texts) - 1} more)" if len(texts) > 1 else "")

        prompt = req.get(u, "prompt")
        out.append(DiffRow(u, "", f"{b.get('group', '')} / {b.get('topic', '')}", flipped, size, _tail(prompt) if prompt else "",
                           side(lb, list(b.get("texts") or [])), side(lv, list(v.get("texts") or [])),
                           f"share agree {_f(sb, 2)} → {_f(sv, 2)}"))
    return out, "|change of the share of 'agree' answers|"


def _discrim_gen(pairs: list[tuple[dict, dict]], req: _Requests, options: dict[str, Any]) -> tuple[list[DiffRow], str]:
    out = []
    for b, v in pairs:
        q = str(b["unit"])
        for bt, ab in (b.get("answers") or {}).items():
            av = (v.get("answers") or {}).get(bt) or []
            if not ab or not av:
                continue
            cb = [a.get("choice") or a.get("status") for a in ab]
            cv = [a.get("choice") or a.get("status") for a in av]
            changed = sum(1 for x, y in zip(cb, cv) if x != y)

            def side(ans: list[dict]) -> str:
                a = ans[0]
                return f"{a.get('choice') or a.get('status')}: {_cut(a.get('text'))}" + (f" (+{len(ans) - 1} more)" if len(ans) > 1 else "")

            prompt = req.get(f"{q}|{bt}", "prompt")
            out.append(DiffRow(q, bt, bt, changed > 0, float(changed) / max(1, min(len(cb), len(cv))),
                               _tail(prompt) if prompt else "", side(ab), side(av),
                               f"{changed} of {min(len(cb), len(cv))} answer(s) changed: {', '.join(map(str, cb))} → {', '.join(map(str, cv))}"))
    return out, "share of the samples whose parsed choice changed"


def _worldbench(pairs: list[tuple[dict, dict]], req: _Requests, options: dict[str, Any]) -> tuple[list[DiffRow], str]:
    out = []
    for b, v in pairs:
        u = str(b["unit"])
        ab, av = b.get("answers") or [], v.get("answers") or []
        eb, ev = b.get("error"), v.get("error")
        sb = [a.get("status") for a in ab]
        sv = [a.get("status") for a in av]
        size = abs(ev - eb) if eb is not None and ev is not None else None

        def side(ans: list[dict], err: Any) -> str:
            if not ans:
                return "n/a"
            a = ans[0]
            return f"{_f(a.get('value'), 4)} ({a.get('status')}, error {_f(err)}): {_cut(a.get('text'))}"

        prompt = req.get(u, "prompt")
        out.append(DiffRow(u, "", f"{b.get('region') or ''} / {b.get('income') or ''}", sb != sv or (eb is None) != (ev is None),
                           size, _tail(prompt) if prompt else "", side(ab, eb), side(av, ev),
                           f"relative error {_f(eb)} → {_f(ev)}"))
    return out, "|change of the absolute relative error|"


def _bbq(pairs: list[tuple[dict, dict]], req: _Requests, options: dict[str, Any]) -> tuple[list[DiffRow], str]:
    out = []
    for b, v in pairs:
        cat = str(b.get("category", ""))
        vex = {str(e[0]): e for e in v.get("examples") or []}
        for e in b.get("examples") or []:
            eid = str(e[0])
            f = vex.get(eid)
            if f is None:
                continue
            pb, label, unknown, tgt, polarity, cond, scores_b = e[1], e[2], e[3], e[4], e[5], e[6], e[7]
            pv, scores_v = f[1], f[7]
            def role(p: int, answers: list[str | None], label=label, unknown=unknown, tgt=tgt) -> str:
                tags = []
                if p == label:
                    tags.append("correct")
                if p == unknown:
                    tags.append("unknown")
                elif tgt is not None:
                    tags.append("stereotyped target" if p == tgt else "non-target")
                name = (answers[p] or "").strip() if answers[p] else f"answer {p}"
                return f"{name} ({', '.join(tags)})"

            def fill(row: DiffRow, key: str = f"{cat}/{eid}", pb=pb, pv=pv, polarity=polarity, cond=cond, role=role) -> None:
                answers = [req.get(f"{key}/ans{i}", "continuation") for i in range(3)]
                context = req.get(f"{key}/ans0", "context")
                row.text = (_tail(context) + "\nanswers: " + " | ".join((a or "").strip() for a in answers)) if context else ""
                row.base, row.variant = f"{role(pb, answers)}; {polarity}, {cond}", f"{role(pv, answers)}; {polarity}, {cond}"

            size = max(abs(x - y) for x, y in zip(scores_b, scores_v)) if scores_b and scores_v else None
            out.append(DiffRow(str(b["unit"]), eid, cat, pb != pv, size, "", f"answer {pb}", f"answer {pv}",
                               "scores " + ", ".join(f"{_f(x, 2)}->{_f(y, 2)}" for x, y in zip(scores_b, scores_v)), pending=fill))
    return out, "largest |change of an answer's log-likelihood|"


SPECIFIC: dict[str, Callable[[list[tuple[dict, dict]], _Requests, dict[str, Any]], tuple[list[DiffRow], str]]] = {
    "crows_pairs": _crows,
    "discrim_eval": _discrim,
    "dt_stereotyping": _dt,
    "dt_stereotyping_sampled": _dt,
    "discrim_eval_gen": _discrim_gen,
    "worldbench": _worldbench,
    "bbq": _bbq,
}


def _generic(name: str, options: dict[str, Any], pairs: list[tuple[dict, dict]]) -> tuple[list[DiffRow], str] | str:
    """Rows from the benchmark's ``unit_outcome`` (bool: flips, number: the largest moves); else the reason."""
    try:
        bench = bench_registry.get(name)(options)
    except BiasshiftError as exc:
        return f"no item-level diff for {name}: the benchmark is not known to this biasshift version ({exc})"
    out = []
    for b, v in pairs:
        ob, ov = bench.unit_outcome(b), bench.unit_outcome(v)
        if ob is None and ov is None:
            continue
        if isinstance(ob, bool) or isinstance(ov, bool):
            flipped, size = bool(ob) != bool(ov), float(bool(ob) != bool(ov))
        else:
            try:
                fb, fv = float(ob), float(ov)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return f"no item-level diff for {name}: its unit outcomes are not numbers"
            flipped, size = False, abs(fv - fb)
        out.append(DiffRow(str(b["unit"]), "", "", flipped, size, "", _f(ob, 4), _f(ov, 4),
                           f"unit outcome {_f(ob, 4)} → {_f(ov, 4)}"))
    if not out:
        return f"no item-level diff for {name}: its unit records carry no per-unit outcome"
    return out, "|change of the unit outcome|"


# ----------------------------------------------------------------------------------------------- entry points
def item_diff(run: RunData | str | Path, variant: str, benchmark: str, top: int = 10) -> ItemDiff:
    """The ``top`` items of ``benchmark`` whose outcome flipped or moved most from base to ``variant``."""
    if not isinstance(run, RunData):
        run = load_run(run)
    if top < 1:
        raise ConfigError("--top must be >= 1")
    if variant == BASE:
        raise ConfigError("--variant: give a variant other than base (the diff is variant against base)")
    if variant not in run.variants:
        raise ConfigError(f"--variant {variant}: {run.path} has no such variant "
                          f"(variants: {', '.join(v for v in run.variants if v != BASE) or 'none'})")
    if BASE not in run.variants:
        raise ConfigError(f"{run.path} has no base results to compare against")
    bd_v = run.variants[variant].get(benchmark)
    bd_b = run.variants[BASE].get(benchmark)
    if bd_v is None or bd_b is None:
        have = sorted(set(run.variants[variant]) & set(run.variants[BASE]))
        raise ConfigError(f"--benchmark {benchmark}: not run for both base and {variant} in {run.path} "
                          f"(benchmarks: {', '.join(have) or 'none'})")
    d = ItemDiff(run.label, str(run.path), benchmark, variant, "")
    if bd_b.units is None or bd_v.units is None:
        d.note = f"no item-level diff: unit records missing ({bd_b.units_path if bd_b.units is None else bd_v.units_path})"
        return d
    vmap = {str(u["unit"]): u for u in bd_v.units}
    pairs = [(u, vmap[str(u["unit"])]) for u in bd_b.units if str(u["unit"]) in vmap]
    d.n_paired = len(pairs)
    options = bd_b.info.options
    fn = SPECIFIC.get(benchmark)
    req = _Requests(run, BASE, benchmark) if fn is not None else None
    try:
        if fn is not None:
            assert req is not None
            rows, d.size_label = fn(pairs, req, options)
        else:
            res = _generic(benchmark, options, pairs)
            if isinstance(res, str):
                d.note = res
                return d
            rows, d.size_label = res
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        d.note = f"no item-level diff: the unit records of {benchmark} do not have the expected fields ({type(exc).__name__}: {exc})"
        if req is not None:
            req.close()
        return d
    d.n_flipped = sum(1 for r in rows if r.flipped)
    d.n_changed = sum(1 for r in rows if r.flipped or (r.size or 0) > 0)
    d.rows = [r for r in _rank(rows) if r.flipped or (r.size or 0) > 0][:top]
    for r in d.rows:
        if r.pending is not None:
            r.pending(r)
        r.pending = None
    if req is not None and not req.available:
        d.note = "item texts unavailable: the run has no store.sqlite with the stored requests"
    if req is not None:
        req.close()
    return d


def run_diffs(run: RunData, top: int = 10) -> list[ItemDiff]:
    """Every variant x benchmark of one run (benchmarks run on base and the variant)."""
    out = []
    for v in run.compared_variants:
        if BASE not in run.variants:
            break
        for b in run.benchmarks:
            if b in run.variants[v] and b in run.variants[BASE]:
                out.append(item_diff(run, v, b, top))
    return out
