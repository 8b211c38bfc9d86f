"""Perplexity of a raw text corpus (docs/benchmarks.md): the quality anchor beside the bias changes.

Not a bias measure (``is_quality_metric``): the report shows it next to the bias benchmarks so that a
bias change can be read against the loss of language-modelling quality the acceleration causes.

Procedure (B's, §6.5): the whole corpus (default WikiText-2 raw, test split) is tokenized once, with the
anchor token (BOS, or EOS for tokenizers without BOS) at the start only, and cut into windows of
``window`` tokens (default 512, the evaluator's WikiText setting). Consecutive windows share one token:
window k holds tokens k(W-1) .. k(W-1)+W-1 and scores all but its first, so every token after the anchor
is a target exactly once (B's stride-W loop never scores the first token of a window; the difference is
one token in W). Perplexity = exp(mean over windows of the window's mean NLL per token); also
``ppl_token_weighted`` = exp(total NLL / total tokens). Unit: the window; ``--limit N`` scores N windows
chosen by a seeded hash (the same for every variant).

Data: ``perplexity/wikitext-2-raw-test.txt``, a plain UTF-8 text file used as is (the upstream
``wiki.test.raw``). Without a local copy it is downloaded from the Hugging Face dataset
``Salesforce/wikitext`` (``wikitext-2-raw-v1/test-00000-of-00001.parquet``); that file is Parquet,
whose rows (one line each, newlines kept) are concatenated back into the raw text. Reading Parquet needs
``pyarrow``, which biasshift does not install: without it the download is rejected with a message
saying to install pyarrow or to place the plain-text file. (No checksum is pinned: the download is the
Parquet file, whose bytes are not those of ``wiki.test.raw``, sha256 173c87a5...dd08, 1,290,590 bytes.)

Any other plain text: ``--option perplexity.text=PATH`` (absolute, or relative to the data directory;
never downloaded), e.g. the staged ``calibration/wikitext-2-raw-test.hf-rows-crlf.txt`` (WikiText-2 test
rows re-joined with CRLF: not the upstream bytes, so its perplexity is not comparable with published
WikiText-2 numbers). Text files are read with universal newlines (CRLF and CR read as LF).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from ..data import DataFile
from ..engine.requests import Answer, Keyed, LoglikIdsRequest
from ..errors import ConfigError, DataError, DependencyError
from .base import Benchmark, BenchmarkResult, Item, RequestContext
from .options import BenchmarkOptions

WIKITEXT_FILE = DataFile(
    rel="perplexity/wikitext-2-raw-test.txt",
    hf_repo="Salesforce/wikitext",
    hf_filename="wikitext-2-raw-v1/test-00000-of-00001.parquet",
    description="WikiText-2 raw, test split (plain text; the hub download is Parquet and needs pyarrow)",
)
_PARQUET_MAGIC = b"PAR1"


def windows(ids: Sequence[int], size: int) -> list[tuple[int, ...]]:
    """Cut ``ids`` into windows of ``size`` tokens sharing one token, so each id after the first is scored once."""
    if size < 2:
        raise ConfigError("the window must hold at least 2 tokens")
    out = []
    start = 0
    while start < len(ids) - 1:
        out.append(tuple(int(t) for t in ids[start:start + size]))
        start += size - 1
    return out


class WindowOptions(BenchmarkOptions):
    """Token-window benchmarks (perplexity, dialect_ppl, aave_literature): the window length in tokens."""

    window: int = Field(512, ge=2)


def chosen_windows(keys: Sequence[str], limit: int | None, seed: int) -> list[str]:
    """The window keys ``--limit`` keeps: the ``limit`` keys with the smallest seeded hash, in key order
    (the base ``select`` rule, applied to windows). All keys when ``limit`` is None.

    Taking the ``limit`` smallest hashes is stable under supersets: of any set of keys that contains the
    chosen ones, the same ones are chosen again. ``units`` relies on this to find the chosen windows among
    the stored answers, which may hold more windows (an earlier invocation with a larger limit)."""
    if limit is None or limit >= len(keys):
        return sorted(keys)
    keep = set(sorted(keys, key=lambda key: hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest())[:limit])
    return sorted(k for k in keys if k in keep)


def window_key(k: int) -> str:
    return f"w{k:06d}"


def need_tokenize(ctx: RequestContext, bench: str) -> Callable[[str], list[int]]:
    if ctx.tokenize is None:
        raise ConfigError(f"benchmark {bench} cuts token windows and needs the tokenizer in RequestContext.tokenize")
    return ctx.tokenize


def read_text(path: Path) -> str:
    """A plain UTF-8 text file, or the hub's Parquet file with a ``text`` column (rows concatenated)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head == _PARQUET_MAGIC:
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise DependencyError(
                    f"{path} is a Parquet file (the Hugging Face download); reading it needs pyarrow "
                    "(pip install pyarrow), or put the plain-text WikiText-2 raw test file (wiki.test.raw) at "
                    "<data dir>/perplexity/wikitext-2-raw-test.txt (docs/data.md)"
                ) from None
            table = pq.read_table(path)
            if "text" not in table.column_names:
                raise DataError(f"no 'text' column; columns: {', '.join(table.column_names)}", path=path, field="text")
            return "".join(t or "" for t in table.column("text").to_pylist())
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}", path=path) from None


