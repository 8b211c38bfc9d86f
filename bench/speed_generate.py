"""Generation speed of biasshift's engine: batch 1 vs batch B on the same prompts (greedy).

Usage (from the repository root, in the project venv):
    python bench/speed_generate.py [--limit 16] [--batch-size 16] [--max-new-tokens 32] [--json OUT]

Prompts: the first ``--limit`` DecodingTrust stereotype prompts (the ``dt_stereotyping`` benchmark's
own requests, chat template on, as a run renders them), with ``max_new_tokens`` set to
``--max-new-tokens``. The same requests run through ``HFEngine.run`` once with batch size 1 and once
with ``--batch-size``; throughput is new (generated) tokens per second, and the greedy texts of the two
runs are compared (float32: they should be identical; a differing text means a near-tie argmax
flipped under a different padding).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / ".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DATA = REPO.parent / "shared/data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--limit", type=int, default=16, help="number of prompts")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from biasshift.benchmarks.base import RequestContext
    from biasshift.benchmarks.dt_stereotyping import DTStereotyping
    from biasshift.engine.hf import HFEngine, anchored_tokenize
    from biasshift.models import ModelSpec, load_model
    from biasshift.runner import make_renderer

    lm = load_model(ModelSpec(args.model, dtype=args.dtype, device=args.device))
    model, tok = lm.model, lm.tokenizer
    bench = DTStereotyping()
    items = bench.load({f.rel: Path(args.data_dir) / f.rel for f in bench.data_files})[: args.limit]
    ctx = RequestContext(render=make_renderer(tok, True), seed=0, chat_template=True, tokenize=anchored_tokenize(tok))
    reqs = [r for it in items for r in bench.requests(it, ctx)][: args.limit]
    reqs = [replace(r, request=replace(r.request, max_new_tokens=args.max_new_tokens)) for r in reqs]
    prompt_tokens = sum(len(tok(r.request.prompt, add_special_tokens=False)["input_ids"]) for r in reqs)
    print(f"{len(reqs)} prompts ({prompt_tokens} prompt tokens), max_new_tokens={args.max_new_tokens}, greedy; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}/{args.dtype}; "
          f"load average {os.getloadavg()[0]:.2f}")
    out: dict = {"n_prompts": len(reqs), "prompt_tokens": prompt_tokens, "max_new_tokens": args.max_new_tokens,
                 "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                             "device": args.device, "dtype": args.dtype, "loadavg_before": os.getloadavg()},
                 "runs": {}}
    HFEngine(model, tok, batch_size=1).run(reqs[:1], lambda rs: None)  # warm-up
    texts = {}
    for bs in (1, args.batch_size):
        eng = HFEngine(model, tok, batch_size=bs)
        got: dict[str, str] = {}
        t = time.perf_counter()
        eng.run(reqs, lambda rs, got=got: got.update({k.key: r.samples[0].text for k, r in rs}))
        dt = time.perf_counter() - t
        texts[bs] = got
        out["runs"][str(bs)] = {"seconds": dt, "new_tokens": eng.stats.generated_tokens,
                                "new_tok_per_s": eng.stats.generated_tokens / dt, "batches": eng.stats.batches}
        print(f"batch {bs:>4}: {dt:8.2f} s  {eng.stats.generated_tokens} new tokens  "
              f"{eng.stats.generated_tokens / dt:8.1f} new tok/s")
    r1, rb = out["runs"]["1"], out["runs"][str(args.batch_size)]
    same = sum(texts[1][k] == texts[args.batch_size][k] for k in texts[1])
    out["speedup"] = rb["new_tok_per_s"] / r1["new_tok_per_s"]
    out["identical_texts"] = f"{same}/{len(texts[1])}"
    out["loadavg_after"] = os.getloadavg()
    print(f"speed-up batch {args.batch_size} vs 1: {out['speedup']:.2f}x; identical greedy texts: {out['identical_texts']}; "
          f"load average after {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
