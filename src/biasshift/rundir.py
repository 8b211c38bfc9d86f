"""Safety checks and safe writes for a run directory (docs/reliability.md).

Called by the runner so that a run (1) validates everything before it writes anything, (2) never
overwrites a file that is not its own, (3) writes every file atomically under a name unique to the
process, and (4) turns a full disk into a one-line error while keeping the store resumable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError, DiskError, StoreError

#: files and folders a biasshift run directory may hold
RUN_ENTRIES = {"config.json", "summary.json", "store.sqlite", "store.sqlite-wal", "store.sqlite-shm", "results", "units",
               "report", ".biasshift.lock"}


# ------------------------------------------------------------------------------------------------ writes
def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_text_atomic(path: Path, text: str, what: str) -> None:
    """Write ``text`` to ``path`` via a process-unique temporary file and ``os.replace``.

    A crash leaves either the old or the new file; a full disk raises :class:`DiskError` (the temporary
    file is removed, the old file is untouched).
    """
    tmp = _tmp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise DiskError(exc, what, path) from None


def write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False, default=str), f"writing {path.name}")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    write_text_atomic(path, text, f"writing {path.name}")


# ------------------------------------------------------------------------------------------------ --out
def make_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiskError(exc, "creating the run directory", out) from None


def is_run_dir(path: Path) -> bool:
    """True when ``path`` looks like a biasshift run directory (store, or a config.json written by biasshift)."""
    if (path / "store.sqlite").exists() or (path / "results").is_dir():
        return True
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and {"model", "benchmarks", "strategies", "out"} <= set(cfg)


def _is_model_dir(path: Path) -> bool:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and ("model_type" in cfg or "architectures" in cfg)


def check_out(out: Path) -> None:
    """Refuse an --out that is a file or an existing directory that is not a (possibly empty) run directory."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is an existing file, not a directory: choose a new directory for the run")
    if out.is_dir():
        try:
            entries = sorted(p.name for p in out.iterdir())
        except OSError as exc:
            raise ConfigError(f"--out {out} cannot be read ({exc.strerror}): choose another directory") from None
        foreign = [e for e in entries if not e.startswith(".")]
        if _is_model_dir(out):
            raise ConfigError(f"--out {out} is a model directory (its config.json describes a model); a run there would "
                              "overwrite the model's files: choose a separate --out directory")
        if entries and not is_run_dir(out) and foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")  # even config.json: not ours
            raise ConfigError(f"--out {out} is an existing directory that is not a biasshift run directory (it holds "
                              f"{shown}); biasshift will not write into it: choose a new or empty directory")
    parent = next((p for p in [out, *out.parents] if p.exists()), None)
    if parent is not None and not os.access(parent, os.W_OK):
        raise ConfigError(f"--out {out}: {parent} is not writable: choose a writable location")


def check_out_vs_model(out: Path, model_path: Path, source: str) -> None:
    """Refuse --out equal to, inside, or containing the model directory (a run would overwrite its config.json)."""
    o = out.expanduser().resolve()
    roots = {Path(model_path).resolve()}
    src = Path(source).expanduser()
    if src.exists():
        roots.add(src.resolve() if src.is_dir() else src.resolve().parent)
    for m in roots:
        if o == m or m in o.parents or o in m.parents:
            raise ConfigError(f"--out {out} is the model directory {m} or overlaps it; a run there would overwrite "
                              "the model's files: choose a separate --out directory")


# ------------------------------------------------------------------------------------------------ store
def check_store_file(out: Path) -> None:
    """A zero-length store.sqlite in a directory that a run already used means its answers are lost: say so."""
    db = out / "store.sqlite"
    if db.is_dir():
        raise StoreError(f"{db} is a directory, not a run store: move it away and rerun the same command")
    if not db.is_file() or db.stat().st_size > 0:
        return
    wal = out / "store.sqlite-wal"
    if wal.is_file() and wal.stat().st_size > 0:
        return  # the answers are in the write-ahead log, SQLite recovers them
    if (out / "config.json").exists() or (out / "results").is_dir():
        raise StoreError(f"{db} is empty (0 bytes) although this run directory was used before: its stored answers "
                         "are lost. Delete store.sqlite to recompute every answer from scratch, or restore it from a backup")


def check_variants_against_store(store: Any, strategies: dict[str, Any], out: Path) -> None:
    stored = store.variants()
    for vname, strategy in strategies.items():
        req = stored.get(vname, {}).get("requested")
        if req is not None and req != strategy.requested():
            raise StoreError(
                f"the run directory {out} holds results of variant {vname} built with other settings "
                f"(stored {req.get('config')}, now {strategy.requested()['config']}). Use a new --out "
                "directory, or the original settings to resume"
            )


def _pairs(cfg: dict[str, Any]) -> list[list[str]]:
    return [[str(v), str(b)] for v in cfg.get("strategies") or [] for b in cfg.get("benchmarks") or []]


