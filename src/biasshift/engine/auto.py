"""``--engine auto``: each request kind goes to the engine measured faster for it, the same for every variant of
a run (docs/performance.md, "vLLM"): generation to vLLM, scoring (log-likelihood, token windows, choice) to the
HF engine. Without a vLLM environment every kind goes to the HF engine (recorded in the variant's engine info).

The sub-engines are opened on first use, on the same strategy and model spec, so a run with only scoring
benchmarks never starts a vLLM server and one with only generation benchmarks never loads the model in this
process. A variant vLLM cannot serve is refused when the engine opens, before any answer is stored: answering
its generation with the HF engine while the other variants use vLLM would compare two samplers, not two models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import ConfigError
from .base import BatchCallback, EngineSettings, EngineStats
from .requests import Keyed

#: request kind -> engine (bench/speed_vllm.py; docs/performance.md)
ROUTES: dict[str, str] = {"generate": "vllm", "loglik": "hf", "loglik_ids": "hf", "choice": "hf"}
#: on a GPU the two engines share it: vLLM takes this share of its memory, the HF model the rest
AUTO_GPU_MEMORY_UTILIZATION = 0.5


class AutoEngine:
    """Dispatches each request kind to a lazily opened sub-engine (``ROUTES``)."""

    name = "auto"

    def __init__(self, strategy: Any, spec: Any, settings: EngineSettings, *, served: Any = None,
                 openers: dict[str, Callable[[], Any]] | None = None, routes: dict[str, str] | None = None) -> None:
        self.strategy = strategy
        self.spec = spec
        self.settings = settings
        self.routes = dict(routes or ROUTES)
        self.served = served
        self._openers = openers or {"hf": self._open_hf, "vllm": self._open_vllm}
        self.engines: dict[str, Any] = {}
        self._progress: Callable[[int], None] | None = None
        self._base_stats = EngineStats()

    @classmethod
    def open(cls, strategy: Any, spec: Any, settings: EngineSettings) -> Any:
        from . import vllm

        if not (vllm.available() or settings.url):
            from .hf import HFEngine

            eng = HFEngine.open(strategy, spec, settings)
            eng.variant_info["engine"] = {**eng.variant_info.get("engine", {}),
                                          "selected_by": "--engine auto: no vLLM environment (make vllm-env), "
                                                         "every request kind on the HF engine"}
            return eng
        try:
            served = vllm.export_variant(strategy, spec)
        except ConfigError as exc:
            raise ConfigError(f"--engine auto answers generation requests with vLLM for every variant, and {exc}. "
                              "Use --engine hf for this run") from None
        return cls(strategy, spec, settings, served=served)

    # ------------------------------------------------------------------ sub-engines
    def _open_hf(self) -> Any:
        from .hf import HFEngine

        return HFEngine.open(self.strategy, self.spec, self.settings)

    def _open_vllm(self) -> Any:
        from .vllm import VLLMEngine

        extra = []
        from ..models import resolve_device

        if resolve_device(self.spec.device).type == "cuda":
            extra = ["--gpu-memory-utilization", str(AUTO_GPU_MEMORY_UTILIZATION)]
        return VLLMEngine.open(self.strategy, self.spec, self.settings, served=self.served, extra_args=extra)

    def engine_for(self, kind: str) -> Any:
        name = self.routes[kind]
        if name not in self.engines:
            eng = self._openers[name]()
            eng.progress = self._progress
            self.engines[name] = eng
        return self.engines[name]

    # ------------------------------------------------------------------ protocol
    @property
    def progress(self) -> Callable[[int], None] | None:
        return self._progress

    @progress.setter
    def progress(self, fn: Callable[[int], None] | None) -> None:
        self._progress = fn
        for e in self.engines.values():
            e.progress = fn

    @property
    def stats(self) -> EngineStats:
        s = EngineStats()
        for e in self.engines.values():
            s.forward_tokens += e.stats.forward_tokens
            s.generated_tokens += e.stats.generated_tokens
            s.batches += e.stats.batches
            s.oom_backoffs += e.stats.oom_backoffs
            s.token_caps.update({f"{e.name}:{k}": v for k, v in e.stats.token_caps.items()})
        return s

    @property
    def variant_info(self) -> dict[str, Any]:
        """The served variant's record, completed by the HF engine's (memory, measured) once it is open."""
        info: dict[str, Any] = dict(getattr(self.served, "info", None) or {})
        for name in ("vllm", "hf"):
            if name in self.engines:
                info.update({k: v for k, v in self.engines[name].variant_info.items() if k != "engine"})
        info["engine"] = self.describe()
        return info

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "routes": dict(self.routes),
                "engines": {n: e.describe() for n, e in self.engines.items()}}

    def run(self, items: Sequence[Keyed], on_batch: BatchCallback, done: Iterable[str] = ()) -> None:
        done = set(done)
        by_engine: dict[str, list[Keyed]] = {}
        for it in items:
            by_engine.setdefault(self.routes[it.request.kind], []).append(it)
        for name in sorted(by_engine):  # "hf" before "vllm": a fixed order
            sub = by_engine[name]
            if all(it.key in done for it in sub):
                continue
            self.engine_for(sub[0].request.kind).run(sub, on_batch, done)

    def close(self) -> None:
        errors = []
        for e in list(self.engines.values()):
            try:
                e.close()
            except Exception as exc:  # pragma: no cover - close every engine, then report
                errors.append(exc)
        self.engines.clear()
        if errors:  # pragma: no cover
            raise errors[0]
