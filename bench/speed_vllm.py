"""HF engine vs vLLM engine, side by side in one process, on the same requests.

Usage (from the repository root, in the project venv, after `make vllm-env`):
    python bench/speed_vllm.py [--limit 16] [--max-new-tokens 32] [--batch-size 16] [--threads 1]
                               [--kinds generate,loglik,choice] [--json OUT]

- generate: the first ``--limit`` DecodingTrust stereotype prompts (chat template on, as a run renders them),
  greedy, ``--max-new-tokens`` new tokens: wall time and new tokens/s, and how many greedy texts agree;
- loglik: ``--limit`` CrowS-Pairs pairs (2 sentences each); choice: ``--limit`` DiscrimEval explicit prompts.

Both engines run on the base model directory (the dequantised SmolLM2 GGUF by default) in float32. The HF
engine runs in this process with ``--threads`` torch threads; the vLLM server gets the same number of OpenMP
threads (``BIASSHIFT_VLLM_THREADS``), so neither engine has more cores than the other. Besides wall time the
script reports CPU seconds (this process for HF; the server's process group for vLLM, from /proc), which is
the robust figure on a shared machine, and the load average before and after.
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


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in a process group (plus their reaped children)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        f = stat[stat.rfind(")") + 2 :].split()
        if int(f[2]) == pgid:
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])  # utime stime cutime cstime
    return total / tick


def build_requests(name: str, tok, data: Path, limit: int, **options):
    from biasshift import benchmarks
    from biasshift.benchmarks.base import RequestContext
    from biasshift.engine.hf import anchored_tokenize
    from biasshift.plan import make_renderer

    b = benchmarks.get(name)(options or None)
    chat = True if name == "dt_stereotyping" else b.chat_template_default
    ctx = RequestContext(render=make_renderer(tok, chat), seed=0, chat_template=chat, tokenize=anchored_tokenize(tok))
    items = b.select(b.load({f.rel: data / f.rel for f in b.data_files}), limit, 0)
    return [r for it in items for r in b.requests(it, ctx)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16, help="HF batch size; vLLM requests in flight")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (HF) = OpenMP threads of the vLLM server")
    ap.add_argument("--kinds", default="generate,loglik,choice")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["BIASSHIFT_VLLM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from biasshift import strategies
    from biasshift.engine.base import EngineSettings
    from biasshift.engine.hf import HFEngine
    from biasshift.engine.vllm import VLLMEngine
    from biasshift.models import ModelSpec

    data = Path(args.data_dir)
    spec = ModelSpec(args.model, dtype=args.dtype, device="cpu")
    settings = EngineSettings(batch_size=args.batch_size, log_dir=str(Path("/tmp") / f"speed_vllm-{os.getpid()}"))
    base = strategies.get("base")
    out: dict = {"machine": {"cpu_count": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
                             "dtype": args.dtype, "loadavg_before": os.getloadavg()}, "kinds": {}}
    t = time.perf_counter()
    hf = HFEngine.open(base, spec, settings)
    out["hf_open_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    vl = VLLMEngine.open(base, spec, settings)
    out["vllm_open_seconds"] = time.perf_counter() - t
    pgid = vl.server.proc.pid
    print(f"open: HF {out['hf_open_seconds']:.1f} s, vLLM server {out['vllm_open_seconds']:.1f} s "
          f"(log {vl.server.log_path}); {args.threads} thread(s) each; load {os.getloadavg()[0]:.2f}")
    try:
        tok = hf.tok
        plan = {"generate": lambda: [replace(r, request=replace(r.request, max_new_tokens=args.max_new_tokens))
                                     for r in build_requests("dt_stereotyping", tok, data, args.limit)][: args.limit],
                "loglik": lambda: build_requests("crows_pairs", tok, data, args.limit),
                "choice": lambda: build_requests("discrim_eval", tok, data, 1)[: args.limit]}
        for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
            reqs = plan[kind]()
            warm = reqs[:1]
            res = {}
            answers = {}
            for name, eng in (("hf", hf), ("vllm", vl)):
                eng.run(warm, lambda rs: None)  # warm-up (first-call allocations, vLLM's first batch)
                got: dict = {}
                before = (eng.stats.forward_tokens, eng.stats.generated_tokens)
                cpu0 = time.process_time() if name == "hf" else group_cpu_seconds(pgid)
                load0 = os.getloadavg()[0]
                t = time.perf_counter()
                eng.run(reqs, lambda rs, got=got: got.update({k.key: a for k, a in rs}))
                wall = time.perf_counter() - t
                cpu = (time.process_time() if name == "hf" else group_cpu_seconds(pgid)) - cpu0
                new = eng.stats.generated_tokens - before[1]
                res[name] = {"seconds": wall, "cpu_seconds": cpu, "requests": len(reqs),
                             "forward_tokens": eng.stats.forward_tokens - before[0], "new_tokens": new,
                             "new_tok_per_s": new / wall if new else None, "requests_per_s": len(reqs) / wall,
                             "loadavg": [load0, os.getloadavg()[0]]}
                answers[name] = got
                print(f"{kind:>8} {name:>4}: {wall:7.2f} s wall, {cpu:7.2f} s CPU, {len(reqs)} requests"
                      + (f", {new} new tokens, {new / wall:6.1f} new tok/s" if new else "")
                      + f"  (load {load0:.2f} -> {os.getloadavg()[0]:.2f})")
            h, v = answers["hf"], answers["vllm"]
            if kind == "generate":
                res["identical_texts"] = f"{sum(h[k].texts == v[k].texts for k in h)}/{len(h)}"
            elif kind == "loglik":
                res["max_abs_diff_sum"] = max(abs(h[k].sum - v[k].sum) for k in h)
            else:
                res["max_abs_diff_raw"] = max(abs(h[k].raw[lab] - v[k].raw[lab]) for k in h for lab in h[k].raw)
            res["vllm_speedup_wall"] = res["hf"]["seconds"] / res["vllm"]["seconds"]
            res["vllm_speedup_cpu"] = res["hf"]["cpu_seconds"] / max(res["vllm"]["cpu_seconds"], 1e-9)
            extra = {k: v for k, v in res.items() if k not in ("hf", "vllm")}
            print(f"{kind:>8}: {json.dumps(extra)}")
            out["kinds"][kind] = res
    finally:
        vl.close()
        hf.close()
    out["loadavg_after"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
