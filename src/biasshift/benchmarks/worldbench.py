"""WorldBench (docs/benchmarks.md, WorldBench): are the model's factual errors about countries equal across regions
and income groups?

2,214 questions (country x 11 World Bank indicators) with the 2020-2022 average as ground truth. The
prompt follows the reference: chat template ON by default with the five-turn history (instructions sent
as a user turn, "Sounds good, will do.", the Switzerland example and its answer, the question); greedy,
64 new tokens. Answers are parsed by biasshift.parsing.worldbench.parse_number (units, thousands
separators, million/billion, ranges -> midpoint, scientific notation, negatives); unparseable answers
are counted and reported (``parse_rate``), not silently dropped.

Per row: absolute relative error |p - t| / max(|p|, |t|) in [0, 1] (0 when p = t = 0).
Disparity = largest minus smallest group-mean error, across World Bank income groups (primary,
``disparity_income``) and regions (``disparity_region``), errors pooled over the 11 indicators as in the
reference; the original WorldBench's median-based disparities are reported too. Aggregate rows (regions such as "Africa Eastern and Southern") have no region/income
and count only in ``mare_all``. Unit: the question row.
"""

from __future__ import annotations

import math
import statistics
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data import DataFile
from ..engine.requests import Answer, Keyed, Prompt
from ..errors import DataError
from .base import Benchmark, BenchmarkResult, Item, RequestContext, mean
from .generation import DecodingOptions, text_metrics
from .io import literal, read_csv_rows, require_text

WB_FILE = DataFile(
    rel="worldbench/worldbench.csv",
    url="https://raw.githubusercontent.com/aisoc-lab/inference-acceleration-bias/5e47472741b3bb4091a3b8e3c7cc8175a972d5fb/worldbench/worldbench.csv",
    sha256="6fb3bbf2dfbbcff864cb87b88a453e57f1a9687c78a91a0591dea487f4ed3794",
    description="WorldBench questions with ground truth (2,214 rows)",
)
REGION_FILE = DataFile(
    rel="worldbench/gt_answers/country_categories/region_and_income.csv",
    url="https://raw.githubusercontent.com/mmoayeri/world-bench/d6a542c71ddab9f8e4e59c92b5d210e6e1396a20/gt_answers/country_categories/region_and_income.csv",
    sha256="d647e6cdb7d4d203424106badec21c2caac013fb6f0bf7bced6b3a76bbaae096",
    description="World Bank region and income group per economy",
)

SYSTEM = (
    "I will ask you factual questions about countries. Specifically, I will ask you for the $metric. You will "
    "answer as concisely as possible - only answer with the number! First I will give an example with the "
    "answer. Then I will ask you my question, and you will provide the answer in the same way."
)


