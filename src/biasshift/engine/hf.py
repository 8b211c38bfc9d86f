"""Batched inference on a Hugging Face causal LM: log-likelihood, next-token choice, generation.

Design points (see docs/engine.md):
- Every text is tokenised with ``add_special_tokens=False``; the BOS token is prepended explicitly
  according to ``bos_policy`` (``auto`` = do what the tokenizer does by default, ``always``, ``never``),
  and never twice (a chat template that already writes BOS is respected).
- Log-likelihood batches are right-padded with an attention mask; positions start at 0 for every row,
  so padding never changes a row's numbers beyond float noise.
- Choice and generation batches are left-padded with explicit ``position_ids`` computed from the mask.
- Batches are formed over *all* requests of a call (sorted by length, then key), cut by ``batch_size``
  and, optionally, a padded-token budget ``max_batch_tokens``, so a resumed run recomputes exactly the
  batches it lacked, with the same composition as an uninterrupted run.
- ``batch_size="auto"`` on CUDA starts high and, on out-of-memory, re-splits the failing batch in halves
  (no work is lost) and remembers per request kind the padded-token size that fitted, splitting later
  batches of that kind to it. Such sub-splits depend on the OOM history, so resume equality then holds
  within float tolerance rather than bit for bit (docs/engine.md).
- Generation is a small decoding loop of our own (not ``model.generate``) so that every sample row owns a
  ``torch.Generator`` seeded from (seed, key, sample index): the same item gets the same random stream on
  every variant and in every batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from ..errors import ConfigError
from . import tokens as T
from .base import BatchCallback, EngineSettings, EngineStats
from .requests import (Answer, ChoiceAnswer, ChoiceRequest, GenerateAnswer, GenerateRequest, Keyed, LoglikAnswer,
                       LoglikIdsRequest, LoglikRequest, Sample)

#: ``--batch-size auto``: requests per batch on CPU, and the (high) starting size on CUDA
AUTO_BATCH_CPU = 16
AUTO_BATCH_CUDA = 256


_row_seed = T.row_seed  # the per-sample seed (shared with the vLLM engine)


class HFEngine:
    """Runs requests on one loaded model. Stateless between calls apart from token-variant caches."""

    name = "hf"

    @classmethod
    def open(cls, strategy: Any, spec: Any, settings: EngineSettings) -> "HFEngine":
        """Build ``strategy``'s variant in this process (``Strategy.build``) and return an engine on it."""
        variant = strategy.build(spec)
        engine = cls(
            variant.model,
            variant.tokenizer,
            batch_size=settings.batch_size,
            bos_policy=settings.bos,
            cache_factory=variant.cache_factory,
            quantize_prompt_cache=variant.quantize_prompt_cache,
            max_batch_tokens=settings.max_batch_tokens,
            compile=settings.compile,
        )
        engine.variant_info = {**variant.info, "engine": {"name": cls.name, **engine.describe()}}
        return engine

    def close(self) -> None:
        """Drop the model (the runner frees memory between variants)."""
        self.model = None
        self.variant_info = {}
        self._variant_cache.clear()

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        batch_size: int | str = "auto",
        bos_policy: str = "auto",
        cache_factory: Callable[[], Any] | None = None,
        quantize_prompt_cache: bool = False,
        progress: Callable[[int], None] | None = None,
        max_batch_tokens: int | None = None,
        compile: bool = False,
    ) -> None:
        self.model = model
        self.tok = tokenizer
        self.device = next(model.parameters()).device
        self.cache_factory = cache_factory
        self.quantize_prompt_cache = quantize_prompt_cache
        self.stats = EngineStats()
        self.progress = progress
        self.variant_info: dict[str, Any] = {}
        if bos_policy not in ("auto", "always", "never"):
            raise ConfigError(f"bos policy must be auto, always or never, not {bos_policy!r}")
        self.bos_policy = bos_policy
        self.bos_id = tokenizer.bos_token_id
        self.eos_ids = self._eos_ids()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.prepend_bos = self._resolve_bos()
        if batch_size == "auto":
            # CUDA: start high; out-of-memory halves a batch and caps later ones (see _run)
            self.batch_size = AUTO_BATCH_CPU if self.device.type == "cpu" else AUTO_BATCH_CUDA
            self.auto_batch = True
        else:
            self.batch_size = int(batch_size)
            self.auto_batch = False
            if self.batch_size < 1:
                raise ConfigError("batch size must be >= 1")
        if max_batch_tokens is not None and int(max_batch_tokens) < 1:
            raise ConfigError("--max-batch-tokens must be >= 1")
        self.max_batch_tokens = None if max_batch_tokens is None else int(max_batch_tokens)
        self.compiled = False
        if compile:
            if self.device.type != "cuda":
                raise ConfigError(
                    f"--compile needs a CUDA device (the model is on {self.device.type}); torch.compile is not "
                    "used on CPU, where it only adds compilation time"
                )
            self.model.forward = torch.compile(self.model.forward, dynamic=True)
            self.compiled = True
        self._variant_cache: dict[tuple[tuple[str, ...], str], list[list[int]]] = {}

    # ------------------------------------------------------------------ tokenisation
    # the tokenisation itself lives in .tokens, shared with the vLLM engine
    def _eos_ids(self) -> list[int]:
        return T.eos_ids(self.tok, getattr(self.model, "generation_config", None))

    def _resolve_bos(self) -> bool:
        return T.resolve_bos(self.tok, self.bos_policy)

    def describe(self) -> dict[str, Any]:
        """What the engine does with special tokens; recorded in results."""
        return {
            "bos_policy": self.bos_policy,
            "prepend_bos": self.prepend_bos,
            "bos_token": self.tok.bos_token,
            "eos_token_ids": self.eos_ids,
            "pad_token_id": self.pad_id,
            "batch_size": self.batch_size,
            "auto_batch": self.auto_batch,
            "max_batch_tokens": self.max_batch_tokens,
            "compile": self.compiled,
        }

    def encode(self, text: str) -> list[int]:
        return T.encode(self.tok, text, self.prepend_bos)

    def _anchor_id(self) -> int:
        return T.anchor_id(self.tok, self.eos_ids)

    # ------------------------------------------------------------------ batching
    def _batches(
        self,
        items: Sequence[Keyed],
        lengths: Sequence[int],
        done: set[str],
        rows: Sequence[int] | None = None,
        spans: Sequence[int] | None = None,
    ) -> list[list[int]]:
        """Cut all requests, sorted by (-length, key), into batches of at most ``batch_size`` requests
        and, with ``max_batch_tokens``, at most that many padded tokens (always at least one request).

        ``rows`` is the number of sequences a request expands to (generation samples) and ``spans`` the
        length that sizes its memory (prompt + new tokens for generation); both default to one row and
        ``lengths``. Batches whose requests are all in ``done`` are dropped after cutting, so the cut
        never depends on what is already stored.
        """
        order = sorted(range(len(items)), key=lambda i: (-lengths[i], items[i].key))
        rows = rows if rows is not None else [1] * len(items)
        spans = spans if spans is not None else lengths
        batches = self._cut(order, rows, spans, self.batch_size, self.max_batch_tokens)
        return [b for b in batches if not all(items[i].key in done for i in b)]

    @staticmethod
    def _cost(b: Sequence[int], rows: Sequence[int], spans: Sequence[int]) -> int:
        """Padded tokens of a batch: its rows times its longest span."""
        return sum(rows[i] for i in b) * max(spans[i] for i in b)

    @staticmethod
    def _cut(order: Sequence[int], rows: Sequence[int], spans: Sequence[int], max_count: int | None,
             max_tokens: int | None) -> list[list[int]]:
        """Cut ``order`` into consecutive pieces of at most ``max_count`` requests and at most
        ``max_tokens`` padded tokens (see ``_cost``); a piece always holds at least one request."""
        out: list[list[int]] = []
        cur: list[int] = []
        n_rows = span = 0
        for i in order:
            if cur and (
                (max_count is not None and len(cur) >= max_count)
                or (max_tokens is not None and (n_rows + rows[i]) * max(span, spans[i]) > max_tokens)
            ):
                out.append(cur)
                cur, n_rows, span = [], 0, 0
            cur.append(i)
            n_rows += rows[i]
            span = max(span, spans[i])
        if cur:
            out.append(cur)
        return out

    def _run(
        self,
        items: Sequence[Keyed],
        lengths: Sequence[int],
        done: set[str],
        fn: Callable[[list[int]], list[Answer]],
        on_batch: BatchCallback,
        rows: Sequence[int] | None = None,
        spans: Sequence[int] | None = None,
    ) -> None:
        rows = rows if rows is not None else [1] * len(items)
        spans = spans if spans is not None else lengths
        kind = items[0].request.kind if items else ""
        for batch in self._batches(items, lengths, done, rows, spans):
            cap = self.stats.token_caps.get(kind)
            queue = self._cut(batch, rows, spans, None, cap) if cap is not None else [batch]
            while queue:
                b = queue.pop(0)
                try:
                    outs = fn(b)
                except torch.cuda.OutOfMemoryError:
                    if len(b) == 1 or not self.auto_batch:
                        raise
                    # auto batch size: halve the failing batch (no work lost: both halves are rerun) and
                    # remember the smaller size for later batches of this kind
                    self.stats.oom_backoffs += 1
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    half = len(b) // 2
                    self.stats.token_caps[kind] = min(self.stats.token_caps.get(kind, 1 << 62), self._cost(b[:half], rows, spans))
                    queue[:0] = [b[:half], b[half:]]
                    continue
                self.stats.batches += 1
                results = [(items[i], o) for i, o in zip(b, outs) if items[i].key not in done]
                on_batch(results)
                if self.progress:
                    self.progress(len(b))

    def run(self, items: Sequence[Keyed], on_batch: BatchCallback, done: Iterable[str] = ()) -> None:
        """Answer every request in ``items`` not in ``done``; ``on_batch`` receives each finished batch."""
        done = set(done)
        kinds = {it.request.kind for it in items}
        for kind in sorted(kinds):
            sub = [it for it in items if it.request.kind == kind]
            if kind == "loglik":
                enc = [self._encode_loglik(it.request) for it in sub]
                self._run(sub, [len(c) + len(t) for c, t in enc], done, lambda b, enc=enc: self._loglik([enc[i] for i in b]), on_batch)
            elif kind == "choice":
                enc_p = [self.encode(it.request.prompt) for it in sub]
                self._run(sub, [len(e) for e in enc_p], done, lambda b, sub=sub, enc_p=enc_p: self._choice([sub[i].request for i in b], [enc_p[i] for i in b]), on_batch)
            elif kind == "loglik_ids":  # already token ids: score ids[1:] given ids[0] (right-padded like loglik)
                enc_i = [self._encode_loglik_ids(it.request) for it in sub]
                self._run(sub, [len(c) + len(t) for c, t in enc_i], done, lambda b, enc_i=enc_i: self._loglik([enc_i[i] for i in b]), on_batch)
            elif kind == "generate":
                enc_p = [self.encode(it.request.prompt) for it in sub]
                self._run(sub, [len(e) for e in enc_p], done, lambda b, sub=sub, enc_p=enc_p: self._generate([sub[i] for i in b], [enc_p[i] for i in b]), on_batch,
                          rows=[it.request.n for it in sub], spans=[len(e) + it.request.max_new_tokens for e, it in zip(enc_p, sub)])
            else:  # pragma: no cover - guarded by the dataclasses
                raise ValueError(kind)

    # ------------------------------------------------------------------ log-likelihood
    def _encode_loglik(self, req: LoglikRequest) -> tuple[list[int], list[int]]:
        return T.encode_loglik(self.tok, req, self.prepend_bos, self.eos_ids)

    @staticmethod
    def _encode_loglik_ids(req: LoglikIdsRequest) -> tuple[list[int], list[int]]:
        return T.encode_loglik_ids(req)

    @torch.inference_mode()
    def _loglik(self, enc: list[tuple[list[int], list[int]]]) -> list[LoglikAnswer]:
        seqs = [(c + t)[:-1] for c, t in enc]
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), L), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
        self.stats.forward_tokens += int(mask.sum())
        out = []
        for r, (c, t) in enumerate(enc):
            pos = torch.arange(len(c) - 1, len(c) - 1 + len(t), device=logits.device)
            lp = torch.log_softmax(logits[r, pos].float(), dim=-1)
            tgt = torch.tensor(t, device=logits.device)
            tok_lp = lp.gather(1, tgt[:, None])[:, 0]
            greedy = bool((lp.argmax(-1) == tgt).all())
            s = float(tok_lp.sum())
            out.append(LoglikAnswer(s, s / len(t), len(t), greedy, c[0] if len(c) == 1 else None))
        return out

    # ------------------------------------------------------------------ choice
    def choice_variants(self, choices: tuple[str, ...], policy: str) -> list[list[int]]:
        """Token ids counted for each label; raises when a label has none or two labels share one."""
        key = (choices, policy)
        if key not in self._variant_cache:
            self._variant_cache[key] = T.choice_variants(self.tok, choices, policy)
        return self._variant_cache[key]

    def _strict_id(self, label: str) -> int | None:
        return T.strict_id(self.tok, label)

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), L), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, L - len(s) :] = torch.tensor(s)
            mask[r, L - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    @staticmethod
    def _positions(mask: torch.Tensor) -> torch.Tensor:
        return (mask.cumsum(-1) - 1).clamp(min=0)

    def _prefill_cache(self):
        if self.cache_factory is not None and self.quantize_prompt_cache:
            return self.cache_factory()
        return None

    @torch.inference_mode()
    def _choice(self, reqs: list[ChoiceRequest], enc: list[list[int]]) -> list[ChoiceAnswer]:
        cache = self._prefill_cache()
        if cache is None:
            ids, mask = self._left_pad(enc)
            logits = self.model(
                input_ids=ids, attention_mask=mask, position_ids=self._positions(mask), logits_to_keep=1
            ).logits[:, -1, :]
            self.stats.forward_tokens += int(mask.sum())
        else:
            logits = self._score_last_against_cache(enc, cache)
        probs = torch.softmax(logits.float(), dim=-1)
        out = []
        for r, req in enumerate(reqs):
            variants = self.choice_variants(req.choices, req.policy)
            raw = {lab: float(probs[r, ids_].sum()) for lab, ids_ in zip(req.choices, variants)}
            total = sum(raw.values())
            strict_ids = [self._strict_id(lab) for lab in req.choices]
            strict = None
            if all(s is not None for s in strict_ids):
                sp = [float(probs[r, s]) for s in strict_ids]
                st = sum(sp)
                strict = {lab: (p / st if st > 0 else None) for lab, p in zip(req.choices, sp)}
            out.append(
                ChoiceAnswer(
                    probs={lab: (v / total if total > 0 else None) for lab, v in raw.items()},
                    raw=raw,
                    mass_outside=max(0.0, 1.0 - total),
                    strict=strict,
                    tokens={
                        lab: [[self.tok.convert_ids_to_tokens(t), t, float(probs[r, t])] for t in ids_]
                        for lab, ids_ in zip(req.choices, variants)
                    },
                    top_token=self.tok.convert_ids_to_tokens(int(probs[r].argmax())),
                )
            )
        return out

    def _score_last_against_cache(self, enc: list[list[int]], cache: Any) -> torch.Tensor:
        """Prefill all but the last prompt token into ``cache`` (quantised), then score the last token
        in one decoding step, so the prediction reads the quantised prompt cache."""
        heads = [e[:-1] if len(e) > 1 else e for e in enc]
        if any(len(e) < 2 for e in enc):
            raise ConfigError("quantized-prompt scoring needs prompts of at least two tokens")
        ids, mask = self._left_pad(heads)
        pos = self._positions(mask)
        self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True, logits_to_keep=1)
        last = torch.tensor([e[-1] for e in enc], device=self.device)[:, None]
        mask2 = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = self.model(
            input_ids=last, attention_mask=mask2, position_ids=pos[:, -1:] + 1, past_key_values=cache, use_cache=True
        )
        self.stats.forward_tokens += int(mask2.sum())
        return out.logits[:, -1, :]

    # ------------------------------------------------------------------ generation
    def _expand(self, items: list[Keyed], enc: list[list[int]]):
        rows = []
        for it, e in zip(items, enc):
            req: GenerateRequest = it.request  # type: ignore[assignment]
            for s in range(req.n):
                rows.append((it, req, s, e))
        return rows

    @staticmethod
    def _pick(logits: torch.Tensor, req: GenerateRequest, gen: torch.Generator | None) -> int:
        if not req.do_sample:
            return int(logits.argmax())
        probs = torch.softmax(logits.float() / req.temperature, dim=-1)
        sp, si = probs.sort(descending=True, stable=True)
        if req.top_p < 1.0:
            keep = (sp.cumsum(0) - sp) < req.top_p
            keep[0] = True
            sp = sp[keep]
            si = si[keep]
        cdf = sp.cumsum(0)
        u = torch.rand((), generator=gen, dtype=torch.float64).item() * float(cdf[-1])
        j = int(torch.searchsorted(cdf.double(), torch.tensor(u, dtype=torch.float64, device=cdf.device), right=True))
        return int(si[min(j, len(si) - 1)])

    @torch.inference_mode()
    def _generate(self, items: list[Keyed], enc: list[list[int]]) -> list[GenerateAnswer]:
        rows = self._expand(items, enc)
        ids, mask = self._left_pad([r[3] for r in rows])
        pos = self._positions(mask)
        max_new = max(r[1].max_new_tokens for r in rows)
        gens = []
        for it, req, s, _ in rows:
            if req.do_sample:
                g = torch.Generator(device="cpu")
                g.manual_seed(_row_seed(req.seed, it.key, s))
                gens.append(g)
            else:
                gens.append(None)
        cache = self.cache_factory() if self.cache_factory is not None else None
        kwargs: dict[str, Any] = {"use_cache": True}
        if cache is not None:
            kwargs["past_key_values"] = cache
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1, **kwargs)
        self.stats.forward_tokens += int(mask.sum())
        past = out.past_key_values
        new_tokens: list[list[int]] = [[] for _ in rows]
        finished = [False] * len(rows)
        finish = ["length"] * len(rows)
        eos = set(self.eos_ids)
        for step in range(max_new):
            logits = out.logits[:, -1, :]
            greedy = logits.argmax(-1).tolist()
            nxt = []
            for r, (_it, req, _s, _) in enumerate(rows):
                if finished[r]:
                    nxt.append(self.pad_id)
                    continue
                t = self._pick(logits[r], req, gens[r]) if req.do_sample else int(greedy[r])
                if t in eos:
                    finished[r] = True
                    finish[r] = "eos"
                else:
                    new_tokens[r].append(t)
                    self.stats.generated_tokens += 1
                    if len(new_tokens[r]) >= req.max_new_tokens:
                        finished[r] = True
                nxt.append(t)
            if all(finished) or step == max_new - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos[:, -1:] + 1
            out = self.model(
                input_ids=torch.tensor(nxt, device=self.device)[:, None],
                attention_mask=mask,
                position_ids=pos,
                past_key_values=past,
                use_cache=True,
            )
            past = out.past_key_values
        by_item: dict[str, list[Sample]] = {}
        for r, (it, _req, _s, _) in enumerate(rows):
            text = self.tok.decode(new_tokens[r], skip_special_tokens=True)
            by_item.setdefault(it.key, []).append(Sample(text.strip(), len(new_tokens[r]), finish[r]))
        return [GenerateAnswer(tuple(by_item[it.key])) for it in items]


def anchored_tokenize(tokenizer: Any) -> Callable[[str], list[int]]:
    """``text`` -> [anchor] + its token ids (no special tokens), for benchmarks that cut token windows.

    The anchor is BOS, or EOS when the tokenizer has no BOS: the token the engine conditions a
    context-free ``LoglikRequest`` on, so the first text token is scored too.
    """
    anchor = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if anchor is None:
        raise ConfigError("the tokenizer defines neither BOS nor EOS; token windows need an anchor token")

    def tokenize(text: str) -> list[int]:
        return [int(anchor)] + [int(t) for t in tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]]

    return tokenize


def batch_size_arg(value: str) -> int | str:
    if value == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"--batch-size must be 'auto' or a positive integer, not {value!r}") from None
    if n < 1 or math.isnan(n):
        raise ConfigError(f"--batch-size must be >= 1, not {n}")
    return n
