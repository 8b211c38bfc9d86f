"""What a variant saves against what it costs in bias, from the run's own measurements (docs/report.md).

Per variant of a run: the memory footprint and build time from the result documents' ``variant`` block,
and the engine's throughput from their ``throughput`` block (requests, wall seconds, forward and
generated tokens, per request kind), summed over the benchmarks the variant computed itself. A
benchmark whose answers were taken from the base variant (``shared_with_base``) has no throughput of
its own; runs written before these fields existed read "not measured". Nothing is estimated.

tokens/s = (forward_tokens + generated_tokens) / seconds per request kind; speed-up = base's seconds per
token / the variant's, for the same kind (same device and batch policy: the same run). The trade-off per
benchmark puts each variant at (memory saved or speed-up vs base, change of the bias measure with its
CI); a variant is Pareto-efficient when no other point, base included (0 saved, speed-up 1, change 0), is
at least as good on both axes (more saved / faster, smaller |bias change|) and strictly better on one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..results import ResultDoc, Throughput
from .load import BASE, RunData
from .model import Comparison


@dataclass
class KindThroughput:
    kind: str
    requests: int = 0
    seconds: float = 0.0
    forward_tokens: int = 0
    generated_tokens: int = 0
    benchmarks: list[str] = field(default_factory=list)
    speedup: float | None = None  # vs base, same kind

    @property
    def tokens(self) -> int:
        return self.forward_tokens + self.generated_tokens

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.seconds if self.seconds > 0 and self.tokens > 0 else None

    @property
    def seconds_per_token(self) -> float | None:
        return self.seconds / self.tokens if self.seconds > 0 and self.tokens > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "requests": self.requests, "seconds": self.seconds, "forward_tokens": self.forward_tokens,
                "generated_tokens": self.generated_tokens, "tokens": self.tokens, "tokens_per_s": self.tokens_per_s,
                "speedup_vs_base": self.speedup, "benchmarks": self.benchmarks}


@dataclass
class VariantEfficiency:
    model: str
    variant: str
    memory_bytes: int | None = None
    memory_saved: float | None = None  # 1 - memory / base memory
    build_seconds: float | None = None
    throughput: dict[str, KindThroughput] = field(default_factory=dict)
    shared_with_base: list[str] = field(default_factory=list)  # benchmarks whose answers came from base
    not_measured: list[str] = field(default_factory=list)  # benchmarks without a throughput record
    perplexity: float | None = None  # the quality anchor, when run
    perplexity_rel_change: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "variant": self.variant, "memory_footprint_bytes": self.memory_bytes,
                "memory_saved_vs_base": self.memory_saved, "build_seconds": self.build_seconds,
                "throughput": [t.to_dict() for t in self.throughput.values()],
                "shared_with_base": self.shared_with_base, "throughput_not_measured": self.not_measured,
                "perplexity": self.perplexity, "perplexity_rel_change": self.perplexity_rel_change}


@dataclass
class TradeoffPoint:
    model: str
    benchmark: str
    metric: str
    variant: str
    kind: str | None  # the benchmark's request kind (the speed-up's)
    memory_saved: float | None
    speedup: float | None
    bias_change: float | None  # change of the bias measure (distance from neutral where declared)
    ci_low: float | None
    ci_high: float | None
    significant: bool
    pareto_memory: bool | None = None  # None: not placed (x or y missing)
    pareto_speed: bool | None = None
    why_missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _throughput(doc: ResultDoc) -> Throughput | None:
    return doc.throughput  # None in documents written before throughput was measured


def _variant_efficiency(run: RunData, v: str) -> VariantEfficiency:
    e = VariantEfficiency(run.label, v)
    docs = run.variants[v]
    for b, bd in docs.items():
        info = bd.doc.variant
        if e.memory_bytes is None and info.memory_footprint_bytes is not None:
            e.memory_bytes = int(info.memory_footprint_bytes)
        if e.build_seconds is None and info.build_seconds is not None and math.isfinite(info.build_seconds):
            e.build_seconds = float(info.build_seconds)
        t = _throughput(bd.doc)
        if t is None:
            e.not_measured.append(b)
            continue
        if t.shared_with_base:
            e.shared_with_base.append(b)
            continue
        if not math.isfinite(t.seconds):
            e.not_measured.append(b)
            continue
        kind = t.kind or "unknown"
        k = e.throughput.setdefault(kind, KindThroughput(kind))
        k.requests += t.requests
        k.seconds += float(t.seconds)
        k.forward_tokens += t.forward_tokens
        k.generated_tokens += t.generated_tokens
        k.benchmarks.append(b)
    return e


def _dominated(p: tuple[float, float], others: list[tuple[float, float]]) -> bool:
    x, y = p
    return any(ox >= x and oy <= y and (ox > x or oy < y) for ox, oy in others)


def build(runs: list[RunData], rows: list[Comparison]) -> tuple[list[VariantEfficiency], list[TradeoffPoint]]:
    effs: list[VariantEfficiency] = []
    points: list[TradeoffPoint] = []
    for run in runs:
        per_v = {v: _variant_efficiency(run, v) for v in run.variants}
        base = per_v.get(BASE)
        for v, e in per_v.items():
            if base is not None and v != BASE:
                if e.memory_bytes is not None and base.memory_bytes:
                    e.memory_saved = 1.0 - e.memory_bytes / base.memory_bytes
                for kind, k in e.throughput.items():
                    bk = base.throughput.get(kind)
                    if bk is not None and bk.seconds_per_token and k.seconds_per_token:
                        k.speedup = bk.seconds_per_token / k.seconds_per_token
            if v == BASE and base is not None:
                e.memory_saved = 0.0
                for k in e.throughput.values():
                    k.speedup = 1.0
            for r in rows:
                if r.model == run.label and r.quality and r.primary and r.group is None and r.metric == "ppl":
                    if r.variant == v:
                        e.perplexity, e.perplexity_rel_change = r.value, r.rel_change
                        break
                    if v == BASE and r.base is not None:  # base has no comparison row of its own
                        e.perplexity, e.perplexity_rel_change = r.base, 0.0
                        break
            effs.append(e)
        # ---- trade-off points per benchmark (primary bias metrics)
        for b in run.benchmarks:
            brows = [r for r in rows if r.model == run.label and r.benchmark == b and r.primary and not r.quality and r.group is None]
            if not brows:
                continue
            bt = next((t for t in (_throughput(vd[b].doc) for vd in run.variants.values() if b in vd) if t and t.kind), None)
            kind = bt.kind if bt else None
            pts = []
            for r in brows:
                e = per_v.get(r.variant)
                why = []
                mem = e.memory_saved if e else None
                if mem is None:
                    why.append("memory not measured")
                sp = None
                if e is not None and kind is not None:
                    k = e.throughput.get(kind)
                    sp = k.speedup if k else None
                    if sp is None:
                        why.append(f"{r.variant}'s answers shared with base: no own throughput" if b in e.shared_with_base
                                   else f"speed ({kind}) not measured")
                elif kind is None:
                    why.append("speed not measured (no throughput record)")
                lo, hi = r.bias_ci
                if r.bias_change is None:
                    why.append("bias change undefined")
                pts.append(TradeoffPoint(run.label, b, r.metric, r.variant, kind, mem, sp, r.bias_change, lo, hi, r.significant,
                                         why_missing=why))
            for axis in ("memory_saved", "speedup"):
                ref = 0.0 if axis == "memory_saved" else 1.0
                cands = [(p, getattr(p, axis)) for p in pts if getattr(p, axis) is not None and p.bias_change is not None]
                coords = [(x, abs(p.bias_change)) for p, x in cands] + [(ref, 0.0)]  # base is a point too
                for i, (p, x) in enumerate(cands):
                    others = coords[:i] + coords[i + 1:]
                    setattr(p, "pareto_memory" if axis == "memory_saved" else "pareto_speed",
                            not _dominated((x, abs(p.bias_change)), others))  # type: ignore[arg-type]
            points += pts
    return effs, points


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "not measured"
    for unit, s in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= s:
            return f"{n / s:.1f} {unit}"
    return f"{n} B"


def fmt_pct(x: float | None, missing: str = "not measured") -> str:
    return missing if x is None or not math.isfinite(x) else f"{100 * x:+.1f}%"


def fmt_x(x: float | None, missing: str = "not measured") -> str:
    return missing if x is None or not math.isfinite(x) else f"{x:.2f}x"
