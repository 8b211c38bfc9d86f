"""Pieces shared by the generation benchmarks: decoding settings and text characteristics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field, field_validator, model_validator

from ..engine.requests import GenerateRequest
from .options import BenchmarkOptions


class GenerationOptions(BenchmarkOptions):
    """The answer length, shared by every generation benchmark (greedy-only ones use just this)."""

    max_new_tokens: int = Field(100, ge=1)

    def greedy(self, prompt: str, max_new_tokens: int | None = None) -> GenerateRequest:
        return GenerateRequest(prompt=prompt, max_new_tokens=self.max_new_tokens if max_new_tokens is None else max_new_tokens)


class DecodingOptions(GenerationOptions):
    """Greedy or seeded sampling: greedy when ``temperature`` is 0 (then ``samples`` must be 1), otherwise
    ``samples`` answers per prompt at ``temperature`` / ``top_p``. Benchmarks inherit this model and change
    only the defaults (``class Options(DecodingOptions, defaults={...})``)."""

    samples: int = Field(1, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = 1.0

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError("must be in (0, 1]")
        return v

    @model_validator(mode="after")
    def _greedy_one_answer(self) -> "DecodingOptions":
        self.check_decoding()
        return self

    def check_decoding(self) -> None:
        """Cross-field checks (a subclass with another decoding rule, e.g. a ``mode`` option, overrides this)."""
        if self.temperature == 0 and self.samples != 1:
            raise ValueError(f"samples={self.samples} with temperature=0: greedy decoding gives one answer; "
                             "use samples=1, or a temperature > 0 to sample")

    def request(self, prompt: str, seed: int) -> GenerateRequest:
        """Greedy when temperature is 0, otherwise ``samples`` seeded samples."""
        if self.temperature == 0:
            return self.greedy(prompt)
        return GenerateRequest(prompt=prompt, max_new_tokens=self.max_new_tokens, do_sample=True,
                               temperature=self.temperature, top_p=self.top_p, n=self.samples, seed=seed)


def text_metrics(texts: Sequence[str]) -> dict[str, Any]:
    """Text characteristics of generated answers, keys prefixed ``text_`` (docs/parsing.md)."""
    from ..textstats import text_characteristics

    return {f"text_{k}": v for k, v in text_characteristics(list(texts)).items()}
