"""Build a GPTQ or AWQ checkpoint with llm-compressor's ``oneshot`` (runs in its own environment).

This file is a standalone script: biasshift runs it as a subprocess with the interpreter of the
llm-compressor environment (``.venv-llmc``, ``make llmc-env``), because llmcompressor pins an older
transformers than biasshift.  It imports only the standard library, torch, transformers and
llmcompressor, never biasshift.

    .venv-llmc/bin/python llmc_worker.py --model DIR --out DIR --method gptq|awq --bits 4 \
        --group-size 128 --calib FILE.jsonl --samples N --seqlen L --device cpu

``--calib``: JSON Lines, one calibration window per line, either ``{"input_ids": [...]}`` (token ids,
what biasshift writes: the same windows Wanda would use) or ``{"text": "..."}`` (tokenized here
without special tokens and cut to ``--seqlen`` tokens).  The first ``--samples`` windows are used.

The result in ``--out`` is a compressed-tensors checkpoint (``config.json`` with a
``quantization_config``, ``recipe.yaml``, safetensors, tokenizer) plus ``llmc-build.json`` with
what was done (versions, recipe settings, timings).  Progress goes to stdout, one line per step,
prefixed ``[llmc-worker]``.  Exit status 0 = written; 2 = bad input (message on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[llmc-worker {time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def fail(msg: str) -> None:
    print(f"llmc_worker: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="base model: a local Hugging Face model directory")
    ap.add_argument("--out", required=True, help="output directory (created if missing; must not hold a config.json)")
    ap.add_argument("--method", required=True, choices=["gptq", "awq"])
    ap.add_argument("--bits", type=int, default=4, choices=[2, 3, 4, 8])
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--symmetric", choices=["auto", "yes", "no"], default="auto",
                    help="auto: GPTQ symmetric (llmcompressor's W4A16 preset), AWQ with zero point (AutoAWQ)")
    ap.add_argument("--calib", required=True, help="calibration windows (.jsonl, see above)")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                    help="dtype the model is loaded (and calibrated) in; auto = the checkpoint's")
    ap.add_argument("--format", default="pack-quantized", choices=["pack-quantized", "naive-quantized"])
    ap.add_argument("--trust-remote-code", action="store_true")
    return ap.parse_args(argv)


def read_calibration(path: str, tok, samples: int, seqlen: int) -> list[list[int]]:
    rows: list[list[int]] = []
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read calibration file {path}: {exc}")
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                fail(f"{path}: line {lineno}: invalid JSON ({exc})")
            if isinstance(rec, dict) and isinstance(rec.get("input_ids"), list):
                ids = rec["input_ids"]
                if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
                    fail(f"{path}: line {lineno}: input_ids must be non-negative integers")
            elif isinstance(rec, dict) and isinstance(rec.get("text"), str):
                ids = tok(rec["text"], add_special_tokens=False)["input_ids"]
            else:
                fail(f'{path}: line {lineno}: expected {{"input_ids": [...]}} or {{"text": "..."}}')
            ids = ids[:seqlen]
            if ids:
                rows.append(ids)
            if len(rows) >= samples:
                break
    if not rows:
        fail(f"calibration file {path} holds no usable window")
    return rows


def select_device(device: str) -> str:
    """Make llmcompressor (which always uses the first visible accelerator) calibrate on ``device``.

    Must run before torch initialises CUDA."""
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    if device in ("cuda", "cuda:0"):
        return "cuda:0"
    if device.startswith("cuda:") and device[5:].isdigit():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [v for v in visible.split(",") if v.strip()] if visible else None
        n = int(device[5:])
        if ids is not None:
            if n >= len(ids):
                fail(f"--device {device}: CUDA_VISIBLE_DEVICES={visible} has only {len(ids)} devices")
            os.environ["CUDA_VISIBLE_DEVICES"] = ids[n]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(n)
        return device
    fail(f"--device must be cpu, cuda or cuda:N, not {device!r}")
    return device  # unreachable


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.group_size < 1 and args.group_size != -1:
        fail("--group-size must be a positive integer (or -1 for one group per output channel)")
    if args.samples < 1 or args.seqlen < 1:
        fail("--samples and --seqlen must be >= 1")
    if os.path.exists(os.path.join(args.out, "config.json")):
        fail(f"--out {args.out} already holds a model (config.json)")
    device = select_device(args.device)

    import importlib.metadata as md

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmcompressor import oneshot
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    if device != "cpu" and not torch.cuda.is_available():
        fail(f"--device {args.device}: this environment's torch ({torch.__version__}) has no CUDA; install a CUDA "
             "build of torch into the llm-compressor environment, or build on cpu")
    if device == "cpu" and not torch.accelerator.is_available():
        # llmcompressor 0.14's AWQ pins cached activations for faster host-to-device copies; without an
        # accelerator torch refuses to pin, and there is no copy to speed up: keep the tensors as they are
        from llmcompressor.pipelines.cache import IntermediatesCache

        IntermediatesCache.pin_memory = lambda self, *a, **k: None

    versions = {p: md.version(p) for p in ("llmcompressor", "compressed-tensors", "transformers", "torch")}
    log(f"versions: {versions}; threads {torch.get_num_threads()}; device {device}")

    tok = AutoTokenizer.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, trust_remote_code=args.trust_remote_code)
    model.eval()
    log(f"loaded {type(model).__name__} from {args.model} in {time.perf_counter() - t:.1f}s "
        f"(dtype {next(model.parameters()).dtype})")

    # every Linear inside the model except lm_head is quantized: check the group size first
    if args.group_size > 0:
        bad = sorted({(n.rsplit('.', 1)[-1], m.in_features) for n, m in model.named_modules()
                      if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")
                      and m.in_features % args.group_size})
        if bad:
            fail(f"group size {args.group_size} does not divide the input size of "
                 + ", ".join(f"{n} ({k})" for n, k in bad) + "; choose a group size that divides all of them")

    rows = read_calibration(args.calib, tok, args.samples, args.seqlen)
    from datasets import Dataset

    data = Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]})
    log(f"calibration: {len(rows)} windows, {sum(map(len, rows))} tokens")

    symmetric = {"auto": args.method == "gptq", "yes": True, "no": False}[args.symmetric]
    weights = {"num_bits": args.bits, "type": "int", "symmetric": symmetric,
               "strategy": "group" if args.group_size > 0 else "channel"}
    if args.group_size > 0:
        weights["group_size"] = args.group_size
    scheme = {"group_0": {"targets": ["Linear"], "weights": weights}}
    if args.method == "awq":
        recipe = [AWQModifier(duo_scaling=True), QuantizationModifier(config_groups=scheme, ignore=["lm_head"])]
    else:
        recipe = [GPTQModifier(config_groups=scheme, ignore=["lm_head"])]
    settings = {"method": args.method, "bits": args.bits, "group_size": args.group_size, "symmetric": symmetric,
                "format": args.format, "samples": len(rows), "seqlen": args.seqlen, "device": device,
                "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "ignore": ["lm_head"],
                "modifiers": [type(m).__name__ for m in recipe]}
    log(f"oneshot: {settings}")
    t = time.perf_counter()
    oneshot(model=model, dataset=data, recipe=recipe, max_seq_length=args.seqlen,
            num_calibration_samples=len(rows), shuffle_calibration_samples=False)
    oneshot_s = time.perf_counter() - t
    log(f"oneshot done in {oneshot_s:.1f}s; saving {args.format} to {args.out}")
    t = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, save_compressed=True, quantization_format=args.format)
    tok.save_pretrained(args.out)
    save_s = time.perf_counter() - t
    with open(os.path.join(args.out, "llmc-build.json"), "w", encoding="utf-8") as fh:
        json.dump({"settings": settings, "versions": versions, "oneshot_seconds": round(oneshot_s, 3),
                   "save_seconds": round(save_s, 3), "worker_seconds": round(time.perf_counter() - T0, 3),
                   "recipe_args": {"awq": {"duo_scaling": True, "n_grid": 20}} if args.method == "awq"
                   else {"gptq": {"block_size": 128, "dampening_frac": 0.01, "actorder": "static"}}},
                  fh, indent=1)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
