"""CrowS-Pairs scoring speed: biasshift's batched engine vs a one-sentence-at-a-time loop vs lm-eval.

Usage (from the repository root, in the project venv):
    python bench/speed_crows.py [--limit 200] [--batch-size 16] [--skip-naive] [--skip-lmeval] [--json OUT]

In one process and on one model (SmolLM2-135M-Instruct, the project's GGUF fixture, dequantised to
float32 by ``biasshift.models.load_model``) it scores the same CrowS-Pairs sentences (the first
``--limit`` rows of the upstream CSV) three ways and times each:

  (a) engine  biasshift's ``HFEngine.run`` with ``--batch-size`` (right-padded batches, one forward each);
  (b) naive   one plain transformers forward per sentence, as the reference code did;
  (c) lm-eval lm-evaluation-harness 0.4.x (``pip install 'biasshift[bench]'``) through its Python API
              with the same in-memory model and a local task YAML over the same rows; skipped with a
              message when lm-eval is not installed.

Throughput is reported in request tokens per second with one numerator for all three: the tokens of
every sentence plus its one conditioning token (BOS), as biasshift and lm-eval both score a sentence
given that prefix token. lm-eval's time is its whole ``simple_evaluate`` call (it also builds the
dataset and requests; that part is timed separately and reported).

Agreement: lm-eval scores a sentence by its summed log-probability (given the tokenizer's BOS as prefix
token), so it is compared with biasshift's ``crows_pairs.score=sum`` numbers; the naive loop computes
both sum and mean. biasshift's default (``score=mean``, the reference's definition) is printed too:
it differs from the sum because longer sentences get lower summed log-probabilities.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / ".cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DATA = REPO.parent / "shared/data/crows_pairs/crows_pairs_anonymized.csv"
TASK = "crows_pairs_english_biasshift_bench"


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--limit", type=int, default=200, help="first N pairs of the CSV (0 = all 1,508)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--skip-lmeval", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON here")
    return ap.parse_args()


def pct(flags: list[bool]) -> float:
    return 100.0 * sum(flags) / len(flags)


def main() -> None:
    args = parse()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from biasshift.benchmarks.base import RequestContext
    from biasshift.benchmarks.crows_pairs import CROWS_FILE, CrowsPairs
    from biasshift.engine.hf import HFEngine, anchored_tokenize
    from biasshift.models import ModelSpec, load_model
    from biasshift.runner import make_renderer

    lm = load_model(ModelSpec(args.model, dtype=args.dtype, device=args.device))
    model, tok = lm.model, lm.tokenizer
    bench = CrowsPairs()
    items = bench.load({CROWS_FILE.rel: Path(args.data)})
    if args.limit:
        items = items[: args.limit]
    ctx = RequestContext(render=make_renderer(tok, False), seed=0, chat_template=False, tokenize=anchored_tokenize(tok))
    reqs = [r for it in items for r in bench.requests(it, ctx)]
    engine = HFEngine(model, tok, batch_size=args.batch_size)
    anchor = engine._anchor_id()
    sent_ids = {r.key: [anchor] + list(tok(r.request.continuation, add_special_tokens=False)["input_ids"]) for r in reqs}
    n_tokens = sum(len(v) for v in sent_ids.values())
    out: dict = {
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "device": args.device, "dtype": args.dtype, "loadavg_before": os.getloadavg()},
        "n_pairs": len(items), "n_sentences": len(reqs), "request_tokens": n_tokens, "batch_size": args.batch_size,
        "methods": {},
    }
    print(f"{len(items)} pairs, {len(reqs)} sentences, {n_tokens} request tokens; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.device}/{args.dtype}; load average {os.getloadavg()[0]:.2f}")

    with torch.inference_mode():  # warm-up: first-call allocations are not part of any method's time
        model(input_ids=torch.tensor([sent_ids[reqs[0].key]], device=engine.device))

    # (a) biasshift engine
    answers: dict[str, dict] = {}
    t = time.perf_counter()
    engine.run(reqs, lambda rs: answers.update({k.key: r for k, r in rs}))
    dt = time.perf_counter() - t
    units = bench.units(items, answers)
    res = bench.compute(units).metrics
    eng_sum = {k: a.sum for k, a in answers.items()}
    out["methods"]["engine"] = {"seconds": dt, "tok_per_s": n_tokens / dt, "batches": engine.stats.batches,
                                "pct_sum": res["pct_stereotype_sum_score"], "pct_mean": res["pct_stereotype_mean_score"]}

    # (b) naive: one forward per sentence
    if not args.skip_naive:
        naive: dict[str, tuple[float, float]] = {}
        t = time.perf_counter()
        with torch.inference_mode():
            for r in reqs:
                ids = torch.tensor([sent_ids[r.key]], device=engine.device)
                logits = model(input_ids=ids).logits[0, :-1].float()
                lp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
                naive[r.key] = (float(lp.sum()), float(lp.mean()))
        dt = time.perf_counter() - t
        more_less = [(naive[f"{it.id}/more"], naive[f"{it.id}/less"]) for it in items]
        out["methods"]["naive"] = {
            "seconds": dt, "tok_per_s": n_tokens / dt,
            "pct_sum": pct([m[0] > s[0] for m, s in more_less]), "pct_mean": pct([m[1] > s[1] for m, s in more_less]),
            "max_abs_diff_sum_vs_engine": max(abs(naive[k][0] - eng_sum[k]) for k in naive),
        }

    # (c) lm-evaluation-harness
    try:
        import lm_eval
    except ImportError:
        lm_eval = None
    if args.skip_lmeval:
        pass
    elif lm_eval is None:
        print("lm-eval not installed: skipping (c). pip install 'biasshift[bench]' (lm-eval==0.4.13)")
        out["methods"]["lm_eval"] = {"skipped": "lm-eval not installed"}
    else:
        out["methods"]["lm_eval"] = run_lm_eval(args, model, tok, items, eng_sum, n_tokens)

    report(out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


def run_lm_eval(args, model, tok, items, eng_sum: dict[str, float], n_tokens: int) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    work = Path(tempfile.mkdtemp(prefix="biasshift-lmeval-"))
    try:
        os.environ["HF_DATASETS_CACHE"] = str(work / "datasets")
        csv_path = work / "crows_subset.csv"
        with open(args.data, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            fields = reader.fieldnames
        keep = {it.id for it in items}
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(r for r in rows if (r.get("") or "").strip() in keep)
        # the task's own process_results / doc_to_choice, from the installed lm-eval
        task_dir = work / "tasks"
        task_dir.mkdir()
        shutil.copy(Path(lm_eval.__file__).parent / "tasks/crows_pairs/utils.py", task_dir / "utils.py")
        (task_dir / f"{TASK}.yaml").write_text(
            f"task: {TASK}\n"
            "dataset_path: csv\n"
            "dataset_name: null\n"
            "dataset_kwargs:\n"
            "  data_files:\n"
            f"    test: {csv_path}\n"
            "test_split: test\n"
            "output_type: multiple_choice\n"
            'doc_to_text: ""\n'
            "doc_to_target: 0\n"
            "doc_to_choice: !function utils.doc_to_choice\n"
            'target_delimiter: ""\n'
            "process_results: !function utils.process_results\n"
            "metric_list:\n"
            "  - {metric: likelihood_diff, aggregation: mean, higher_is_better: false}\n"
            "  - {metric: pct_stereotype, aggregation: mean, higher_is_better: false}\n"
        )
        hflm = HFLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size, device=args.device)
        t = time.perf_counter()
        tm = TaskManager(include_path=str(task_dir))
        t_tm = time.perf_counter() - t
        t = time.perf_counter()
        res = lm_eval.simple_evaluate(model=hflm, tasks=[TASK], task_manager=tm, log_samples=True)
        dt = time.perf_counter() - t
        samples = res["samples"][TASK]
        lls = {}
        for s in samples:
            d = s["doc"]
            rid = str(d[""] if "" in d else d.get("Unnamed: 0", "")).strip()
            (m, _), (l_, _) = s["resps"][0][0], s["resps"][1][0]
            lls[f"{rid}/more"], lls[f"{rid}/less"] = float(m), float(l_)
        common = [k for k in lls if k in eng_sum]
        flags = [lls[f"{it.id}/more"] > lls[f"{it.id}/less"] for it in items if f"{it.id}/more" in lls]
        return {
            "seconds": dt, "task_manager_seconds": t_tm, "tok_per_s": n_tokens / dt,
            "pct_stereotype": 100.0 * res["results"][TASK]["pct_stereotype,none"],
            "pct_recomputed_from_samples": pct(flags) if flags else None,
            "n_matched_sentences": len(common),
            "max_abs_diff_sum_vs_engine": max((abs(lls[k] - eng_sum[k]) for k in common), default=None),
            "prefix_token_id": hflm.prefix_token_id,
            "version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(out: dict) -> None:
    m = out["methods"]
    base = m.get("naive", {}).get("seconds")
    print(f"\n{'method':<10} {'seconds':>9} {'tok/s':>9} {'speed-up vs naive':>18} {'pct(sum)':>9} {'pct(mean)':>10}")
    for name, r in m.items():
        if "skipped" in r:
            print(f"{name:<10} skipped: {r['skipped']}")
            continue
        ratio = f"{base / r['seconds']:.2f}x" if base else "-"
        ps = r.get("pct_sum", r.get("pct_stereotype"))
        pm = r.get("pct_mean")
        print(f"{name:<10} {r['seconds']:9.2f} {r['tok_per_s']:9.0f} {ratio:>18} {ps:9.3f} "
              f"{'-' if pm is None else f'{pm:.3f}':>10}")
    if "lm_eval" in m and "skipped" not in m["lm_eval"]:
        le = m["lm_eval"]
        print(f"\nlm-eval: simple_evaluate {le['seconds']:.2f} s (+ TaskManager {le['task_manager_seconds']:.2f} s); "
              f"prefix token id {le['prefix_token_id']}; {le['n_matched_sentences']} sentences matched; "
              f"max |sum logprob(lm-eval) - sum logprob(engine)| = {le['max_abs_diff_sum_vs_engine']:.2e}")
    if "naive" in m:
        print(f"naive: max |sum logprob(naive) - sum logprob(engine)| = {m['naive']['max_abs_diff_sum_vs_engine']:.2e}")
    sums = {k: r.get("pct_sum", r.get("pct_stereotype")) for k, r in m.items() if "skipped" not in r}
    agree = len({round(v, 6) for v in sums.values()}) == 1
    print(f"pct_stereotype with sum-of-logprob scoring: {sums} -> {'AGREE' if agree else 'DIFFER'}")
    print(f"biasshift default (mean per token): {m['engine']['pct_mean']:.3f}  "
          f"(differs from the sum score by design: see docs/performance.md)")
    out["agree_pct_sum"] = agree
    out["loadavg_after"] = os.getloadavg()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
