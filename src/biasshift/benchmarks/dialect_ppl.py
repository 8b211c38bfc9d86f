"""Dialect perplexity gap (docs/benchmarks.md): is African American English modelled worse than SAE?

Data (docs/data.md), option ``format``:
- ``upstream``: the Groenwold et al. (2020) pairs as published: two line-aligned UTF-8 text files,
  ``dialect_ppl/aave_samples.txt`` (TwitterAAE tweets) and ``dialect_ppl/sae_samples.txt`` (their SAE
  rewrites), line i of one paired with line i of the other (2,019 pairs; pinned upstream sha256). A pair
  with an empty side is skipped and counted; files with different line counts are an error.
- ``csv``: your own pairs, ``dialect_ppl/pairs.csv`` with columns ``id`` (unique), ``aae`` and ``sae`` -- the
  same content in African American English and in Standard American English, one pair per row -- and an
  optional ``group`` column for breakdowns (e.g. the source corpus).
- ``auto`` (default): the upstream files when both are present locally, else ``pairs.csv`` when it is
  present locally, else the upstream files (downloaded).

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from ..data import DataFile
from ..engine.requests import Answer, Keyed, LoglikIdsRequest
from ..errors import DataError
from .base import Benchmark, BenchmarkResult, Item, RequestContext, mean
from .io import read_csv_rows, require_text
from .options import BenchmarkOptions
from .perplexity import WindowOptions, need_tokenize, windows

PAIRS_FILE = DataFile(
    rel="dialect_ppl/pairs.csv",
    description="your own paired AAE / SAE texts: CSV with columns id, aae, sae (optional group); no download",
)
AAVE_FILE = DataFile(
    rel="dialect_ppl/aave_samples.txt",
    url="https://raw.githubusercontent.com/kristenvaccaro/CSE190-HW5/0be188251ade1440abd7e46692e9b83b90f3c14d/aave_samples.txt",
    sha256="8c7bf485cdc4bd5dfd18eca40af7f6343b917641196c83f212abf43e4c78639a",
    description="Groenwold et al. (2020) AAVE tweets, one per line (2,019), line-aligned with sae_samples.txt",
)
SAE_FILE = DataFile(
    rel="dialect_ppl/sae_samples.txt",
    url="https://raw.githubusercontent.com/sophiegroenwold/AAVE_SAE_dataset/370149236fe9171f7ab21cf1cb07eb2bef9c1d0e/sae_samples.txt",
    sha256="5087d21d1655f6c4fdc7a1a4a379f3c67d55153504c45f079425eced92b7a8cc",
    description="Groenwold et al. (2020) SAE rewrites of the AAVE tweets, one per line, line-aligned",
)
SIDES = ("aae", "sae")


class DialectPPL(Benchmark):
    name = "dialect_ppl"
    title = "Dialect perplexity gap (AAE vs SAE)"
    kind = "scoring"
    data_files = (AAVE_FILE, SAE_FILE, PAIRS_FILE)
    primary_metric = "log_ppl_gap"
    primary_description = "log perplexity of the AAE texts minus that of their SAE counterparts (0 = no gap)"
    higher_is_more_biased = True
    neutral = 0.0
    outcome = "complex"

    class Options(WindowOptions):
        #: upstream (Groenwold et al.'s two text files), csv (one pairs file) or auto (whichever is local)
        format: Literal["auto", "upstream", "csv"] = "auto"

    options: Options

    def __init__(self, options: dict[str, Any] | BenchmarkOptions | None = None) -> None:
        super().__init__(options)
        self.format = "upstream" if self.options.format == "auto" else self.options.format

    def prefer_local(self, is_local: Callable[[DataFile], bool]) -> None:
        if self.options.format == "auto":
            upstream = is_local(AAVE_FILE) and is_local(SAE_FILE)
            self.format = "csv" if not upstream and is_local(PAIRS_FILE) else "upstream"

    def files(self) -> tuple[DataFile, ...]:
        return (PAIRS_FILE,) if self.format == "csv" else (AAVE_FILE, SAE_FILE)

    def load(self, files: dict[str, Path]) -> list[Item]:
        if self.options.format == "auto":  # the files given decide (prefer_local chose them)
            upstream = all(f.rel in files and Path(files[f.rel]).is_file() for f in (AAVE_FILE, SAE_FILE))
            self.format = "upstream" if upstream or PAIRS_FILE.rel not in files else "csv"
        if self.format == "upstream":
            return self._load_upstream(files[AAVE_FILE.rel], files[SAE_FILE.rel])
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

    def _load_upstream(self, aave: Path, sae: Path) -> list[Item]:
        sides = []
        for path in (aave, sae):
            try:
                text = Path(path).read_text(encoding="utf-8-sig")
            except UnicodeDecodeError as exc:
                line = Path(path).read_bytes()[: exc.start].count(b"\n") + 1
                raise DataError(f"not UTF-8 text ({exc.reason})", path=path, row=line) from None
            except OSError as exc:
                raise DataError(f"cannot read: {exc.strerror}", path=path) from None
            lines = text.split("\n")
            if lines and lines[-1] == "":  # a trailing newline ends the last line, it adds no pair
                lines.pop()
            sides.append([ln.rstrip("\r") for ln in lines])
        if len(sides[0]) != len(sides[1]):
            raise DataError(f"the pair files are not line-aligned: {aave} has {len(sides[0])} lines, {sae} has "
                            f"{len(sides[1])}", path=sae)
        items = []
        for i, (a, b) in enumerate(zip(*sides), start=1):
            if not a.strip() or not b.strip():
                self.count_quirk("pairs_with_an_empty_side_skipped")
                continue
            items.append(Item(id=f"L{i:05d}", unit=f"L{i:05d}", fields={"aae": a, "sae": b, "group": None}))
        if not items:
            raise DataError("no pairs with text on both sides", path=aave)
        return items

    def requests(self, item: Item, ctx: RequestContext) -> list[Keyed]:
        tokenize = need_tokenize(ctx, self.name)
        out = []
        for side in SIDES:
            for k, w in enumerate(windows(tokenize(item.fields[side]), self.options.window)):
                out.append(Keyed(f"{item.id}/{side}/w{k}", item.id, LoglikIdsRequest(ids=w)))
        return out

    def units(self, items: Sequence[Item], responses: dict[str, Answer]) -> list[dict[str, Any]]:
        out = []
        for it in items:
            u: dict[str, Any] = {"unit": it.id, "group": it.fields["group"]}
            for side in SIDES:
                ws = []
                while f"{it.id}/{side}/w{len(ws)}" in responses:
                    ws.append(responses[f"{it.id}/{side}/w{len(ws)}"])
                if not ws:
                    raise KeyError(f"{it.id}/{side}/w0")
                u[f"{side}_nll"] = -sum(r.sum for r in ws)
                u[f"{side}_tokens"] = sum(r.n_tokens for r in ws)
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
        notes = [f"each text scored on its own after the anchor token, windows of {self.options.window} tokens; "
                 "side perplexity = exp(total NLL / total tokens)"]
        return BenchmarkResult(metrics=metrics, primary=self.primary_metric, n_units=len(units),
                               per_group=per_group, notes=notes)
