"""The run configuration: every setting of ``biasshift run``, validated once, here.

``RunConfig`` is what ``config.json`` of a run directory holds. Unknown keys are rejected; each bad value
gives the command-line option's name and what would be accepted. The CLI, the runner, the executors and the
engines read the validated fields; none of them re-checks a setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .models import ModelSpec

DTYPE_NAMES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    revision: str | None = None
    strategies: list[str] = Field(default_factory=lambda: ["base"])
    benchmarks: list[str]
    limit: int | None = None
    #: per-benchmark limits overriding ``limit`` (``--limit-for BENCH=N``)
    limits: dict[str, int] = Field(default_factory=dict)
    batch_size: int | Literal["auto"] = "auto"
    max_batch_tokens: int | None = None
    compile: bool = False
    executor: Literal["local", "ray"] = "local"
    #: which engine answers requests (biasshift.engine registry; ``auto`` picks per request kind)
    engine: str = "hf"
    #: an already running server for a server engine (``--engine-url``)
    engine_url: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    chat_template: Literal["auto", "on", "off"] = "auto"
    bos: Literal["auto", "always", "never"] = "auto"
    out: Path
    data_dir: Path | None = None
    seed: int = 0
    trust_remote_code: bool = False
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    skip_unavailable: bool = False
    # strategy settings (docs/strategies.md)
    calib_data: str = "c4"
    calib_samples: int = 128
    calib_seqlen: int = 2048
    quantize_prompt_cache: bool = False
    strategy_checkpoints: dict[str, str] = Field(default_factory=dict)
    #: take answers a variant provably shares with base (kv* on scoring) from base instead of recomputing
    share_base_answers: bool = True

    # ------------------------------------------------------------------ validation (the one place)
    @field_validator("limit")
    @classmethod
    def _limit(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ConfigError(f"--limit must be >= 1 (got {v}); leave it out to run every unit")
        return v

    @field_validator("limits")
    @classmethod
    def _limits(cls, v: dict[str, int]) -> dict[str, int]:
        for name, n in v.items():
            if n < 1:
                raise ConfigError(f"--limit-for {name}={n}: N must be >= 1")
        return v

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, v: int | str) -> int | str:
        if v != "auto" and int(v) < 1:
            raise ConfigError(f"--batch-size must be 'auto' or a number >= 1, not {v!r}")
        return v

    @field_validator("max_batch_tokens")
    @classmethod
    def _max_batch_tokens(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ConfigError("--max-batch-tokens must be >= 1")
        return v

    @field_validator("chat_template", "bos", "executor", mode="before")
    @classmethod
    def _choice(cls, v: Any, info: Any) -> Any:
        allowed = {"chat_template": ("auto", "on", "off"), "bos": ("auto", "always", "never"),
                   "executor": ("local", "ray")}[info.field_name]
        if v not in allowed:
            opt = "--" + info.field_name.replace("_", "-")
            raise ConfigError(f"{opt} must be {', '.join(allowed[:-1])} or {allowed[-1]}, not {v!r}")
        return v

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in DTYPE_NAMES:
            raise ConfigError(f"--dtype must be auto, float32, bfloat16 or float16, not {v!r}")
        return v

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: str) -> str:
        from . import engine as engines

        if v != "auto" and v not in engines.names():
            raise ConfigError(f"--engine must be auto or one of {', '.join(engines.names())}, not {v!r}")
        return v

    @model_validator(mode="after")
    def _together(self) -> "RunConfig":
        if self.calib_samples < 1 or self.calib_seqlen < 2:
            raise ConfigError("--calib-samples must be >= 1 and --calib-seqlen >= 2")
        for what, keys in (("--option", self.options), ("--limit-for", self.limits)):
            unknown = set(keys) - set(self.benchmarks)
            if unknown:
                raise ConfigError(f"{what} given for benchmark(s) not in this run: {', '.join(sorted(unknown))}")
        from . import benchmarks as bench_registry

        for name in self.benchmarks:  # options are checked here, before any model is resolved
            bench_registry.get(name)(self.options.get(name))
        if self.compile:
            from .models import resolve_device

            if resolve_device(self.device).type != "cuda":
                raise ConfigError("--compile needs a CUDA device (torch.compile of the model forward is GPU-only here)")
        if self.executor == "ray":
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise ConfigError("--executor ray needs Ray, an optional dependency: pip install 'biasshift[ray]' "
                                  "(or use --executor local)")
        if self.engine_url is not None and self.engine == "hf":
            raise ConfigError("--engine-url names a server, but --engine hf runs in this process; use --engine vllm")
        return self

    @classmethod
    def build(cls, **fields: Any) -> "RunConfig":
        """Validate ``fields`` into a config; a type error becomes a ConfigError naming the option."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            err = exc.errors()[0]
            opt = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "the configuration"
            raise ConfigError(f"{opt}: {err['msg']} (got {err.get('input')!r})") from None

    # ------------------------------------------------------------------ views
    def limit_of(self, benchmark: str) -> int | None:
        return self.limits.get(benchmark, self.limit)

    def spec(self) -> ModelSpec:
        return ModelSpec(self.model, self.revision, self.dtype, self.device, self.trust_remote_code)

    def engine_settings(self, log_dir: str | None = None) -> Any:
        from .engine import EngineSettings

        return EngineSettings(batch_size=self.batch_size, bos=self.bos, max_batch_tokens=self.max_batch_tokens,
                              compile=self.compile, seed=self.seed, log_dir=log_dir, url=self.engine_url)

    def strategy_settings(self, progress: bool = False) -> Any:
        from . import strategies as strat_registry

        return strat_registry.StrategySettings(
            seed=self.seed,
            calib_data=self.calib_data,
            calib_samples=self.calib_samples,
            calib_seqlen=self.calib_seqlen,
            quantize_prompt_cache=self.quantize_prompt_cache,
            checkpoints=dict(self.strategy_checkpoints),
            progress=progress,
            engine=self.engine,
        )
