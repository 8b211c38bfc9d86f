"""Independent CrowS-Pairs computation (plain transformers, one sentence at a time, no biasshift engine).

Usage: python bench/crows_independent.py MODEL_DIR CSV [LIMIT]
Prints pct_stereotype with the first token conditioned on the tokenizer's BOS token (biasshift's
definition) and, for reference, with the tokenizer's default special tokens (the reference code's
definition, which leaves the first token unscored when the tokenizer adds no BOS).
"""

import csv
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    model_dir, path = sys.argv[1], sys.argv[2]
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else None
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = list(csv.DictReader(open(path, encoding="utf-8")))[:limit]

    def mean_lp(ids: list[int]) -> float:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        return float(lp.mean())

    with_bos = default = 0
    for r in rows:
        a = [tok.bos_token_id] + tok(r["sent_more"], add_special_tokens=False)["input_ids"]
        b = [tok.bos_token_id] + tok(r["sent_less"], add_special_tokens=False)["input_ids"]
        with_bos += mean_lp(a) > mean_lp(b)
        default += mean_lp(tok(r["sent_more"])["input_ids"]) > mean_lp(tok(r["sent_less"])["input_ids"])
    n = len(rows)
    print(f"n={n} pct_stereotype(bos-anchored)={100 * with_bos / n:.4f} pct_stereotype(tokenizer-default)={100 * default / n:.4f}")


if __name__ == "__main__":
    main()