def ppl_metrics(nll: Sequence[float], n: Sequence[int]) -> dict[str, Any]:
    """exp(mean of per-window mean NLL), exp(token-weighted mean NLL) and the means themselves."""
    if not nll:
        return {"ppl": None, "ppl_token_weighted": None, "mean_nll": None, "n_windows": 0, "n_tokens": 0}
    per = [a / b for a, b in zip(nll, n)]
    m = sum(per) / len(per)
    tw = sum(nll) / sum(n)
    return {"ppl": math.exp(m), "ppl_token_weighted": math.exp(tw), "mean_nll": m, "n_windows": len(per),
            "n_tokens": int(sum(n))}


class Perplexity(Benchmark):
    name = "perplexity"
    title = "Perplexity (WikiText-2)"
    kind = "scoring"
    data_files = (WIKITEXT_FILE,)
    primary_metric = "ppl"
    primary_description = "perplexity over non-overlapping token windows (quality, not bias; higher = worse)"
    #: higher perplexity is worse; a quality metric, not a bias measure (see is_quality_metric)
    higher_is_more_biased = True
    is_quality_metric = True
    outcome = "complex"

    class Options(WindowOptions):
        #: any plain UTF-8 text file instead of WikiText-2 (absolute, or relative to the data directory,
        #: e.g. calibration/wikitext-2-raw-test.hf-rows-crlf.txt); never downloaded. Empty: WikiText-2
        text: str = ""

    options: Options

    def __init__(self, options: dict[str, Any] | BenchmarkOptions | None = None) -> None:
        super().__init__(options)
        text = self.options.text.strip()
        self.text_file = DataFile(rel=text, description="a plain text file (option perplexity.text)") if text else None

    def files(self) -> tuple[DataFile, ...]:
        return (self.text_file,) if self.text_file is not None else (WIKITEXT_FILE,)

    def load(self, files: dict[str, Path]) -> list[Item]:
        path = files[(self.text_file or WIKITEXT_FILE).rel]
        text = read_text(path)
        if not text.strip():
            raise DataError("the text is empty", path=path)
        return [Item(id="corpus", unit="corpus", fields={"text": text})]

    @classmethod
    def select(cls, items: list[Item], limit: int | None, seed: int) -> list[Item]:
        """The corpus is one item whose units are its token windows, which exist only once the text is
        tokenized (``requests``): ``--limit`` is recorded in the item (``limit``, ``seed``), and ``requests``
        and ``units`` both pick the windows from it with :func:`chosen_windows`. No state on the instance."""
        if limit is not None and limit < 1:
            raise ConfigError("--limit must be >= 1")
        return [Item(id=it.id, unit=it.unit, fields={**it.fields, "limit": limit, "seed": seed}) for it in items]

    def requests(self, item: Item, ctx: RequestContext) -> list[Keyed]:
        ids = need_tokenize(ctx, self.name)(item.fields["text"])
        wins = windows(ids, self.options.window)
        keyed = [Keyed(window_key(k), item.id, LoglikIdsRequest(ids=w)) for k, w in enumerate(wins)]
        keep = set(chosen_windows([k.key for k in keyed], item.fields.get("limit"), item.fields.get("seed", 0)))
        return [k for k in keyed if k.key in keep]

    def units(self, items: Sequence[Item], responses: dict[str, Answer]) -> list[dict[str, Any]]:
        """One unit per chosen window, in window order; a pure function of the items and the answers."""
        out = []
        for it in items:
            limit, seed = it.fields.get("limit"), it.fields.get("seed", 0)
            for k in chosen_windows(list(responses), limit, seed):  # every answer of this benchmark is a window
                a = responses[k]
                out.append({"unit": k, "nll": -a.sum, "n_tokens": a.n_tokens, "outcome": -a.mean})
        return out

    def compute(self, units: Sequence[dict[str, Any]]) -> BenchmarkResult:
        metrics = ppl_metrics([u["nll"] for u in units], [u["n_tokens"] for u in units])
        notes = [f"windows of {self.options.window} tokens (one shared token), anchor token at the corpus start; "
                 "ppl = exp(mean of per-window mean NLL)"]
        return BenchmarkResult(metrics=metrics, primary=self.primary_metric, n_units=len(units), notes=notes)
