"""Strategy registry: names -> (strategy class, typed settings).

* **Presets** (``_PRESETS``): a name and the class + settings it stands for: ``int8``, ``kv4``,
  ``wanda`` (= Wanda, sparsity 0.5), ``wanda-2:4`` (= Wanda, pattern 2:4), ...
* **Families** (``_FAMILIES``): ``METHOD@SETTING`` parsed by the class's ``parse_setting``:
  ``sparsegpt@0.6``, ``magnitude@2:4``, ``wanda@0.3``; sweeps ``sparsegpt@0.1:0.6:0.1`` and lists
  ``wanda@2:4,4:8`` expand (in :func:`parse_list`) to one variant per setting.
* A setting that a preset already names canonicalises to the preset's name (``wanda@0.5`` is the
  variant ``wanda``, ``wanda@2:4`` is ``wanda-2:4``), so each setting is one variant, whatever it is
  called, and run directories made before ``@`` existed still resume.

Names combine with ``+`` (``wanda+int8``, ``int4+kv4``): at most one strategy per stage, applied in
the order prune -> checkpoint -> weights -> kv (:mod:`.compose`).  Combined names are normalised to
that order, so ``kv4+int4`` and ``int4+kv4`` are the same variant.

Adding a strategy = a class (one module) + one line in ``_PRESETS`` or ``_FAMILIES``
(docs/strategies.md, "Adding a strategy").
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError
from .base import ServedVariant, Strategy, StrategyParams, StrategySettings, Variant
from .compose import STAGE_ORDER, Composite, Stage

_P = "biasshift.strategies."

# name -> ("module:Class", settings of the class's Params)
_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "base": (_P + "base:Base", {}),
    "int8": (_P + "bnb:Int8", {}),
    "int4": (_P + "bnb:Int4", {}),
    "nf4": (_P + "bnb:NF4", {}),
    "kv4": (_P + "kvcache:KV4", {}),
    "kv8": (_P + "kvcache:KV8", {}),
    "kv-fp8": (_P + "kvcache:KVFP8", {}),
    "wanda": (_P + "pruning:Wanda", {"sparsity": 0.5}),
    "wanda-2:4": (_P + "pruning:Wanda", {"pattern": (2, 4)}),
    # built here with llm-compressor (W4A16, group 128 by default), or a published checkpoint given with
    # --strategy-checkpoint awq=PATH
    "awq": (_P + "llmc:LlmcAWQ", {"group_fallback": True}),
    "gptq": (_P + "llmc:LlmcGPTQ", {"group_fallback": True}),
}

# METHOD (before "@") -> "module:Class" whose parse_setting reads what follows the "@"
_FAMILIES: dict[str, str] = {
    "wanda": _P + "pruning:Wanda",
    "sparsegpt": _P + "pruning:SparseGPT",
    "magnitude": _P + "pruning:Magnitude",
    # reserved for the llmcompressor builds (strategies/llmc.py): gptq@w4g128, awq@w4g64, ...
    "gptq": _P + "llmc:LlmcGPTQ",
    "awq": _P + "llmc:LlmcAWQ",
}

_STAGE_WORDS = {
    "prune": "pruning methods",
    "checkpoint": "pre-quantized checkpoints",
    "weights": "weight quantizers",
    "kv": "KV-cache settings",
}


def _class(path: str, what: str) -> type[Strategy]:
    mod, cls = path.split(":")
    try:
        found: type[Strategy] = getattr(importlib.import_module(mod), cls)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"strategy {what} is provided by {path}, which is not available here ({exc})") from None
    return found


def _key(params: StrategyParams) -> str:
    return json.dumps(params.model_dump(mode="json"), sort_keys=True)


def _preset_for(path: str, params: StrategyParams) -> str | None:
    """The preset name of exactly these settings of this class, if there is one."""
    key = _key(params)
    for name, (p, data) in _PRESETS.items():
        if p == path and _key(_class(p, name).make_params(data, name)) == key:
            return name
    return None


def _unknown(name: str) -> ConfigError:
    fams = ", ".join(f"{f}@..." for f in _FAMILIES if f not in _PRESETS) or "none"
    return ConfigError(
        f"unknown strategy {name!r}; known: {', '.join(_PRESETS)}; with settings: {fams} (e.g. sparsegpt@0.5, "
        "wanda@2:4); and combinations A+B (see `biasshift list`)"
    )


def _expand_atomic(text: str) -> list[tuple[str, type[Strategy], StrategyParams]]:
    """One name (no ``+``) -> [(canonical name, class, params)], several for a sweep."""
    text = text.strip()
    if text in _PRESETS:
        path, data = _PRESETS[text]
        cls = _class(path, text)
        return [(text, cls, cls.make_params(data, text))]
    method, at, setting = text.partition("@")
    method = method.strip()
    if not at:
        if text in _FAMILIES:
            cls = _class(_FAMILIES[text], text)
            forms = getattr(cls, "forms_text", None)
            hint = forms() if callable(forms) else ", ".join(f"{text}@{f}" for f in cls.setting_forms)
            raise ConfigError(f"strategy {text!r} needs a setting: {hint}")
        raise _unknown(text)
    if method not in _FAMILIES:
        raise _unknown(text)
    path = _FAMILIES[method]
    cls = _class(path, text)
    out = []
    for data in cls.parse_setting(setting):
        params = cls.make_params(data, text)
        canon = _preset_for(path, params) or f"{method}@{cls.format_setting(params)}"
        if all(c != canon for c, _, _ in out):
            out.append((canon, cls, params))
    return out


def _stage(cls: type[Strategy]) -> str:
    return cls.stage


def expand(name: str) -> list[str]:
    """A strategy name (``a+b`` allowed, sweeps allowed in each part) -> its canonical variant names."""
    parts = [p.strip() for p in name.split("+")]
    if any(not p for p in parts):
        raise ConfigError(f"malformed strategy name {name!r}")
    options = [_expand_atomic(p) for p in parts]
    if len(parts) == 1:
        return [c for c, _, _ in options[0]]
    combos: list[list[tuple[str, type[Strategy], StrategyParams]]] = [[]]
    for opts in options:
        combos = [c + [o] for c in combos for o in opts]
    out: list[str] = []
    for combo in combos:
        canon = _combine(name, combo)
        if canon not in out:
            out.append(canon)
    return out


def _combine(name: str, combo: list[tuple[str, type[Strategy], StrategyParams]]) -> str:
    stages: dict[str, str] = {}
    for canon, cls, _ in combo:
        stage = _stage(cls)
        if stage == "base":
            raise ConfigError(f"{name!r}: 'base' cannot be combined (every run includes it anyway)")
        if stage in stages:
            what = "the same strategy twice" if stages[stage] == canon else f"two {_STAGE_WORDS[stage]}"
            raise ConfigError(f"{name!r} combines {what} ({stages[stage]} and {canon}); use at most one of each kind")
        stages[stage] = canon
    if "checkpoint" in stages and ("weights" in stages or "prune" in stages):
        other = stages.get("weights") or stages["prune"]
        raise ConfigError(
            f"{name!r}: {stages['checkpoint']} loads an already quantized checkpoint, which cannot be "
            f"{'quantized again' if 'weights' in stages else 'pruned'} ({other}); only a KV setting can be added"
        )
    return "+".join(stages[s] for s in STAGE_ORDER if s in stages)


def canonical(name: str) -> str:
    """Validate one strategy name (possibly ``a+b``) and return it in canonical form and stage order."""
    names_ = expand(name)
    if len(names_) != 1:
        raise ConfigError(f"{name!r} is a sweep of {len(names_)} variants ({', '.join(names_)}); list it in --strategies")
    return names_[0]


def names() -> list[str]:
    return list(_PRESETS)


def families() -> list[str]:
    return list(_FAMILIES)


def describe() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, (path, data) in _PRESETS.items():
        cls = _class(path, name)
        out[name] = cls(name, None, data).describe() or cls.description
    for method, path in _FAMILIES.items():
        try:
            cls = _class(path, method)
        except ConfigError:
            continue  # a reserved family whose module is not there (yet)
        forms = ", ".join(f"@{f}" for f in cls.setting_forms) or "@SETTING"
        out[f"{method}@..."] = f"{cls.description}; {method}{forms}"
    out["A+B"] = ("combination, applied as pruning -> checkpoint or weight quantizer -> KV cache, "
                  "e.g. wanda+int8, int4+kv4, sparsegpt@0.5+int8")
    return out


def _instantiate(canon: str, settings: StrategySettings | None) -> Strategy:
    [(name, cls, params)] = _expand_atomic(canon)
    return cls(name, settings, params)


def get(name: str, settings: StrategySettings | None = None) -> Strategy:
    canon = canonical(name)
    if "+" not in canon:
        return _instantiate(canon, settings)
    parts: list[Stage] = []
    for p in canon.split("+"):
        s = _instantiate(p, settings)
        if not isinstance(s, Stage):
            raise ConfigError(f"strategy {p} cannot be combined")
        parts.append(s)
    return Composite(canon, parts, settings)


def _split_list(spec: str) -> list[str]:
    """Split ``--strategies`` on commas; a piece starting with a digit continues the setting list of the
    ``METHOD@`` before it (``wanda@2:4,4:8`` -> ``wanda@2:4``, ``wanda@4:8``)."""
    out: list[str] = []
    method: str | None = None
    for raw in spec.split(","):
        part = raw.strip()
        if not part:
            continue
        if re.match(r"[0-9.]", part):
            if method is None:
                raise ConfigError(
                    f"--strategies: {part!r} is not a strategy name; a list of settings follows a METHOD@ "
                    "(e.g. wanda@2:4,4:8), in a name without '+'"
                )
            out.append(f"{method}@{part}")
            continue
        out.append(part)
        m, at, _ = part.partition("@")
        method = m.strip() if at and "+" not in part else None
    return out


def parse_list(spec: str) -> list[str]:
    """``--strategies`` -> canonical variant names, sweeps and lists expanded, duplicates dropped, base first."""
    out: list[str] = []
    for part in _split_list(spec):
        for canon in expand(part):
            if canon not in out:
                out.append(canon)
    if "base" not in out:
        out.insert(0, "base")  # every comparison needs the base model
    return out


def _stage_of(name: str) -> str:
    [(_, cls, _)] = _expand_atomic(name)
    return _stage(cls)


def parse_checkpoints(values: Iterable[str]) -> dict[str, str]:
    """``--strategy-checkpoint NAME=PATH_OR_HUB_ID[@REVISION]`` (repeatable) -> {name: reference}."""
    out: dict[str, str] = {}
    for v in values:
        name, sep, ref = v.partition("=")
        name, ref = name.strip(), ref.strip()
        if not sep or not name or not ref:
            raise ConfigError(f"--strategy-checkpoint must look like NAME=PATH_OR_HUB_ID (e.g. awq=./llama-awq), not {v!r}")
        if name not in _PRESETS and "@" not in name:
            raise _unknown(name)
        if _stage_of(name) != "checkpoint":
            takes = ", ".join(k for k, (p, _) in _PRESETS.items() if _stage(_class(p, k)) == "checkpoint")
            raise ConfigError(f"--strategy-checkpoint {name}=...: only {takes} load checkpoints")
        if name in out and out[name] != ref:
            raise ConfigError(f"--strategy-checkpoint given twice for {name}")
        out[name] = ref
    return out


def prepare(names_: Iterable[str], settings: StrategySettings) -> dict[str, Strategy]:
    """Instantiate and validate every strategy of a run before anything is loaded (fail fast)."""
    strategies = {n: get(n, settings) for n in names_}
    used = {p for n in strategies for p in canonical(n).split("+")}
    unused = sorted(set(settings.checkpoints) - used)
    if unused:
        raise ConfigError(f"--strategy-checkpoint given for strategies not in this run: {', '.join(unused)}")
    for s in strategies.values():
        s.validate()
    return strategies


def sweep_axis(config: Any) -> tuple[str, float, str] | None:
    """(method, sparsity, pattern) of a pruned variant's recorded ``config`` (``variant.config`` of a result
    document; a combination's config is searched for its pruning part), else None.  ``pattern`` is
    ``"unstructured"`` or ``"N:M"``; ``sparsity`` is the fraction of zeros (0.5 for 2:4)."""
    from .pruning import PRUNING_METHODS

    if not isinstance(config, dict):
        return None
    method, rate, pattern = config.get("method"), config.get("sparsity"), config.get("pattern")
    if method in PRUNING_METHODS and isinstance(rate, (int, float)) and isinstance(pattern, str):
        return str(method), float(rate), pattern
    order = config.get("order")
    if isinstance(order, list):
        for part in order:
            found = sweep_axis(config.get(part))
            if found is not None:
                return found
    return None


__all__ = [
    "ServedVariant",
    "Strategy",
    "StrategyParams",
    "StrategySettings",
    "Variant",
    "canonical",
    "describe",
    "expand",
    "families",
    "get",
    "names",
    "parse_checkpoints",
    "parse_list",
    "prepare",
    "sweep_axis",
]