def merged_config(out: Path, new: dict[str, Any]) -> dict[str, Any]:
    """config.json for this invocation, keeping the benchmarks/strategies/options of earlier ones on this directory.

    ``requested`` lists every [variant, benchmark] pair any invocation asked for (the report names those
    without a result as missing)."""
    try:
        old = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict):
        return {**new, "requested": _pairs(new)}
    cfg = dict(new)
    prev = {k: [x for x in old[k] if isinstance(x, str)] if isinstance(old.get(k), list) else []
            for k in ("benchmarks", "strategies")}
    seen = {tuple(p) for p in _pairs(new)}
    asked = old.get("requested") if isinstance(old.get("requested"), list) else _pairs(prev)
    cfg["requested"] = [p for p in asked if isinstance(p, list) and len(p) == 2 and tuple(p) not in seen] + _pairs(new)
    for key in ("benchmarks", "strategies"):
        cfg[key] = list(dict.fromkeys(prev[key] + list(new.get(key) or [])))
    opts = dict(old["options"]) if isinstance(old.get("options"), dict) else {}
    opts.update(new.get("options") or {})
    cfg["options"] = opts
    return cfg


def summary_from_results(out: Path) -> dict[str, dict[str, Any]]:
    """variant -> benchmark -> summary entry, rebuilt from results/ (when summary.json is missing or damaged)."""
    variants: dict[str, dict[str, Any]] = {}
    res = out / "results"
    if not res.is_dir():
        return variants
    for f in sorted(res.glob("*/*.json")):
        try:
            doc = json.loads(f.read_text())
            prim = doc["primary"]
            variants.setdefault(f.parent.name, {})[f.stem] = {"metric": prim["metric"], "value": prim["value"],
                                                             "n_units": doc.get("n")}
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return variants


# ------------------------------------------------------------------------------------------------ prompt length
def max_positions(path: Path) -> int | None:
    """The model's max_position_embeddings from config.json (or its text_config), None when absent."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for c in (cfg, cfg.get("text_config") or {}):
        v = c.get("max_position_embeddings")
        if isinstance(v, int) and v > 0:
            return v
    return None


def model_context(model_path: Path, tokenizer: Any) -> int | None:
    """The model's context length: max_position_embeddings (or n_positions, ...) of config.json."""
    try:
        cfg = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    if isinstance(cfg, dict) and isinstance(cfg.get("text_config"), dict):
        cfg = {**cfg["text_config"], **cfg}
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        v = cfg.get(key) if isinstance(cfg, dict) else None
        if isinstance(v, int) and v > 0:
            return v
    v = getattr(tokenizer, "model_max_length", None)
    return v if isinstance(v, int) and 0 < v < 10**7 else None


def _texts(req: Any) -> list[str]:
    kind = getattr(req, "kind", None)
    if kind == "loglik":
        return [req.context + req.continuation]
    if kind in ("choice", "generate"):
        return [req.prompt]
    return []


def _tokens_over(tokenizer: Any, text: str, limit: int) -> tuple[int, bool] | None:
    """(token count, exact?) when ``text`` has more than ``limit`` tokens, else None.

    Tokenizes growing prefixes, so a 10 MB prompt costs a prefix of a few times ``limit`` characters."""
    size = max(4 * limit, 4096)
    while True:
        part = text[:size]
        n = len(tokenizer(part, add_special_tokens=False, verbose=False)["input_ids"])
        whole = size >= len(text)
        if n > limit:
            return n, whole
        if whole:
            return None
        size *= 4


def check_prompt_lengths(bench_name: str, reqs: list[Any], tokenizer: Any, context: int | None) -> None:
    """Refuse a request whose prompt alone is longer than the model's context (one clear error, not an OOM).

    UTF-8 bytes bound the token count of byte-level and byte-fallback tokenizers from above, so only
    prompts with more bytes than the context are tokenized at all.
    """
    if context is None:
        return
    for k in reqs:
        r = k.request
        if getattr(r, "kind", None) == "loglik_ids":
            over = (len(r.ids) - 1, True) if len(r.ids) > context else None  # ids[0] is the anchor
            size = None
        else:
            texts = _texts(r)
            size = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
            if not texts or size + 2 <= context:
                continue
            over = _tokens_over(tokenizer, "".join(texts), context - 1)  # one position for the BOS/anchor token
        if over is not None:
            n, exact = over
            count = f"{n + 1:,} tokens" if exact else f"at least {n:,} tokens ({size:,} bytes)"
            raise DataError(f"benchmark {bench_name}, item {k.item_id}: the prompt is {count}, longer than the "
                            f"model's context of {context:,} tokens. Shorten or remove that row of the data file "
                            "(biasshift does not truncate prompts, which would change what is measured)")
