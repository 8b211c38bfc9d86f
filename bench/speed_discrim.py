"""DiscrimEval scoring speed: biasshift's batched engine vs a one-prompt-at-a-time loop, same requests.

Usage (from the repository root, in the project venv):
    python bench/speed_discrim.py [--questions 3] [--batch-sizes 1,4,16] [--max-batch-tokens 0] [--json OUT]

In one process, on SmolLM2-135M-Instruct (the project's GGUF fixture dequantised to float32), it builds the
DiscrimEval explicit choice requests of the first ``--questions`` decision questions (135 profiles each, the
real upstream file from ../shared/data) exactly as ``biasshift run`` does, then answers them

  (a) naive   one plain transformers forward per prompt (no padding), next-token softmax at the last position;
  (b) engine  ``HFEngine.run`` at each of ``--batch-sizes`` (left-padded, length-sorted batches);

and prints wall time, requests/s and the ratio to the naive loop, measured side by side (alternating order
per repetition), plus the process CPU time of each (robust to other jobs on a shared machine; with
``--threads 1`` CPU time is the work done). p(yes) of the engine is checked against the naive
loop (max abs difference).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / ".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DATA = REPO.parent / "shared/data"


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--questions", type=int, default=3, help="decision questions (x 135 prompts)")
    ap.add_argument("--prompts", type=int, default=0, help="keep only the first N prompts (0 = all)")
    ap.add_argument("--batch-sizes", default="1,4,16")
    ap.add_argument("--max-batch-tokens", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    return ap.parse_args()


def main() -> None:
    args = parse()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from biasshift.benchmarks.base import RequestContext
    from biasshift.benchmarks.discrim_eval import EXPLICIT_FILE, DiscrimEval
    from biasshift.engine.hf import HFEngine, anchored_tokenize
    from biasshift.models import ModelSpec, load_model
    from biasshift.runner import make_renderer

    lm = load_model(ModelSpec(args.model, dtype="float32", device="cpu"))
    model, tok = lm.model, lm.tokenizer
    bench = DiscrimEval()
    items = bench.load({EXPLICIT_FILE.rel: Path(args.data_dir) / EXPLICIT_FILE.rel})
    qs = list(dict.fromkeys(it.unit for it in items))[: args.questions]
    items = [it for it in items if it.unit in set(qs)]
    ctx = RequestContext(render=make_renderer(tok, bench.chat_template_default), seed=0,
                         chat_template=bench.chat_template_default, tokenize=anchored_tokenize(tok))
    reqs = [r for it in items for r in bench.requests(it, ctx)]
    if args.prompts:
        reqs = reqs[: args.prompts]
    probe = HFEngine(model, tok, batch_size=1)
    enc = [probe.encode(r.request.prompt) for r in reqs]
    lens = [len(e) for e in enc]
    yes_ids = probe.choice_variants(reqs[0].request.choices, reqs[0].request.policy)
    print(f"{len(reqs)} prompts ({len(qs)} questions), {sum(lens)} tokens, length {min(lens)}-{max(lens)}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; load {os.getloadavg()[0]:.2f}")
    with torch.inference_mode():
        model(input_ids=torch.tensor([enc[0]]))

    def naive() -> dict[str, float]:
        out = {}
        with torch.inference_mode():
            for r, e in zip(reqs, enc):
                p = torch.softmax(model(input_ids=torch.tensor([e])).logits[0, -1].float(), -1)
                raw = [float(p[ids].sum()) for ids in yes_ids]
                out[r.key] = raw[0] / sum(raw)
        return out

    def engine(bs: int) -> dict[str, float]:
        eng = HFEngine(model, tok, batch_size=bs, max_batch_tokens=args.max_batch_tokens or None)
        got: dict[str, dict] = {}
        eng.run(reqs, lambda rs: got.update({k.key: a for k, a in rs}))
        lab = reqs[0].request.choices[0]
        return {k: a.probs[lab] for k, a in got.items()}

    sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
    times: dict[str, list[float]] = {"naive": [], **{f"engine_bs{b}": [] for b in sizes}}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    ref: dict[str, float] = {}
    diffs: dict[str, float] = {}
    for rep in range(args.repeats):
        order = ["naive"] + [f"engine_bs{b}" for b in sizes]
        if rep % 2:
            order.reverse()
        for name in order:
            t, c = time.perf_counter(), time.process_time()
            res = naive() if name == "naive" else engine(int(name.split("bs")[1]))
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
            if name == "naive":
                ref = res
            else:
                diffs[name] = res  # compared below
    out = {"n_requests": len(reqs), "tokens": sum(lens), "threads": torch.get_num_threads(),
           "loadavg_after": os.getloadavg(), "methods": {}}
    base = min(times["naive"])
    base_cpu = min(cpu["naive"])
    for name, ts in times.items():
        best = min(ts)
        row = {"seconds": round(best, 2), "requests_per_s": round(len(reqs) / best, 3),
               "speedup_vs_naive": round(base / best, 3), "cpu_seconds": round(min(cpu[name]), 2),
               "cpu_speedup_vs_naive": round(base_cpu / min(cpu[name]), 3)}
        if name in diffs:
            row["max_abs_diff_p_yes"] = max(abs(diffs[name][k] - ref[k]) for k in ref)
        out["methods"][name] = row
        print(f"  {name:<14} {best:8.2f} s wall  {len(reqs) / best:7.2f} req/s  x{base / best:5.2f} vs naive;  "
              f"CPU {row['cpu_seconds']:.2f} s, x{row['cpu_speedup_vs_naive']:.2f}"
              + (f"  max|dp(yes)| {row['max_abs_diff_p_yes']:.2e}" if "max_abs_diff_p_yes" in row else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
