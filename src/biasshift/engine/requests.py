"""The request kinds a benchmark can ask the engine for, and the prompt structure behind them.

Requests are plain frozen dataclasses: JSON-serialisable, hashable and compared field by field when a
run resumes (a stored answer is only reused for an identical request).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Union


@dataclass(frozen=True)
class Prompt:
    """A benchmark prompt in both renderings.

    ``text`` is the prompt as the model sees it without a chat template (already including any answer
    prefix). ``messages`` is the chat rendering, ``((role, content), ...)``; when it is empty the prompt
    has no chat form and ``text`` is always used. ``prefix`` is appended right after the chat template's
    generation prompt (chat rendering only).
    """

    text: str
    messages: tuple[tuple[str, str], ...] = ()
    prefix: str = ""


@dataclass(frozen=True)
class LoglikRequest:
    """Log-likelihood of ``continuation`` given ``context`` (teacher forcing).

    Answer: ``sum`` and ``mean`` log-probability over the continuation's tokens, ``n_tokens``, ``greedy``
    (every continuation token was the argmax), ``anchor`` (the token id that conditions the first
    continuation token when the context is empty).
    """

    context: str
    continuation: str
    kind: Literal["loglik"] = "loglik"


@dataclass(frozen=True)
class LoglikIdsRequest:
    """Log-likelihood of the token ids ``ids[1:]``, each given ``ids[0]`` and the ids before it.

    For token windows (perplexity): the benchmark tokenizes once (``RequestContext.tokenize``) and cuts
    the ids into windows itself, so no text is re-tokenized. Answer: as for ``LoglikRequest`` (``sum``,
    ``mean``, ``n_tokens`` = len(ids) - 1, ``greedy``).
    """

    ids: tuple[int, ...]
    kind: Literal["loglik_ids"] = "loglik_ids"

    def __post_init__(self) -> None:
        if len(self.ids) < 2:
            raise ValueError("LoglikIdsRequest needs at least two token ids (one to condition on, one to score)")


ChoicePolicy = Literal["exact", "space", "case_space"]


@dataclass(frozen=True)
class ChoiceRequest:
    """Next-token distribution after ``prompt`` restricted to the candidate labels.

    Each label's probability is the sum over its token variants (policy ``case_space``: the label, its
    lower/Capitalised/UPPER forms, each with and without a leading space; ``space``: the label with and
    without a leading space; ``exact``: the raw piece only). Answer: ``probs`` renormalised over the
    labels, ``raw`` unnormalised mass per label, ``mass_outside``, ``strict`` (renormalised over the exact
    pieces only, the reference code's definition) and ``tokens`` (the variants and their probabilities).
    """

    prompt: str
    choices: tuple[str, ...]
    policy: ChoicePolicy = "case_space"
    kind: Literal["choice"] = "choice"


@dataclass(frozen=True)
class GenerateRequest:
    """Text generation. ``n`` samples; greedy when ``do_sample`` is false (then n must be 1).

    Sampling is seeded per (run seed, request key, sample index), so a variant draws the same random
    numbers as the base model for the same item, whatever the batch composition.
    """

    prompt: str
    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    kind: Literal["generate"] = "generate"

    def __post_init__(self) -> None:
        if not self.do_sample and self.n != 1:
            raise ValueError("greedy generation is deterministic: n must be 1 when do_sample is false")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError("sampling needs temperature > 0 and 0 < top_p <= 1")


Request = Union[LoglikRequest, ChoiceRequest, GenerateRequest, LoglikIdsRequest]

_KINDS = {"loglik": LoglikRequest, "choice": ChoiceRequest, "generate": GenerateRequest, "loglik_ids": LoglikIdsRequest}


@dataclass(frozen=True)
class Keyed:
    """A request with its key (unique within a benchmark) and the item it belongs to."""

    key: str
    item_id: str
    request: Request
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def request_to_dict(req: Request) -> dict[str, Any]:
    d = asdict(req)
    return d


def request_from_dict(d: dict[str, Any]) -> Request:
    d = dict(d)
    cls = _KINDS[d["kind"]]
    if cls is ChoiceRequest:
        d["choices"] = tuple(d["choices"])
    if cls is LoglikIdsRequest:
        d["ids"] = tuple(d["ids"])
    return cls(**d)


# ---------------------------------------------------------------------------------------------- answers
# One typed answer per request kind, next to the requests. The store keeps them as JSON (``answer_to_dict``)
# and gives them back typed (``answer_from_dict``); answers stored before ``engine`` existed read as "hf".


@dataclass(frozen=True)
class LoglikAnswer:
    """Answer to a ``LoglikRequest`` or ``LoglikIdsRequest``: log-probability ``sum`` and ``mean`` over the
    ``n_tokens`` scored tokens, ``greedy`` (every scored token was the argmax) and ``anchor`` (the token id
    that conditioned the first scored token when the context was empty; None otherwise)."""

    sum: float
    mean: float
    n_tokens: int
    greedy: bool
    anchor: int | None = None
    #: which engine computed it ("hf", "vllm")
    engine: str = "hf"


@dataclass(frozen=True)
class ChoiceAnswer:
    """Answer to a ``ChoiceRequest``: ``probs`` renormalised over the labels (None when no label has mass),
    ``raw`` unnormalised mass per label, ``mass_outside``, ``strict`` (over the exact pieces only; None when a
    label has no single-token piece), ``tokens`` (label -> [[piece, id, prob], ...]) and ``top_token``."""

    probs: dict[str, float | None]
    raw: dict[str, float]
    mass_outside: float
    strict: dict[str, float | None] | None = None
    tokens: dict[str, list[list[Any]]] = field(default_factory=dict)
    top_token: str | None = None
    engine: str = "hf"


@dataclass(frozen=True)
class Sample:
    """One generated continuation: the decoded ``text`` (stripped), its ``n_tokens`` and why it ended
    (``finish``: "eos" or "length")."""

    text: str
    n_tokens: int
    finish: str


@dataclass(frozen=True)
class GenerateAnswer:
    """Answer to a ``GenerateRequest``: its ``n`` samples in order."""

    samples: tuple[Sample, ...]
    engine: str = "hf"

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.samples]


Answer = Union[LoglikAnswer, ChoiceAnswer, GenerateAnswer]

_ANSWERS: dict[str, type] = {"loglik": LoglikAnswer, "loglik_ids": LoglikAnswer, "choice": ChoiceAnswer,
                             "generate": GenerateAnswer}


def answer_type(kind: str) -> type:
    return _ANSWERS[kind]


def answer_to_dict(ans: Answer) -> dict[str, Any]:
    return asdict(ans)


def answer_from_dict(kind: str, d: dict[str, Any]) -> Answer:
    """The typed answer of a stored JSON answer to a request of ``kind`` (raises KeyError/TypeError when a
    field is missing or unknown: the store reports it with the record's place)."""
    cls = _ANSWERS[kind]
    if cls is GenerateAnswer:
        extra = set(d) - {"samples", "engine"}
        if extra:
            raise TypeError(f"unknown field(s) {', '.join(sorted(extra))}")
        return GenerateAnswer(tuple(Sample(**s) for s in d["samples"]), d.get("engine", "hf"))
    return cls(**d)
