"""Loading the base model: a Hugging Face hub id, a local directory, or a GGUF file.

Every source ends up as a local Hugging Face directory:
- hub id: ``huggingface_hub.snapshot_download`` (revision pinned by the user or resolved to a commit);
- GGUF file: dequantised once through transformers' GGUF reader and saved as safetensors in the cache
  (``$BIASSHIFT_CACHE/models/gguf-<sha256[:16]>``), so later runs load in well under a second;
- local directory: used as is.

One inference dtype per run (default bfloat16 on GPU, float32 on CPU) is applied to every variant and
recorded. ``trust_remote_code`` stays off unless the user asks for it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import cache_dir, sha256_file
from .errors import ConfigError, DiskError, ModelLoadError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    source: str
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    info: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a torch device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for CUDA but no CUDA device is available")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be auto, float32, bfloat16 or float16, not {dtype!r}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def classify_source(source: str) -> str:
    p = Path(source).expanduser()
    if source.lower().endswith(".gguf"):
        if not p.is_file():
            raise ModelLoadError(f"GGUF file not found: {p}")
        return "gguf"
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"{p} is a directory but holds no config.json: not a Hugging Face model directory")
        return "local"
    if p.exists():
        raise ModelLoadError(f"{p} is neither a model directory nor a .gguf file")
    if source.count("/") > 1 or source.startswith((".", "/", "~")):
        raise ModelLoadError(f"model path {source} does not exist")
    return "hub"


def _fingerprint_dir(path: Path) -> str:
    """sha256 over the names and contents of the files that define the weights and tokenizer.

    Memoised in the cache keyed by (path, size, mtime) of every file, since hashing GBs takes seconds.
    """
    files = sorted(
        f for f in path.iterdir()
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".bin", ".model", ".txt", ".jinja"))
    )
    stamp = hashlib.sha256()
    for f in files:
        st = f.stat()
        stamp.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    memo = cache_dir() / "fingerprints.json"
    key = f"{path.resolve()}::{stamp.hexdigest()}"
    try:
        table = json.loads(memo.read_text())
    except (OSError, ValueError):
        table = {}
    if key in table:
        return table[key]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode() + b"\n")
    fp = h.hexdigest()
    table[key] = fp
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(".tmp")
        tmp.write_text(json.dumps(table))
        os.replace(tmp, memo)
    except OSError:
        pass
    return fp


def gguf_to_hf(gguf_path: Path, out_dir: Path | None = None) -> Path:
    """Dequantise a GGUF file into a float32 safetensors Hugging Face directory (cached by file hash)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    digest = sha256_file(gguf_path)
    out = out_dir or cache_dir() / "models" / f"gguf-{digest[:16]}"
    if (out / "config.json").is_file() and (out / "biasshift-source.json").is_file():
        return out
    try:
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    except Exception as exc:
        raise ModelLoadError(f"could not read GGUF file {gguf_path}: {type(exc).__name__}: {exc}") from None
    # transformers keeps a GGUF "quantizer" attached although the weights are dense after loading,
    # which blocks save_pretrained; the weights are plain float32 tensors, so detach it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    import shutil

    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")  # unique per process: concurrent conversions never mix
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "biasshift-source.json").write_text(
            json.dumps({"gguf_file": str(gguf_path.resolve()), "gguf_sha256": digest}, indent=1)
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if (out / "config.json").is_file() and (out / "biasshift-source.json").is_file():
            return out  # another process finished the same conversion first
        if isinstance(exc, OSError) or "No space left" in str(exc) or "Io error" in str(exc):
            oserr = exc if isinstance(exc, OSError) else OSError(errno.ENOSPC if "No space" in str(exc) else errno.EIO, str(exc))
            need = gguf_size_hint(model)
            raise DiskError(oserr, "saving the converted GGUF model" + (f" (needs about {_gb(need)} free)" if need else ""),
                            out) from None
        raise
    return out


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def gguf_size_hint(model: Any) -> int:
    try:
        return int(sum(p.numel() * p.element_size() for p in model.parameters()))
    except Exception:  # pragma: no cover - only used in a message
        return 0


def check_weight_files(path: Path) -> None:
    """Refuse truncated or garbage ``*.safetensors`` files before a run writes anything (header and size check).

    A safetensors file is an 8-byte little-endian header length, a JSON header whose ``data_offsets``
    give each tensor's byte range, then the data: the file must be exactly as long as the header says.
    """
    import struct

    for f in sorted(Path(path).glob("*.safetensors")):
        try:
            size = f.stat().st_size
            with open(f, "rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    raise ValueError("shorter than a safetensors header")
                (n,) = struct.unpack("<Q", head)
                if n > size - 8 or n > 100_000_000:
                    raise ValueError("the header length is larger than the file")
                header = json.loads(fh.read(n))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except OSError as exc:
            raise ModelLoadError(f"cannot read model weights {f}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError, IndexError, struct.error, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"model weights {f} are not a valid safetensors file ({exc}); re-download or "
                                 "re-save the model") from None
        if 8 + n + end != size:
            raise ModelLoadError(f"model weights {f} are truncated or padded: the header describes {8 + n + end:,} "
                                 f"bytes, the file has {size:,}; re-download or re-save the model")


def materialise(spec: ModelSpec) -> tuple[Path, dict[str, Any]]:
    """Return a local HF directory for ``spec.source`` and provenance facts about it."""
    kind = classify_source(spec.source)
    if kind == "gguf":
        g = Path(spec.source).expanduser()
        d = gguf_to_hf(g)
        src = json.loads((d / "biasshift-source.json").read_text())
        return d, {"source_kind": "gguf", "model_id": g.name, "revision": None, "fingerprint": "gguf-sha256:" + src["gguf_sha256"]}
    if kind == "local":
        d = Path(spec.source).expanduser()
        return d, {"source_kind": "local", "model_id": str(d), "revision": None, "fingerprint": "dir-sha256:" + _fingerprint_dir(d)}
    from huggingface_hub import snapshot_download

    try:
        d = Path(
            snapshot_download(
                repo_id=spec.source,
                revision=spec.revision,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"],
            )
        )
    except Exception as exc:
        raise ModelLoadError(
            f"could not fetch model '{spec.source}' (revision {spec.revision or 'main'}) from the Hugging Face hub: "
            f"{type(exc).__name__}: {exc}. Without network access pass a local directory or a .gguf file to --model"
        ) from None
    commit = d.name  # snapshots/<commit sha>
    return d, {"source_kind": "hub", "model_id": spec.source, "revision": commit, "fingerprint": f"hub:{spec.source}@{commit}"}


def load_tokenizer(path: Path, spec: ModelSpec):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
    except Exception as exc:
        raise ModelLoadError(f"could not load the tokenizer from {path}: {type(exc).__name__}: {exc}") from None


def load_weights(path: Path, spec: ModelSpec, **kwargs: Any) -> Any:
    """Load the causal LM stored in ``path`` in the run's single dtype on the run's device.

    ``dtype`` is the run dtype for every module that is not quantized; quantized loads (a
    ``quantization_config`` argument, or one stored in the checkpoint's config.json) get ``device_map``.
    ``kwargs`` go to ``from_pretrained``. Used for the base model, cached pruned checkpoints and
    pre-quantized checkpoints alike.
    """
    from transformers import AutoModelForCausalLM

    device = resolve_device(spec.device)
    load_kwargs: dict[str, Any] = {"dtype": resolve_dtype(spec.dtype, device), "trust_remote_code": spec.trust_remote_code}
    load_kwargs.update(kwargs)
    prequantized = False
    try:
        prequantized = "quantization_config" in json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        pass
    if "device_map" not in load_kwargs and ("quantization_config" in load_kwargs or prequantized):
        load_kwargs["device_map"] = str(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **load_kwargs)
    except Exception as exc:
        raise ModelLoadError(f"could not load model weights from {path}: {type(exc).__name__}: {exc}") from None
    if "device_map" not in load_kwargs:
        model.to(device)
    model.eval()
    return model


def load_model(spec: ModelSpec, **kwargs: Any) -> LoadedModel:
    """Load the base model in the run's single dtype on the run's device.

    ``kwargs`` go to ``from_pretrained`` (strategies use this for ``quantization_config``).
    """
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    path, info = materialise(spec)
    tok = load_tokenizer(path, spec)
    model = load_weights(path, spec, **kwargs)
    info.update(
        {
            "path": str(path),
            "dtype": dtype_name(dtype),
            "device": str(device),
            "architecture": type(model).__name__,
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "trust_remote_code": spec.trust_remote_code,
            "chat_template": bool(getattr(tok, "chat_template", None)),
        }
    )
    return LoadedModel(model, tok, info)


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("biasshift", "torch", "transformers", "accelerate", "tokenizers", "safetensors", "numpy", "scipy",
                 "pandas", "bitsandbytes", "hqq", "optimum-quanto", "gguf"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out
