"""Typed answers from the short JSON-like dicts tests write by hand (the fields a benchmark reads).

The store and the benchmarks take typed answers (biasshift.engine.requests); a test states only the fields
it cares about, and ``typed`` fills the others with neutral values: greedy False, no anchor, no strict
distribution, no token detail.
"""

from __future__ import annotations

from typing import Any

from biasshift.engine.requests import Answer, ChoiceAnswer, GenerateAnswer, LoglikAnswer, Sample


def answer(d: Any) -> Answer:
    if isinstance(d, (LoglikAnswer, ChoiceAnswer, GenerateAnswer)):
        return d
    if "samples" in d:
        return GenerateAnswer(tuple(s if isinstance(s, Sample) else
                                    Sample(s["text"], s.get("n_tokens", len(s["text"].split())), s.get("finish", "eos"))
                                    for s in d["samples"]))
    if "probs" in d:
        probs = d["probs"]
        raw = d.get("raw", {k: (v or 0.0) for k, v in probs.items()})
        return ChoiceAnswer(probs=probs, raw=raw, mass_outside=d.get("mass_outside", 0.0), strict=d.get("strict"),
                            tokens=d.get("tokens", {}), top_token=d.get("top_token"))
    n = d.get("n_tokens", 1)
    s = d["sum"] if "sum" in d else d["mean"] * n
    return LoglikAnswer(sum=s, mean=d.get("mean", s / n), n_tokens=n, greedy=d.get("greedy", False), anchor=d.get("anchor"))


def typed(responses: dict[str, Any]) -> dict[str, Answer]:
    return {k: answer(v) for k, v in responses.items()}
