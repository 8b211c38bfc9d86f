"""Pieces shared by the generation benchmarks: decoding settings and text characteristics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..engine.requests import GenerateRequest
from ..errors import ConfigError


def decoding(prompt: str, max_new_tokens: int, samples: int, temperature: float, top_p: float, seed: int) -> GenerateRequest:
    """Greedy when ``samples`` == 1 and temperature == 0; otherwise ``samples`` seeded samples."""
    if samples < 1:
        raise ConfigError("option samples must be >= 1")
    if temperature == 0:
        if samples != 1:
            raise ConfigError("greedy decoding (temperature 0) gives one answer: use samples=1")
        return GenerateRequest(prompt=prompt, max_new_tokens=max_new_tokens)
    return GenerateRequest(prompt=prompt, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                           top_p=top_p, n=samples, seed=seed)


def text_metrics(texts: Sequence[str]) -> dict[str, Any]:
    """Text characteristics of generated answers, keys prefixed ``text_`` (docs/parsing.md)."""
    from ..textstats import text_characteristics

    return {f"text_{k}": v for k, v in text_characteristics(list(texts)).items()}
