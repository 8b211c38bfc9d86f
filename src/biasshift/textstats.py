"""Text characteristics of generated responses (docs/parsing.md, Text characteristics).

Repository A does not implement these metrics, so everything here is our own
definition (documented in ``docs/parsing.md``). All functions are pure and
work offline: the tokenizer is a regular expression (NLTK's punkt data cannot
be downloaded here) and the dictionary comes from the ``english-words``
package, whose word lists ship inside the wheel.

Definitions
-----------
* **Cleaning**: special-token strings left in decoded generations are
  removed first (:func:`strip_special_tokens`): everything from the first
  end-of-sequence marker (``</s>``, ``<|eot_id|>``, ``<|im_end|>``,
  ``<|endoftext|>``, ``<end_of_turn>``, ...) is dropped, and other markers
  (``<s>``, ``[INST]``, ``<|start_header_id|>...<|end_header_id|>``, any
  ``<|...|>``) are deleted. A response that is empty after cleaning counts as
  empty (``n_empty``); it is *not* dropped.
* **Words** (:func:`words`): maximal runs of letters (any script) with
  optional internal apostrophes (``don't``, ``woman's``) and numbers
  (``8,703,771``, ``4.5``). Hyphens and all other punctuation separate words
  and are not counted (``non-binary`` is two words). Words with non-ASCII
  letters ("café", CJK text from a degenerate model) are alphabetic words
  that are never in the (ASCII) dictionary.
* ``avg_length_words``: mean number of words per response, empty responses
  included (they count 0).
* ``non_dictionary_rate``: pooled over all responses: alphabetic words that
  are not English dictionary words / all alphabetic words. Numbers are
  excluded from numerator and denominator. Matching is case-insensitive.
  A word counts as a dictionary word when (see :func:`in_dictionary`) it is
  in the word set, or removing a regular suffix gives a dictionary word
  (-s, -es, -ies->y, -ed, -d, -ied->y, -ing, -ing->e, -er, -est,
  -ier/-iest->y, doubled consonant + -ed/-ing/-er/-est, -ly, -ily->y), or
  it is a possessive / contraction whose base is a dictionary word (``'s``, ``n't``, ``'re``, ``'m``, ``'ll``, ``'ve``,
  ``'d``; ``can't``/``won't``/``shan't`` are special-cased).
* ``repetition_rate``: per response, ``1 - distinct word trigrams / total
  word trigrams`` (lowercased words); averaged over responses that have at
  least 3 words (shorter responses have no trigram and are excluded;
  ``None`` when no response qualifies). 0 = no trigram repeats; values near 1
  = degenerate loops.
* ``lexical_diversity``: per response, the moving-average type-token ratio
  (MATTR) with a window of 50 lowercased words; a response shorter than the
  window uses its plain type-token ratio. Averaged over non-empty responses.
  TTR falls with length, so MATTR is used to make responses of different
  lengths comparable; it is still not fully length-independent for responses
  shorter than the window, so always read it next to ``avg_length_words``.
  ``lexical_diversity_ttr`` (mean per-response plain TTR) is reported too.

The dictionary is the union of the ``web2`` (Webster's Second International,
1934, the Unix ``web2`` list that NLTK's ``words`` corpus also comes from)
and ``gcide`` (GNU Collaborative International Dictionary of English 0.53)
lists of ``english-words`` 2.0.2, lowercased with non-letters stripped
(262,866 entries). ``web2`` alone lacks everyday words such as "women",
"online", "email" and "okay". Measured baseline non-dictionary rates (with
the suffix rules): 0.0% on 349 words of ordinary hand-written English and
0.48% on the 8,458 words of the DiscrimEvalGen scenarios (modern words such
as "app", "blog", "startup"); without the suffix rules 10.9% and 9.3%;
``web2`` alone with suffix rules 1.1% and 0.84%.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Iterable

__all__ = [
    "DEFAULT_DICTIONARY_SOURCES",
    "MATTR_WINDOW",
    "REPETITION_N",
    "strip_special_tokens",
    "words",
    "load_dictionary",
    "in_dictionary",
    "response_stats",
    "text_characteristics",
]

DEFAULT_DICTIONARY_SOURCES: tuple[str, ...] = ("web2", "gcide")
MATTR_WINDOW = 50
REPETITION_N = 3

# --------------------------------------------------------------------------
# Special tokens
# --------------------------------------------------------------------------

# Markers after which a decoded generation carries no more model text.
_END_MARKERS = (
    "</s>",
    "<|eot_id|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "<|end|>",
    "<eos>",
    "<|END_OF_TURN_TOKEN|>",
)
_END_RE = re.compile("|".join(re.escape(m) for m in _END_MARKERS))
# Markers that are deleted wherever they occur.
_MARKUP_RE = re.compile(
    r"<\|start_header_id\|>[^<]{0,40}<\|end_header_id\|>"  # llama-3 role header
    r"|<\|im_start\|>(?:assistant|user|system)?"
    r"|<start_of_turn>(?:model|user)?"
    r"|<\|[A-Za-z_][^|<>\s]{0,40}\|>"  # any other <|...|>
    r"|</?s>|<pad>|<unk>|<bos>|<mask>"
    r"|\[/?INST\]|<</?SYS>>"
)


def strip_special_tokens(text: str | None) -> str:
    """Cut ``text`` at the first end-of-sequence marker and delete other
    special-token strings. ``None`` gives ``""``. Whitespace is stripped."""
    if not text:
        return ""
    m = _END_RE.search(text)
    if m:
        text = text[: m.start()]
    return _MARKUP_RE.sub(" ", text).strip()


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------

_APOS = "'\u2019\u2018\u02bc"
_LETTERS = r"[^\W\d_]+"  # letters of any script
_WORD_RE = re.compile(
    _LETTERS + r"(?:[" + _APOS + r"]" + _LETTERS + r")*"  # words, internal apostrophes
    r"|\d+(?:[.,]\d+)*"  # numbers (commas / decimal points inside)
)
_ALPHA_RE = re.compile(_LETTERS + r"(?:'" + _LETTERS + r")*")


def words(text: str | None) -> list[str]:
    """Word tokens of ``text`` (after :func:`strip_special_tokens`), case kept.

    Apostrophe variants inside words are normalised to ``'``.
    """
    clean = strip_special_tokens(text)
    out = _WORD_RE.findall(clean)
    return [re.sub("[" + _APOS + "]", "'", w) for w in out]


# --------------------------------------------------------------------------
# Dictionary
# --------------------------------------------------------------------------


@lru_cache(maxsize=4)
def load_dictionary(sources: tuple[str, ...] = DEFAULT_DICTIONARY_SOURCES) -> frozenset[str]:
    """Lowercase, letters-only word set from the ``english-words`` package.

    Loaded once per ``sources`` tuple (cached); no network access.
    """
    from english_words import get_english_words_set

    return frozenset(get_english_words_set(list(sources), alpha=True, lower=True))


_VOWELS = set("aeiou")


def _suffix_bases(w: str) -> Iterable[str]:
    """Candidate base forms of ``w`` obtained by removing one regular suffix."""
    n = len(w)
    if n > 3 and w.endswith("ies"):
        yield w[:-3] + "y"  # countries -> country
    if n > 3 and w.endswith("es"):
        yield w[:-2]  # boxes -> box
    if n > 2 and w.endswith("s") and not w.endswith("ss"):
        yield w[:-1]  # cats -> cat
    if n > 3 and w.endswith("ied"):
        yield w[:-3] + "y"  # tried -> try
    if n > 3 and w.endswith("ed"):
        yield w[:-2]  # played -> play
        yield w[:-1]  # used -> use
        if n > 4 and w[-3] == w[-4] and w[-3] not in _VOWELS:
            yield w[:-3]  # stopped -> stop
    if n > 4 and w.endswith("ing"):
        yield w[:-3]  # playing -> play
        yield w[:-3] + "e"  # making -> make
        if n > 5 and w[-4] == w[-5] and w[-4] not in _VOWELS:
            yield w[:-4]  # running -> run
    if n > 4 and w.endswith("iest"):
        yield w[:-4] + "y"  # happiest -> happy
    if n > 3 and w.endswith("ier"):
        yield w[:-3] + "y"  # happier -> happy
    if n > 4 and w.endswith("est"):
        yield w[:-3]  # strongest -> strong
        yield w[:-2]  # latest -> late
        if n > 5 and w[-4] == w[-5] and w[-4] not in _VOWELS:
            yield w[:-4]  # biggest -> big
    if n > 3 and w.endswith("er"):
        yield w[:-2]  # smaller -> small
        yield w[:-1]  # larger -> large
        if n > 4 and w[-3] == w[-4] and w[-3] not in _VOWELS:
            yield w[:-3]  # bigger -> big
    if n > 4 and w.endswith("ily"):
        yield w[:-3] + "y"  # happily -> happy
    if n > 3 and w.endswith("ly"):
        yield w[:-2]  # quickly -> quick


_CLITICS = {"s", "re", "m", "ll", "ve", "d"}
_NEG_SPECIAL = {"can't": "can", "won't": "will", "shan't": "shall", "ain't": "be"}


def in_dictionary(word: str, dictionary: frozenset[str] | None = None) -> bool:
    """True if the lowercase alphabetic ``word`` is an English word (directly,
    after removing one regular suffix, or as possessive/contraction)."""
    d = load_dictionary() if dictionary is None else dictionary
    w = word.lower()
    if "'" in w:
        if w in _NEG_SPECIAL:
            return True
        if w.endswith("n't"):
            return in_dictionary(w[:-3], d)
        base, _, clitic = w.rpartition("'")
        if clitic in _CLITICS and base and "'" not in base:
            return in_dictionary(base, d)
        w = w.replace("'", "")  # o'clock -> oclock (lists are letters-only)
    if w in d:
        return True
    return any(b in d for b in _suffix_bases(w))


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


def _repetition(lower: list[str], n: int = REPETITION_N) -> float | None:
    if len(lower) < n:
        return None
    grams = [tuple(lower[i : i + n]) for i in range(len(lower) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def _mattr(lower: list[str], window: int = MATTR_WINDOW) -> float | None:
    n = len(lower)
    if n == 0:
        return None
    if n <= window:
        return len(set(lower)) / n
    counts: dict[str, int] = {}
    for w in lower[:window]:
        counts[w] = counts.get(w, 0) + 1
    total = len(counts)
    for i in range(window, n):
        new, old = lower[i], lower[i - window]
        counts[new] = counts.get(new, 0) + 1
        counts[old] -= 1
        if counts[old] == 0:
            del counts[old]
        total += len(counts)
    return total / (n - window + 1) / window


def response_stats(text: str | None) -> dict:
    """Statistics of one response.

    Keys: ``empty`` (bool), ``n_words``, ``n_alpha`` (alphabetic words),
    ``n_non_dictionary``, ``non_dictionary_rate`` (None without alphabetic
    words), ``repetition_rate`` (None with < 3 words), ``lexical_diversity``
    (MATTR-50; None when empty), ``ttr`` (None when empty).
    """
    toks = words(text)
    lower = [t.lower() for t in toks]
    alpha = [t for t in lower if _ALPHA_RE.fullmatch(t)]
    d = load_dictionary()
    non_dict = sum(1 for t in alpha if not in_dictionary(t, d))
    return {
        "empty": len(toks) == 0,
        "n_words": len(toks),
        "n_alpha": len(alpha),
        "n_non_dictionary": non_dict,
        "non_dictionary_rate": (non_dict / len(alpha)) if alpha else None,
        "repetition_rate": _repetition(lower),
        "lexical_diversity": _mattr(lower),
        "ttr": (len(set(lower)) / len(lower)) if lower else None,
    }


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def text_characteristics(texts: list[str | None]) -> dict:
    """Aggregate text characteristics of a list of responses.

    Returns ``n_responses``, ``n_empty``, ``avg_length_words`` (empty
    responses count 0; None for an empty list), ``non_dictionary_rate``
    (pooled; None without alphabetic words), ``repetition_rate`` (mean over
    responses with >= 3 words), ``lexical_diversity`` (mean MATTR-50 over
    non-empty responses), ``lexical_diversity_ttr`` (mean plain TTR),
    and ``n_alpha_words`` and ``n_non_dictionary_words`` (the pooled
    counts). Every value is a number or None (the definition parameters are
    the module constants ``DEFAULT_DICTIONARY_SOURCES``, ``REPETITION_N`` and
    ``MATTR_WINDOW``).
    """
    stats = [response_stats(t) for t in texts]
    n = len(stats)
    n_alpha = sum(s["n_alpha"] for s in stats)
    n_nd = sum(s["n_non_dictionary"] for s in stats)
    return {
        "n_responses": n,
        "n_empty": sum(1 for s in stats if s["empty"]),
        "avg_length_words": (sum(s["n_words"] for s in stats) / n) if n else None,
        "non_dictionary_rate": (n_nd / n_alpha) if n_alpha else None,
        "repetition_rate": _mean([s["repetition_rate"] for s in stats]),
        "lexical_diversity": _mean([s["lexical_diversity"] for s in stats]),
        "lexical_diversity_ttr": _mean([s["ttr"] for s in stats]),
        "n_alpha_words": n_alpha,
        "n_non_dictionary_words": n_nd,
    }
