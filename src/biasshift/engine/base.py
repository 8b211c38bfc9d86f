"""The engine contract: what the runner and the executors need from anything that answers requests.

An engine answers the typed requests of :mod:`.requests` (log-likelihood, token windows, next-token choice,
generation) with the typed answers of the same module, batch by batch, handing every finished batch to a
callback (the runner stores it, so a killed run loses at most the batch in flight). Engines register by
name in :mod:`biasshift.engine` (``make_engine``); adding one is one module with a class that satisfies
:class:`Engine` and an ``open`` classmethod, plus one line in the registry. Neither the runner nor the
executors name an engine class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from .requests import Answer, Keyed

BatchCallback = Callable[[list[tuple[Keyed, Answer]]], None]


@dataclass
class EngineStats:
    """What an engine measured about its own work (recorded in results as ``throughput``)."""

    forward_tokens: int = 0
    generated_tokens: int = 0
    batches: int = 0
    oom_backoffs: int = 0
    #: auto batch size: per request kind, the padded-token cap learnt from out-of-memory errors
    token_caps: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineSettings:
    """The run settings an engine reads (``biasshift run`` options), validated on ``RunConfig``."""

    batch_size: int | Literal["auto"] = "auto"
    bos: Literal["auto", "always", "never"] = "auto"
    max_batch_tokens: int | None = None
    compile: bool = False
    seed: int = 0
    #: where an engine that runs as its own process keeps its logs (the run directory)
    log_dir: str | None = None
    #: an existing server for engines that talk to one (``--engine-url``)
    url: str | None = None


@runtime_checkable
class Engine(Protocol):
    """Answers requests on one variant. ``run`` calls ``on_batch`` with every finished batch of
    (request, answer) pairs, skipping keys in ``done``; the batches of a resumed run are those an
    uninterrupted run would have made for the missing keys."""

    #: registry name ("hf", "vllm"), stored with every answer
    name: str
    stats: EngineStats
    #: called with the number of requests finished, for progress bars (None: no progress)
    progress: Callable[[int], None] | None
    #: the variant as built for this engine (strategy, config, measured facts, memory, notes; JSON), with
    #: ``engine`` = ``describe()``; the runner stores it as the variant's record
    variant_info: dict[str, Any]

    # An engine class also has ``open(strategy, spec, settings) -> Engine`` (a classmethod): build the
    # strategy's variant the way this engine loads models (in process, or as a served directory) and
    # return an engine on it. ``make_engine`` calls it; see biasshift/engine/__init__.py.

    def run(self, items: Sequence[Keyed], on_batch: BatchCallback, done: Iterable[str] = ()) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What the engine does with special tokens, batching and its own settings; recorded in results."""
        ...

    def close(self) -> None:
        """Release the model (and any server process); the engine is unusable afterwards."""
        ...