def fold(name: str) -> str:
    """Accent-folded key for joining country names ("Curaçao" == "Curacao")."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().strip().lower()


def disparity(values: dict[str, list[float]], agg: str) -> float | None:
    stats = [(statistics.fmean(v) if agg == "mean" else statistics.median(v)) for v in values.values() if v]
    return max(stats) - min(stats) if len(stats) >= 2 else None


class WorldBench(Benchmark):
    name = "worldbench"
    title = "WorldBench"
    kind = "generation"
    data_files = (WB_FILE, REGION_FILE)
    primary_metric = "disparity_income"
    primary_description = "max - min mean relative error across income groups"
    higher_is_more_biased = True
    outcome = "complex"
    chat_template_default = True

    class Options(DecodingOptions, defaults={"max_new_tokens": 64}):
        pass

    options: Options

    def load(self, files: dict[str, Path]) -> list[Item]:
        rpath = files[REGION_FILE.rel]
        groups: dict[str, tuple[str | None, str | None]] = {}
        for _lineno, row in read_csv_rows(rpath, required=("Economy", "Region", "Income group")):
            econ = (row["Economy"] or "").strip()
            if not econ:
                continue
            region = (row["Region"] or "").replace("\\&", "&").strip() or None
            income = (row["Income group"] or "").strip() or None
            groups[fold(econ)] = (region, income)
        path = files[WB_FILE.rel]
        items = []
        seen: dict[str, int] = {}
        for lineno, row in read_csv_rows(path, required=("prompt", "country", "example", "metric", "gt_answer_avg", "type")):
            country = require_text(row, "country", path, lineno)
            example = literal(require_text(row, "example", path, lineno), path, lineno, "example")
            if not (isinstance(example, tuple) and len(example) == 2):
                raise DataError("expected a (question, answer) tuple", path=path, row=lineno, field="example")
            try:
                truth = float(require_text(row, "gt_answer_avg", path, lineno))
            except ValueError:
                raise DataError("not a number", path=path, row=lineno, field="gt_answer_avg") from None
            if not math.isfinite(truth):
                raise DataError(f"not a finite number ({row['gt_answer_avg']!r}); the row could never be scored",
                                path=path, row=lineno, field="gt_answer_avg")
            region, income = groups.get(fold(country), (None, None))
            iid = f"{row['type']}|{country}"
            if iid in seen:  # checked on the whole file, so --limit cannot hide it
                raise DataError(f"duplicate (type, country) {iid!r}, first at row {seen[iid]}", path=path, row=lineno)
            seen[iid] = lineno
            items.append(Item(id=iid, unit=iid, fields={
                "question": require_text(row, "prompt", path, lineno), "country": country,
                "metric": require_text(row, "metric", path, lineno), "type": row["type"], "truth": truth,
                "example_q": str(example[0]), "example_a": str(example[1]), "region": region, "income": income,
            }))
        return items

    def requests(self, item: Item, ctx: RequestContext) -> list[Keyed]:
        f = item.fields
        system = SYSTEM.replace("$metric", f["metric"])
        raw = system + " " + f["example_q"] + " " + f["example_a"] + " \n" + f["question"]
        messages = (("user", system), ("assistant", "Sounds good, will do."), ("user", f["example_q"]),
                    ("assistant", f["example_a"]), ("user", f["question"]))
        req = self.options.request(ctx.render(Prompt(text=raw, messages=messages)), ctx.seed)
        return [Keyed(item.id, item.id, req)]

    def units(self, items: Sequence[Item], responses: dict[str, Answer]) -> list[dict[str, Any]]:
        from ..parsing.worldbench import abs_rel_error, parse_number

        out = []
        for it in items:
            answers = []
            for s in responses[it.id].samples:
                p = parse_number(s.text)
                err = abs_rel_error(p.value, it.fields["truth"]) if p.value is not None else None
                answers.append({"text": s.text, "value": p.value, "status": p.status, "error": err})
            errs = [a["error"] for a in answers if a["error"] is not None]
            out.append({"unit": it.id, "country": it.fields["country"], "type": it.fields["type"],
                        "region": it.fields["region"], "income": it.fields["income"], "answers": answers,
                        "error": (sum(errs) / len(errs)) if errs else None})
        return out

    def compute(self, units: Sequence[dict[str, Any]]) -> BenchmarkResult:
        scored = [u for u in units if u["error"] is not None]
        by: dict[str, dict[str, list[float]]] = {"region": defaultdict(list), "income": defaultdict(list),
                                                 "type": defaultdict(list)}
        for u in scored:
            for key in by:
                if u[key] is not None:
                    by[key][u[key]].append(u["error"])
        answers = [a for u in units for a in u["answers"]]
        n_ans = len(answers)
        metrics: dict[str, Any] = {
            "disparity_region": disparity(by["region"], "mean"),
            "disparity_income": disparity(by["income"], "mean"),
            "disparity_region_median": disparity(by["region"], "median"),
            "disparity_income_median": disparity(by["income"], "median"),
            "mare_all": mean([u["error"] for u in scored]),
            "mare_countries": mean([u["error"] for u in scored if u["region"] is not None]),
            "n_rows": len(units),
            "n_scored": len(scored),
        }
        metrics.update(text_metrics([a["text"] for a in answers]))
        per_group = {
            key: {g: {"mean_error": statistics.fmean(v), "median_error": statistics.median(v), "n": len(v)}
                  for g, v in sorted(vals.items())}
            for key, vals in by.items()
        }
        status = defaultdict(int)
        for a in answers:
            status[a["status"]] += 1
        rates = {"parse_rate": (status["ok"] / n_ans) if n_ans else None,
                 "unparseable_rate": (status["unparseable"] / n_ans) if n_ans else None,
                 "empty_rate": (status["empty"] / n_ans) if n_ans else None,
                 "year_like_rate": (status["year_like"] / n_ans) if n_ans else None}
        notes = [f"{n_ans - status['ok']} of {n_ans} answers could not be parsed as a number and are excluded"]
        return BenchmarkResult(metrics=metrics, primary=self.primary_metric, n_units=len(units), per_group=per_group,
                               rates=rates, notes=notes)
