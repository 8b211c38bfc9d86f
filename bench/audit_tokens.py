"""Token counts of a full audit, and an engine-time estimate for one 8B variant on one H100.

Usage (from the repository root, in the project venv):
    python bench/audit_tokens.py [--data-dir ../shared/data] [--json OUT]

Builds every request of the six reference benchmarks exactly as ``biasshift run`` does (same prompts,
same chat-template defaults, same decoding options) and counts tokens with the SmolLM2 tokenizer (the
GGUF fixture's; no Llama-3 tokenizer is available offline here: SmolLM2's 49K-vocabulary BPE gives
somewhat *more* tokens on English than Llama-3's 128K one, so the counts are on the high side).

Two benchmarks have no data in ``shared/data`` yet; their counts are built from stated proxies:
  discrim_eval       70 question templates x 135 demographic fills: the prompt of each template is the
                     DiscrimEvalGen file's ``filled_template_original`` (the same DiscrimEval scenarios),
                     each counted 135 times;
  global_opinion_qa  2,556 questions; a question with its options is taken as 100 tokens (an assumption,
                     stated in the output; it is a small share of the total).

Estimate: scoring/prefill tokens at the issue's measured H100 scoring rate (32K tok/s, Llama-3.1-8B shape,
bf16, transformers, batched) and generated tokens at its generation rate (5.3K new tok/s at batch 256,
interpolated linearly down to 40 tok/s at batch 1 for a benchmark with fewer than 256 rows). Generated
tokens are counted at ``max_new_tokens`` for every row (a batch decodes until its longest row stops),
so the estimate is an upper bound for decoding.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / ".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SIX = ["crows_pairs", "discrim_eval", "global_opinion_qa", "dt_stereotyping", "discrim_eval_gen", "worldbench"]
EXTRA = ["dt_stereotyping_sampled"]
SCORE_TOK_S = 32_000.0
GEN_TOK_S_256 = 5_300.0
GEN_TOK_S_1 = 40.0
GOQA_QUESTIONS = 2556
GOQA_TOKENS_PER_REQUEST = 100
DISCRIM_FILLS = 135


def gen_rate(rows: int) -> float:
    b = max(1, min(256, rows))
    return GEN_TOK_S_1 + (GEN_TOK_S_256 - GEN_TOK_S_1) * (b - 1) / 255


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared/data"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from biasshift import benchmarks as registry
    from biasshift.benchmarks.base import Item, RequestContext
    from biasshift.engine.hf import anchored_tokenize
    from biasshift.models import ModelSpec, load_tokenizer, materialise
    from biasshift.runner import make_renderer

    spec = ModelSpec(args.model)
    path, _ = materialise(spec)
    tok = load_tokenizer(path, spec)

    def n_tok(text: str) -> int:
        return len(tok(text, add_special_tokens=False, verbose=False)["input_ids"])

    rows_out = []
    for name in SIX + EXTRA:
        cls = registry.get(name)
        b = cls()
        chat = b.chat_template_default
        ctx = RequestContext(render=make_renderer(tok, chat), seed=0, chat_template=chat, tokenize=anchored_tokenize(tok))
        note = "real data"
        scale = 1
        if name == "global_opinion_qa":
            rows_out.append({"benchmark": name, "requests": GOQA_QUESTIONS, "score_tokens": GOQA_QUESTIONS * GOQA_TOKENS_PER_REQUEST,
                             "gen_rows": 0, "prefill_tokens": 0, "new_tokens_max": 0,
                             "note": f"no data here: assumed {GOQA_TOKENS_PER_REQUEST} tokens x {GOQA_QUESTIONS} questions"})
            continue
        if name == "discrim_eval":
            src = Path(args.data_dir) / "discrim_eval_gen/discrim_eval_gen.csv"
            templates = {r["decision_question_id"]: r["filled_template_original"] for r in csv.DictReader(open(src, encoding="utf-8"))}
            items = [Item(id=q, unit=q, fields={"template": t, "age": 0, "gender": "", "race": ""}) for q, t in templates.items()]
            scale = DISCRIM_FILLS
            note = f"proxy: {len(items)} DiscrimEval scenarios (from discrim_eval_gen.csv) x {DISCRIM_FILLS} fills"
        else:
            items = b.load({f.rel: Path(args.data_dir) / f.rel for f in cls.data_files})
        reqs = [r for it in items for r in b.requests(it, ctx)]
        score = prefill = new = rows = 0
        for r in reqs:
            q = r.request
            if q.kind == "loglik":
                score += 1 + n_tok(q.context + q.continuation)
            elif q.kind in ("choice",):
                score += n_tok(q.prompt)
            elif q.kind == "loglik_ids":
                score += len(q.ids)
            else:
                prefill += q.n * n_tok(q.prompt)
                new += q.n * q.max_new_tokens
                rows += q.n
        rows_out.append({"benchmark": name, "requests": len(reqs) * scale, "score_tokens": score * scale,
                         "gen_rows": rows * scale, "prefill_tokens": prefill * scale, "new_tokens_max": new * scale,
                         "note": note})

    print(f"{'benchmark':<24} {'requests':>9} {'score tok':>10} {'gen rows':>9} {'prefill tok':>11} "
          f"{'new tok (max)':>13} {'est. s':>7}")
    total_six = total_all = 0.0
    for r in rows_out:
        secs = (r["score_tokens"] + r["prefill_tokens"]) / SCORE_TOK_S
        if r["gen_rows"]:
            secs += r["new_tokens_max"] / gen_rate(r["gen_rows"])
        r["est_seconds_h100"] = secs
        total_all += secs
        if r["benchmark"] in SIX:
            total_six += secs
        print(f"{r['benchmark']:<24} {r['requests']:>9} {r['score_tokens']:>10} {r['gen_rows']:>9} {r['prefill_tokens']:>11} "
              f"{r['new_tokens_max']:>13} {secs:>7.1f}   {r['note']}")
    print(f"\nsix benchmarks (dt_stereotyping greedy): {total_six:.0f} s = {total_six / 60:.1f} min of engine time "
          f"per 8B variant on one H100 (upper bound for decoding); with dt_stereotyping_sampled too: "
          f"{total_all / 60:.1f} min")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows_out, "six_seconds": total_six, "all_seconds": total_all,
                                         "rates": {"score_tok_s": SCORE_TOK_S, "gen_tok_s_256": GEN_TOK_S_256,
                                                   "gen_tok_s_1": GEN_TOK_S_1}}, indent=1))


if __name__ == "__main__":
    main()
