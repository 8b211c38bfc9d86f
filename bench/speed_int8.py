"""bitsandbytes weight quantizers on CPU: where the time goes, side by side with the float32 base model.

Usage (from the repository root, in the project venv):
    python bench/speed_int8.py [--strategies base,int8,nf4] [--pairs 48] [--batch-size 16] [--threads 1] [--profile]

In one process, on SmolLM2-135M-Instruct (float32), for each strategy it builds the variant the way
``biasshift run`` does and scores the same CrowS-Pairs sentences (the first ``--pairs`` rows of the real
CSV) two ways, timing each with the process CPU clock (robust to other jobs on a shared machine) and the
wall clock:

  (a) engine  ``HFEngine.run`` (right-padded batches of ``--batch-size``);
  (b) loop    one plain forward per sentence, no padding.

Ratios are to the base model's time for the same method. ``--profile`` prints the torch profiler's top
operators of one engine batch per strategy: on this CPU bitsandbytes 0.50.2 runs LLM.int8() as a float32
matmul of int8 weights converted on every call plus per-call outlier detection (its ``default`` backend),
and that, not biasshift's engine, sets int8's speed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / ".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DATA = REPO.parent / "shared/data/crows_pairs/crows_pairs_anonymized.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--strategies", default="base,int8,nf4")
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from biasshift import strategies as S
    from biasshift.benchmarks.base import RequestContext
    from biasshift.benchmarks.crows_pairs import CROWS_FILE, CrowsPairs
    from biasshift.engine.hf import HFEngine, anchored_tokenize
    from biasshift.models import ModelSpec

    spec = ModelSpec(args.model, dtype="float32", device="cpu")
    bench = CrowsPairs()
    items = bench.load({CROWS_FILE.rel: Path(args.data)})[: args.pairs]
    out: dict = {"threads": args.threads, "pairs": len(items), "batch_size": args.batch_size, "strategies": {}}
    for name in [s.strip() for s in args.strategies.split(",") if s.strip()]:
        variant = S.get(name).build(spec)
        model, tok = variant.model, variant.tokenizer
        ctx = RequestContext(render=lambda p: p.text, seed=0, chat_template=False, tokenize=anchored_tokenize(tok))
        reqs = [r for it in items for r in bench.requests(it, ctx)]
        eng = HFEngine(model, tok, batch_size=args.batch_size)
        seqs = [[eng._anchor_id()] + list(tok(r.request.continuation, add_special_tokens=False)["input_ids"]) for r in reqs]
        with torch.inference_mode():
            model(input_ids=torch.tensor([seqs[0]]))  # warm-up
        row = {}
        c, w = time.process_time(), time.perf_counter()
        eng.run(reqs, lambda rs: None)
        row["engine_cpu_s"], row["engine_wall_s"] = time.process_time() - c, time.perf_counter() - w
        c, w = time.process_time(), time.perf_counter()
        with torch.inference_mode():
            for s in seqs:
                model(input_ids=torch.tensor([s]))
        row["loop_cpu_s"], row["loop_wall_s"] = time.process_time() - c, time.perf_counter() - w
        row["requests"] = len(reqs)
        out["strategies"][name] = row
        print(f"{name:>6}: engine {row['engine_cpu_s']:7.2f} s CPU ({row['engine_wall_s']:7.2f} wall)   "
              f"loop {row['loop_cpu_s']:7.2f} s CPU ({row['loop_wall_s']:7.2f} wall)   {len(reqs)} sentences", flush=True)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            batch = reqs[: args.batch_size]
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                eng.run(batch, lambda rs: None)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
        del variant, model, eng
    base = out["strategies"].get("base")
    if base:
        for name, row in out["strategies"].items():
            row["engine_cpu_ratio_vs_base"] = round(row["engine_cpu_s"] / base["engine_cpu_s"], 2)
            row["loop_cpu_ratio_vs_base"] = round(row["loop_cpu_s"] / base["loop_cpu_s"], 2)
            print(f"{name:>6}: engine x{row['engine_cpu_ratio_vs_base']:.2f} of base, loop x{row['loop_cpu_ratio_vs_base']:.2f} "
                  f"of base (CPU time); engine vs loop x{row['loop_cpu_s'] / row['engine_cpu_s']:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
