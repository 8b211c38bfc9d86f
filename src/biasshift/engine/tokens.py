"""Tokenisation shared by every engine: BOS policy, EOS ids, log-likelihood splits, choice token variants, and
the per-sample sampling seeds.

Pure functions of a Hugging Face tokenizer (no model, no torch), so an engine that runs the model elsewhere
(vLLM as a server) sends exactly the token ids the in-process engine would feed its model (docs/engine.md).
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import ConfigError
from .requests import LoglikIdsRequest, LoglikRequest

BOS_POLICIES = ("auto", "always", "never")


def row_seed(seed: int, key: str, sample: int) -> int:
    """The seed of one sample row: sha256 of (run seed, request key, sample index), 63 bits."""
    h = hashlib.sha256(f"{seed}\x00{key}\x00{sample}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def eos_ids(tok: Any, generation_config: Any = None) -> list[int]:
    """The ids that end a generation: the generation config's EOS id(s), then the tokenizer's."""
    ids: list[int] = []
    cand = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    for x in (list(cand) if isinstance(cand, (list, tuple)) else [cand]) + [tok.eos_token_id]:
        if x is not None and int(x) not in ids:
            ids.append(int(x))
    if not ids:
        raise ConfigError("the tokenizer defines no EOS token; generation cannot stop")
    return ids


def resolve_bos(tok: Any, policy: str) -> bool:
    """Whether to prepend BOS: ``auto`` = iff the tokenizer adds it by default, ``always``, ``never``."""
    if policy not in BOS_POLICIES:
        raise ConfigError(f"bos policy must be auto, always or never, not {policy!r}")
    if tok.bos_token_id is None or policy == "never":
        return False
    if policy == "always":
        return True
    with_special = tok("a", add_special_tokens=True)["input_ids"]
    plain = tok("a", add_special_tokens=False)["input_ids"]
    return len(with_special) > len(plain) and with_special[0] == tok.bos_token_id


def encode(tok: Any, text: str, prepend_bos: bool) -> list[int]:
    """``text`` without special tokens, BOS prepended per policy but never twice."""
    ids = list(tok(text, add_special_tokens=False)["input_ids"])
    if prepend_bos and not (ids and ids[0] == tok.bos_token_id):
        ids = [tok.bos_token_id] + ids
    return ids


def anchor_id(tok: Any, eos: list[int]) -> int:
    """The token a context-free continuation is conditioned on: BOS, else the first EOS id."""
    if tok.bos_token_id is not None:
        return int(tok.bos_token_id)
    return int(eos[0])


def encode_loglik(tok: Any, req: LoglikRequest, prepend_bos: bool, eos: list[int]) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids): the continuation's tokens are those of tokenize(context +
    continuation) after the context's; when the boundary merges, the continuation is tokenised alone."""
    ctx_plain = list(tok(req.context, add_special_tokens=False)["input_ids"]) if req.context else []
    whole = list(tok(req.context + req.continuation, add_special_tokens=False)["input_ids"])
    if whole[: len(ctx_plain)] == ctx_plain:
        cont = whole[len(ctx_plain) :]
    else:  # the boundary merged into one token: score the continuation on its own
        cont = list(tok(req.continuation, add_special_tokens=False)["input_ids"])
    ctx = ([tok.bos_token_id] if prepend_bos else []) + ctx_plain
    if not ctx:
        ctx = [anchor_id(tok, eos)]
    if not cont:
        raise ConfigError(f"empty continuation cannot be scored (context {req.context[:60]!r})")
    return ctx, cont


def encode_loglik_ids(req: LoglikIdsRequest) -> tuple[list[int], list[int]]:
    return [int(req.ids[0])], [int(t) for t in req.ids[1:]]


def choice_variants(tok: Any, choices: tuple[str, ...], policy: str) -> list[list[int]]:
    """Token ids counted for each label; raises when a label has none or two labels share one."""
    unk = tok.unk_token_id
    vocab_n = len(tok)
    per_label: list[list[int]] = []
    seen: dict[int, str] = {}
    for label in choices:
        forms = [label]
        if policy == "case_space":
            forms += [label.lower(), label.capitalize(), label.upper()]
        spaced = policy in ("space", "case_space")
        strings: list[str] = []
        for f in dict.fromkeys(forms):
            strings.append(f)
            if spaced:
                strings.append(" " + f)
        ids: list[int] = []
        for s in strings:
            enc = tok(s, add_special_tokens=False)["input_ids"]
            if len(enc) == 1:
                ids.append(int(enc[0]))
            for marker in ("▁", "Ġ") if s.startswith(" ") else ("",):
                piece = marker + s.lstrip(" ") if marker else s
                tid = tok.convert_tokens_to_ids(piece)
                if isinstance(tid, int) and tid != unk and 0 <= tid < vocab_n:
                    ids.append(tid)
        ids = list(dict.fromkeys(ids))
        if not ids:
            raise ConfigError(
                f"choice label {label!r} is not a single token of this tokenizer in any form "
                f"(policy {policy}); this benchmark cannot be scored by next-token probability"
            )
        for tid in ids:
            if tid in seen and seen[tid] != label:
                raise ConfigError(f"labels {seen[tid]!r} and {label!r} share token id {tid}")
            seen[tid] = label
        per_label.append(ids)
    return per_label


def strict_id(tok: Any, label: str) -> int | None:
    """The label's raw single-token piece (the reference code's definition), or None."""
    enc = tok(label, add_special_tokens=False)["input_ids"]
    if len(enc) == 1:
        return int(enc[0])
    tid = tok.convert_tokens_to_ids(label)
    if isinstance(tid, int) and tid != tok.unk_token_id:
        return tid
    return None


def choice_answer_fields(tok: Any, choices: tuple[str, ...], variants: list[list[int]], prob: Any,
                         top_id: int) -> dict[str, Any]:
    """The fields of a ChoiceAnswer from ``prob(token id) -> float`` (the next-token probability) and the
    argmax id: ``probs`` renormalised over the labels, ``raw``, ``mass_outside``, ``strict``, ``tokens``,
    ``top_token``. One definition for every engine."""
    raw = {lab: float(sum(prob(t) for t in ids_)) for lab, ids_ in zip(choices, variants)}
    total = sum(raw.values())
    sids = [strict_id(tok, lab) for lab in choices]
    strict = None
    if all(s is not None for s in sids):
        sp = [float(prob(s)) for s in sids]
        st = sum(sp)
        strict = {lab: (p / st if st > 0 else None) for lab, p in zip(choices, sp)}
    return {
        "probs": {lab: (v / total if total > 0 else None) for lab, v in raw.items()},
        "raw": raw,
        "mass_outside": max(0.0, 1.0 - total),
        "strict": strict,
        "tokens": {lab: [[tok.convert_ids_to_tokens(t), t, float(prob(t))] for t in ids_]
                   for lab, ids_ in zip(choices, variants)},
        "top_token": tok.convert_ids_to_tokens(int(top_id)),
    }
