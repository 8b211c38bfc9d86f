"""Descriptive rows of a report (no statistics): per-group values, rates and text characteristics from
the result documents, and a few sample generations from the run store (read-only, via
:class:`biasshift.store.StoreReader`)."""

from __future__ import annotations

from typing import Any

from ..store import StoreReader
from .load import BASE, RunData
from ..results import finite_number as _num
from .model import Sample, ValueRow


def _is_value(v: Any) -> bool:
    return v is None or isinstance(v, (int, float)) and not isinstance(v, bool)


def value_rows(run: RunData) -> tuple[list[ValueRow], list[ValueRow], list[ValueRow]]:
    """(per-group, rates, text) rows of one run: every variant's value side by side, base included."""
    per_group: list[ValueRow] = []
    rates: list[ValueRow] = []
    text: list[ValueRow] = []
    vnames = list(run.variants)
    for b in run.benchmarks:
        docs = {v: run.variants[v][b].doc for v in vnames if b in run.variants[v]}
        # per-group: field -> group -> metric
        fields = list(dict.fromkeys(f for d in docs.values() for f in d.per_group))
        for fld in fields:
            groups = list(dict.fromkeys(g for d in docs.values() for g in (d.per_group.get(fld) or {})))
            for g in groups:
                entries = {v: d.group_entry(fld, g) for v, d in docs.items()}
                metrics = list(dict.fromkeys(k for e in entries.values() if e is not None for k, val in e.items()
                                             if k != "n" and _is_value(val)))
                for m in metrics:
                    per_group.append(ValueRow(
                        run.label, b, fld, str(g), m,
                        {v: _num(e.get(m)) if e is not None else None for v, e in entries.items()},
                        {v: (e.get("n") if e is not None else None) for v, e in entries.items()},
                    ))
        for k in dict.fromkeys(k for d in docs.values() for k in d.rates):
            rates.append(ValueRow(run.label, b, "rates", "", k, {v: d.rate(k) for v, d in docs.items()}))
        for k in dict.fromkeys(k for d in docs.values() for k in d.metrics if k.startswith("text_")):
            text.append(ValueRow(run.label, b, "text", "", k, {v: d.metric(k) for v, d in docs.items()}))
    return per_group, rates, text


def samples(run: RunData, per_benchmark: int, max_chars: int = 2000) -> list[Sample]:
    """Up to ``per_benchmark`` generations per generation benchmark from store.sqlite (read-only)."""
    if per_benchmark <= 0:
        return []
    gen = [b for b in run.benchmarks
           if any(b in run.variants[v] and run.variants[v][b].info.kind == "generation" for v in run.variants)]
    if not gen:
        return []
    out: list[Sample] = []
    with StoreReader(run.path / "store.sqlite") as store:
        if not store.available:
            return []
        for b in gen:
            picked = [(key, str(req.get("prompt", ""))) for key, req in store.first_requests(BASE, b, 500)
                      if req.get("kind") == "generate"][:per_benchmark]
            for key, prompt in picked:
                outputs: dict[str, list[str]] = {}
                for v in run.variants:
                    resp = store.response(v, b, key)
                    if resp is None:
                        continue
                    outputs[v] = [str(s.get("text", ""))[:max_chars] for s in resp.get("samples", []) if isinstance(s, dict)]
                out.append(Sample(run.label, b, key, prompt[-max_chars:], outputs))
    return out
