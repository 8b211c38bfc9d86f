"""Number parser and error for WorldBench answers (docs/parsing.md, WorldBench).

The model is asked for one World Bank indicator of a country and told to
answer with the number only; with few-shot example answers such as
``8,703,771`` or ``4.707333333333334``. Real answers still come with text,
units, markdown, ranges, years, echoes of the question and special tokens.

:func:`parse_number` (ours)
---------------------------
Pre-processing: keep the text after the last ``[/INST]``; cut at the first
end-of-sequence token and delete other special-token strings; turn unicode
minus signs and dashes into ``-``; turn superscript exponents into ``^``;
rewrite scientific notation written as ``1.2 × 10^6``, ``1.2x10^6``,
``1.2 * 10**6`` or LaTeX ``1.2 \\times 10^{6}`` into ``1.2e6``; turn
non-breaking/thin-space digit grouping (``8 703 771``) into commas; delete
markdown (``*``, ``_``, backticks); drop a leading numbered-list marker
("1. 106,000") when the rest of the line starts with a number.

Candidates: every number in the text, where a number is

* an optional sign (``-3.5``; the minus must touch the digits and must not
  follow a word character or digit, so "5-7" is a range, not -7),
* digits with comma thousands separators (``8,703,771``), European dot
  grouping with at least two groups (``8.703.771``), or plain digits with an
  optional decimal part (``4.707333333333334``, ``.5``),
* optional exponent (``1.2e6``, ``1.2E+06``),
* optional percent sign or word (``%``, ``\\%``, "percent"), which is noted
  but does not change the value (the indicators are already in percent),
* optional multiplier after the number: thousand, million, billion,
  trillion, hundred, and the abbreviations k, m/mn/mln, b/bn, t/tn. The
  one-letter forms only count when they touch the number (``1.2B``) or the
  number has a currency sign (``$3 T``), so "4.0 t" (tonnes) stays 4.0.

Currency prefixes (``$``, ``US$``, ``USD``, ``€``, ``£``) are allowed before
a number. Numbers glued to letters (``CO2``, ``PM2.5``), ordinals
(``2nd``), and denominators (after "per", "/" or "out of", as in "per
100,000 live births") are not candidates.

Ranges: "5-7 million", "5 to 7%", "between 5 and 7 million", "from 5 to 7"
give the midpoint; a multiplier written only after the second number also
applies to the first when the first is smaller than the second ("5-7
million" = 5e6..7e6, but "500,000 to 1 million" keeps 500,000).

Choice: the first candidate in reading order is the answer (if the answer
repeats the Switzerland example first, that is the parse; we do not guess).
Years are skipped when another number exists: a plain integer 1900..2100
(no comma, decimal, unit, sign or currency) is skipped if it has year
context ("in 2021", "as of 2020", "(2019)", "2020:", "2019 data") or lies in
2010..2030, and a non-year number exists.

Status: ``ok`` (value set), ``empty`` (nothing after removing special
tokens), ``unparseable`` (no number, or the first number overflows to
infinity), ``year_like`` (the only number(s) are
plain integers and the first lies in 2010..2030; value None). This narrows
A's rule (any value within 10 of 2020, and every negative value, become
NaN): 1990, 2005 or a negative number are kept as values here.

:func:`abs_rel_error` is ``|p - t| / max(|p|, |t|)``; 0 when both are 0;
clipped to 1 when the signs differ.

:func:`parse_number_reference` reproduces A's parser (docs/parsing.md,
WorldBench, "Deviations from A's parser"; ``pd.to_numeric(errors="coerce")`` included) for comparison.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from biasshift.textstats import strip_special_tokens

__all__ = [
    "NumberParse",
    "parse_number",
    "abs_rel_error",
    "parse_number_reference",
]


@dataclass(frozen=True)
class NumberParse:
    """Result of :func:`parse_number`.

    ``value``: the number or None. ``status``: ``"ok"``, ``"empty"``,
    ``"unparseable"`` or ``"year_like"``. ``detail``: how it was read.
    """

    value: float | None
    status: str
    detail: str = ""


# --------------------------------------------------------------------------
# Pre-processing
# --------------------------------------------------------------------------

_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_DASHES = str.maketrans({"\u2212": "-", "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-",
                         "\u2014": "-", "\u2015": "-", "\uff0d": "-"})
_SCI_RE = re.compile(
    r"(\d(?:[\d,]*\d)?(?:\.\d+)?)\s*(?:[x×✕*·]|\\times|\\cdot)\s*10\s*(?:\^|\*\*)\s*\{?\s*([-+]?\d+)\s*\}?"
)
_SUPER_EXP_RE = re.compile(r"10([⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺]+)")
_THIN_GROUP_RE = re.compile(r"(?<=\d)[\u00a0\u202f\u2009\u2007](?=\d{3}(?!\d))")
_LIST_MARKER_RE = re.compile(
    r"^(\s*)\d{1,2}[.)]\s+(?=(?:[~≈$€£]|us\$|usd|approx\w*|about|around|roughly|estimated|-)?\s*\d)",
    re.IGNORECASE | re.MULTILINE,
)


def _preprocess(text: str) -> str:
    if "[/INST]" in text:
        text = text.rsplit("[/INST]", 1)[1]
    s = strip_special_tokens(text)
    s = _SUPER_EXP_RE.sub(lambda m: "10^" + m.group(1).translate(_SUPERSCRIPT), s)
    s = s.translate(_DASHES)
    s = _SCI_RE.sub(lambda m: m.group(1) + "e" + m.group(2), s)
    s = _THIN_GROUP_RE.sub(",", s)
    s = s.replace("\u00a0", " ").replace("\u202f", " ")
    s = re.sub(r"[*_`]+", " ", s)
    s = _LIST_MARKER_RE.sub(r"\1", s)
    return s


# --------------------------------------------------------------------------
# Candidate numbers
# --------------------------------------------------------------------------

_MULT_WORDS = {
    "hundred": 1e2, "thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12,
    "mn": 1e6, "mln": 1e6, "bn": 1e9, "tn": 1e12,
    "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12,
}
_NUM_CORE = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?:\.\d{3}){2,}(?!\d)|\d+(?:\.\d+)?|\.\d+"
_NUM_RE = re.compile(
    r"(?P<cur>(?:us\s?\$|usd|\$|€|£|eur|gbp)\s?)?"
    r"(?P<sign>(?<![\w\d.,\-])-(?=\.?\d))?"
    r"(?<![A-Za-z\d_.])(?P<core>" + _NUM_CORE + r")"
    r"(?P<exp>[eE][-+]?\d+)?"
    r"(?P<ord>(?:st|nd|rd|th)\b)?"
    r"(?P<pct>\s?(?:\\?%|percent\b|per cent\b|pct\b))?"
    r"(?P<mult>(?P<msp>\s?)(?:hundred|thousand|million|billion|trillion|mln|mn|bn|tn|k|m|b|t)(?![a-z]))?",
    re.IGNORECASE,
)
_YEAR_BEFORE_RE = re.compile(
    r"(?:\bin|\bas of|\bsince|\bby|\bfrom|\buntil|\bthrough|\bduring|\byear|\bfor|\bof|\bcirca|\bc\.|\(|\baround)\s*$",
    re.IGNORECASE,
)
_YEAR_AFTER_RE = re.compile(r"^\s*(?:\)|:|data\b|estimate|figure|census|value|numbers?\b)",
                            re.IGNORECASE)
_DENOM_BEFORE_RE = re.compile(r"(?:\bper\s*|/\s*|\bout of\s*|\bevery\s*)$", re.IGNORECASE)
_RANGE_BETWEEN_RE = re.compile(r"\b(?:between|from)\s*(?:us\s?\$|usd|\$|€|£)?\s*$", re.IGNORECASE)


@dataclass
class _Cand:
    value: float
    start: int
    end: int
    plain_int: bool
    has_mult: bool
    mult: float
    pct: bool
    raw: str


def _make_cand(m: re.Match) -> _Cand | None:
    if m.group("ord"):
        return None
    core = m.group("core")
    if re.fullmatch(r"\d{1,3}(?:\.\d{3}){2,}", core):
        num = core.replace(".", "")
    else:
        num = core.replace(",", "")
    if m.group("exp"):
        num += m.group("exp")
    try:
        value = float(num)
    except ValueError:  # pragma: no cover - the regex only admits numbers
        return None
    mult = 1.0
    mword = None
    if m.group("mult"):
        mword = m.group("mult").strip().lower()
        single = len(mword) == 1
        if single and m.group("msp") and not m.group("cur"):
            mword = None  # "4.0 t" (tonnes), "5 m" (metres): not a multiplier
        else:
            mult = _MULT_WORDS[mword]
    last = "mult" if mword else "pct" if m.group("pct") else "exp" if m.group("exp") else "core"
    end = m.end(last)
    if m.group("sign"):
        value = -value
    plain = (
        "," not in core and "." not in core and not m.group("exp") and not mword and not m.group("pct")
        and not m.group("cur") and not m.group("sign")
    )
    raw = m.string[m.start(): end]
    return _Cand(value * mult, m.start(), end, plain, mword is not None, mult, bool(m.group("pct")), raw)


def _short(raw: str, n: int = 40) -> str:
    raw = raw.strip()
    return raw if len(raw) <= n else raw[:n] + "..."


def _is_yearish(c: _Cand) -> bool:
    return c.plain_int and 1900 <= c.value <= 2100


def _candidates(s: str) -> list[_Cand]:
    out: list[_Cand] = []
    for m in _NUM_RE.finditer(s):
        c = _make_cand(m)
        if c is None:
            continue
        if _DENOM_BEFORE_RE.search(s[: m.start()]):
            continue
        out.append(c)
    return out


def _range_with_next(s: str, a: _Cand, b: _Cand) -> bool:
    between = s[a.end: b.start]
    if re.fullmatch(r"\s*-\s*|\s*to\s*|\s*(?:-|to)\s*(?:us\s?\$|usd|\$|€|£)\s*", between, re.IGNORECASE):
        return True
    if re.fullmatch(r"\s*and\s*(?:us\s?\$|usd|\$|€|£)?\s*", between, re.IGNORECASE):
        return bool(_RANGE_BETWEEN_RE.search(s[: a.start]))
    return False


def parse_number(text: str | None) -> NumberParse:
    """Parse a WorldBench answer into a number (see the module docstring)."""
    if text is None:
        return NumberParse(None, "empty", "no text")
    s = _preprocess(text)
    if not s.strip():
        return NumberParse(None, "empty", "nothing left after removing special tokens")
    cands = _candidates(s)
    if not cands:
        return NumberParse(None, "unparseable", "no number found")

    # Merge ranges into single items: (value, candidate, detail).
    items: list[tuple[float, _Cand, str]] = []
    i = 0
    while i < len(cands):
        a = cands[i]
        if i + 1 < len(cands) and _range_with_next(s, a, cands[i + 1]):
            b = cands[i + 1]
            lo = a.value
            if b.has_mult and not a.has_mult and a.value < b.value / b.mult:
                lo = a.value * b.mult
            if _is_yearish(a) and _is_yearish(b):
                years = _Cand((a.value + b.value) / 2, a.start, b.end, True, False, 1.0, False, s[a.start: b.end])
                items.append((years.value, years, f"year range {a.raw.strip()}-{b.raw.strip()}"))
            else:
                mid = (lo + b.value) / 2
                merged = _Cand(mid, a.start, b.end, False, b.has_mult, b.mult, a.pct or b.pct, a.raw)
                items.append((mid, merged, f"range {lo:g} to {b.value:g}, midpoint taken"))
            i += 2
            continue
        items.append((a.value, a, ""))
        i += 1

    non_year = [it for it in items if not _is_yearish(it[1])]
    skipped: list[str] = []
    if non_year:
        keep = []
        for it in items:
            c = it[1]
            if _is_yearish(c):
                ctx = bool(_YEAR_BEFORE_RE.search(s[: c.start])) or bool(_YEAR_AFTER_RE.match(s[c.end:]))
                if ctx or 2010 <= c.value <= 2030 or it[2].startswith("year range"):
                    skipped.append(c.raw.strip())
                    continue
            keep.append(it)
        items = keep or non_year
    value, cand, detail = items[0]
    if not math.isfinite(value):
        return NumberParse(None, "unparseable", f"number {_short(cand.raw)} is not finite")
    if _is_yearish(cand) and not non_year and 2010 <= cand.value <= 2030:
        return NumberParse(None, "year_like", f"only year-like number(s), first {cand.raw.strip()}")
    parts = [detail or f"number {_short(cand.raw)}"]
    if cand.has_mult and not detail:
        parts.append(f"multiplier x{cand.mult:g}")
    if cand.pct:
        parts.append("percent sign ignored")
    if value < 0:
        parts.append("negative value")
    if skipped:
        parts.append("skipped year(s) " + ", ".join(skipped))
    if len(items) > 1:
        parts.append(f"first of {len(items)} numbers")
    return NumberParse(float(value), "ok", "; ".join(parts))


def abs_rel_error(pred: float | None, truth: float | None) -> float | None:
    """``|pred - truth| / max(|pred|, |truth|)``, in [0, 1].

    None if either value is None, NaN or infinite. Both zero gives 0.0 (an
    exact answer; A gets NaN here). Values of opposite sign give more than 1
    before clipping and are clipped to 1.0 (maximally wrong, like a positive
    answer to a true value of 0).
    """
    if pred is None or truth is None:
        return None
    p, t = float(pred), float(truth)
    if not (math.isfinite(p) and math.isfinite(t)):
        return None
    denom = max(abs(p), abs(t))
    if denom == 0:
        return 0.0
    return min(1.0, abs(p - t) / denom)


# --------------------------------------------------------------------------
# Reference parser (repository A, worldbench_experiment.ipynb parse + to_numeric)
# --------------------------------------------------------------------------

_REF_MULTS = (("million", 1e6), ("billion", 1e9), ("trillion", 1e12), ("thousand", 1e3), ("hundred", 1e2))


def _ref_float(x: str) -> float | None:
    try:
        return float(x)
    except (ValueError, TypeError):
        return None


def parse_number_reference(text: str | None) -> float | None:
    """Repository A's WorldBench parser (docs/parsing.md, WorldBench).

    Returns a float, or None where A ends with NaN. Quirks kept: a multiplier
    takes the word before its *first* occurrence (for the first word that is
    Python's ``words[-1]``, the last word); later multipliers in the fixed
    order million, billion, trillion, thousand, hundred overwrite earlier
    ones; "approximately"/"about" take the next word and override
    multipliers; only the first line of the remaining text is kept; the
    first space-separated token is used if it parses, otherwise the last;
    values within 10 of 2020 and negative values become NaN.
    """
    if text is None:
        return None
    answer = text.strip()
    if "[/INST] " in answer:
        answer = answer.split("[/INST] ")[-1]
    if "correct answer is: " in answer:
        answer = answer.split("correct answer is: ")[1].split(" ")[0]
    words = answer.split(" ")
    for word, mult in _REF_MULTS:
        if word in words:
            idx = words.index(word)
            f = _ref_float(words[idx - 1])
            if f is not None:
                answer = str(f * mult)
    for word in ("approximately", "about"):
        if word in words:
            idx = words.index(word)
            if idx + 1 < len(words):
                answer = words[idx + 1]
                break
    answer = answer.replace("<|assistant|>\n", "").replace(" [/INST]", "").replace("*", "")
    answer = answer.replace("<|im_start|>assistant\n", "").split("</s>")[0].replace(",", "")
    answer = answer.split("\n")[0].split("<|im_end|>")[0].replace("<|eot_id|>", "")

    def cut(tok: str) -> str:
        return tok.split("\\")[0].split("%")[0]

    first = cut(answer.split(" ")[0])
    answer = first if _ref_float(first) is not None else cut(answer.split(" ")[-1])
    if answer.endswith("."):
        answer = answer[:-1]
    value = _to_numeric(answer)
    if value is None or math.isnan(value):
        return None
    if abs(value - 2020) < 10 or value < 0:
        return None
    return value


def _to_numeric(s: str) -> float | None:
    """``pd.to_numeric(s, errors="coerce")`` for one string (None = NaN)."""
    import pandas as pd

    v = pd.to_numeric(pd.Series([s], dtype=object), errors="coerce").iloc[0]
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v
