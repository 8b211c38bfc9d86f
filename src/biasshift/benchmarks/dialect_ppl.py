"""Dialect perplexity gap (reference spec §6.5): is African American English modelled worse than SAE?

Data (no upstream file; docs/data.md): ``dialect_ppl/pairs.csv`` with columns ``id`` (unique), ``aae``
and ``sae`` -- the same content in African American English and in Standard American English, one pair
per row -- and an optional ``group`` column for breakdowns (e.g. the source corpus).

Scoring: each text is scored on its own: the anchor token (BOS, else EOS) and the text's tokens, cut into
windows of ``window`` tokens (default 512) that share one token, so every text token is a target once
(see :mod:`.perplexity`). B instead joined a corpus's documents with blank lines and cut the joined
token stream into windows; for *paired* texts we keep every text in its own context so that (a) a
text's NLL does not depend on the unrelated text before it, (b) the AAE and SAE sides of a pair are
scored under identical conditions, and (c) every token belongs to one pair, which makes the pair the
resampling unit.

Per side: ``ppl_aae`` / ``ppl_sae`` = exp(total NLL / total tokens) over the side's texts. Primary
``log_ppl_gap`` = log ppl_aae - log ppl_sae (the difference of the mean NLL per token; > 0: AAE is less
predictable to the model; 0 = no gap). Also ``ppl_ratio`` = ppl_aae / ppl_sae, ``mean_pair_gap`` (the
mean over pairs of the per-token NLL difference, every pair weighted equally) and ``share_aae_worse``.
Unit: the pair (its summed NLL and token count on each side).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data import DataFile
from ..engine.requests import Keyed, LoglikIdsRequest
from ..errors import ConfigError, DataError
from .base import Benchmark, BenchmarkResult, Item, RequestContext, mean
from .io import read_csv_rows, require_text
from .perplexity import need_tokenize, windows

PAIRS_FILE = DataFile(
    rel="dialect_ppl/pairs.csv",
    description="paired AAE / SAE texts: CSV with columns id, aae, sae (optional group); no upstream download",
)
SIDES = ("aae", "sae")


class DialectPPL(Benchmark):
    name = "dialect_ppl"
    title = "Dialect perplexity gap (AAE vs SAE)"
    kind = "scoring"
    data_files = (PAIRS_FILE,)
    primary_metric = "log_ppl_gap"
    primary_description = "log perplexity of the AAE texts minus that of their SAE counterparts (0 = no gap)"
    higher_is_more_biased = True
    outcome = "complex"
    default_options = {"window": 512}

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        if int(self.options["window"]) < 2:
            raise ConfigError("option dialect_ppl.window must be >= 2 tokens")

    def load(self, files: dict[str, Path]) -> list[Item]:
        path = files[PAIRS_FILE.rel]
        rows = read_csv_rows(path, required=("id", "aae", "sae"))
        items = []
        seen: set[str] = set()
        for lineno, row in rows:
            pid = require_text(row, "id", path, lineno).strip()
            if pid in seen:
                raise DataError(f"duplicate id {pid!r}", path=path, row=lineno, field="id")
            seen.add(pid)
            items.append(Item(id=pid, unit=pid, fields={
                "aae": require_text(row, "aae", path, lineno),
                "sae": require_text(row, "sae", path, lineno),
                "group": (row.get("group") or "").strip() or None,
            }))
        if not items:
            raise DataError("no rows", path=path)
        return items

    def requests(self, item: Item, ctx: RequestContext) -> list[Keyed]:
        tokenize = need_tokenize(ctx, self.name)
        out = []
        for side in SIDES:
            for k, w in enumerate(windows(tokenize(item.fields[side]), int(self.options["window"]))):
                out.append(Keyed(f"{item.id}/{side}/w{k}", item.id, LoglikIdsRequest(ids=w)))
        return out

    def units(self, items: Sequence[Item], responses: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for it in items:
            u: dict[str, Any] = {"unit": it.id, "group": it.fields["group"]}
            for side in SIDES:
                ws = []
                while f"{it.id}/{side}/w{len(ws)}" in responses:
                    ws.append(responses[f"{it.id}/{side}/w{len(ws)}"])
                if not ws:
                    raise KeyError(f"{it.id}/{side}/w0")
                u[f"{side}_nll"] = -sum(r["sum"] for r in ws)
                u[f"{side}_tokens"] = sum(r["n_tokens"] for r in ws)
            u["outcome"] = u["aae_nll"] / u["aae_tokens"] - u["sae_nll"] / u["sae_tokens"]
            out.append(u)
        return out

    @staticmethod
    def _stats(us: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not us:
            return {"log_ppl_gap": None, "ppl_aae": None, "ppl_sae": None, "ppl_ratio": None,
                    "mean_pair_gap": None, "share_aae_worse": None, "n": 0}
        m = {side: sum(u[f"{side}_nll"] for u in us) / sum(u[f"{side}_tokens"] for u in us) for side in SIDES}
        return {
            "log_ppl_gap": m["aae"] - m["sae"],
            "ppl_aae": math.exp(m["aae"]),
            "ppl_sae": math.exp(m["sae"]),
            "ppl_ratio": math.exp(m["aae"] - m["sae"]),
            "mean_pair_gap": mean([u["outcome"] for u in us]),
            "share_aae_worse": sum(u["outcome"] > 0 for u in us) / len(us),
            "n": len(us),
        }

    def compute(self, units: Sequence[dict[str, Any]]) -> BenchmarkResult:
        metrics = self._stats(units)
        metrics["n_pairs"] = metrics.pop("n")
        metrics["n_tokens_aae"] = sum(u["aae_tokens"] for u in units)
        metrics["n_tokens_sae"] = sum(u["sae_tokens"] for u in units)
        per_group: dict[str, dict[str, dict[str, Any]]] = {}
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for u in units:
            if u.get("group"):
                groups[u["group"]].append(u)
        if groups:
            per_group["group"] = {g: self._stats(us) for g, us in sorted(groups.items())}
        notes = [f"each text scored on its own after the anchor token, windows of {self.options['window']} tokens; "
                 "side perplexity = exp(total NLL / total tokens)"]
        return BenchmarkResult(metrics=metrics, primary=self.primary_metric, n_units=len(units),
                               per_group=per_group, notes=notes)
