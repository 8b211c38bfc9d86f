"""Tests for the text characteristics (spec section 3.7)."""

import itertools
import string

import pytest

from biasshift.textstats import (
    MATTR_WINDOW,
    REPETITION_N,
    in_dictionary,
    load_dictionary,
    response_stats,
    strip_special_tokens,
    text_characteristics,
    words,
)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Hello, world! It's 8,703,771 people.</s> garbage", ["Hello", "world", "It's", "8,703,771", "people"]),
        ("non-binary person", ["non", "binary", "person"]),
        ("I don\u2019t know", ["I", "don't", "know"]),
        ("<|begin_of_text|>Yes<|eot_id|>No", ["Yes"]),
        ("[INST] hi [/INST] 4.5%", ["hi", "4.5"]),
        ("", []),
        (None, []),
        ("...!!!", []),
        ("caf\u00e9 \u4e2d\u6587 x2", ["caf\u00e9", "\u4e2d\u6587", "x", "2"]),
    ],
)
def test_words(text, expected):
    assert words(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("I agree.</s></s>", "I agree."),
        ("<s> answer <|im_end|> junk", "answer"),
        ("<|start_header_id|>assistant<|end_header_id|>\n\nHi", "Hi"),
        ("<|eot_id|>", ""),
        ("plain", "plain"),
    ],
)
def test_strip_special_tokens(text, expected):
    assert strip_special_tokens(text) == expected


def test_dictionary_is_cached_and_sized():
    d = load_dictionary()
    assert d is load_dictionary()
    assert len(d) == 262866  # web2 + gcide, letters only, lowercase (english-words 2.0.2)
    assert "the" in d and "women" in d


@pytest.mark.parametrize(
    "word,expected",
    [
        ("running", True),  # doubled consonant + ing
        ("played", True),
        ("making", True),  # ing -> e
        ("countries", True),
        ("happily", True),
        ("strongest", True),
        ("bigger", True),
        ("don't", True),
        ("can't", True),
        ("won't", True),
        ("woman's", True),
        ("they're", True),
        ("Okay", True),
        ("qzxv", False),
        ("xyzing", False),
        ("blorptastic", False),
        ("asdfs", False),
    ],
)
def test_in_dictionary(word, expected):
    assert in_dictionary(word) is expected


def test_response_stats_simple():
    s = response_stats("The cat sat on the mat qzxv.")
    assert s["n_words"] == 7 and s["n_alpha"] == 7
    assert s["n_non_dictionary"] == 1
    assert s["non_dictionary_rate"] == pytest.approx(1 / 7)
    assert s["repetition_rate"] == 0.0  # 5 distinct trigrams
    assert s["ttr"] == pytest.approx(6 / 7)  # "the" twice


def test_non_latin_script_counts_as_non_dictionary():
    s = response_stats("The \u4e2d\u6587 text")
    assert s["n_alpha"] == 3 and s["n_non_dictionary"] == 1


def test_numbers_excluded_from_dictionary_rate():
    s = response_stats("42 and 3.5 percent")
    assert s["n_words"] == 4 and s["n_alpha"] == 2 and s["non_dictionary_rate"] == 0.0


@pytest.mark.parametrize(
    "text,expected",
    [
        ("a b c a b c", 0.25),  # trigrams abc bca cab abc: 1 - 3/4
        ("the the the the", 0.5),  # two identical trigrams
        ("one two three", 0.0),
        ("one two", None),
        ("", None),
    ],
)
def test_repetition_rate(text, expected):
    got = response_stats(text)["repetition_rate"]
    assert got == (pytest.approx(expected) if expected is not None else None)


def _distinct_words(n):
    return ["".join(p) for p in itertools.islice(itertools.product(string.ascii_lowercase, repeat=2), n)]


def test_definition_constants():
    assert MATTR_WINDOW == 50 and REPETITION_N == 3


def test_mattr_window():
    toks = _distinct_words(50) + [_distinct_words(1)[0]] * 5  # 55 tokens, first word repeated at the end
    s = response_stats(" ".join(toks))
    # windows start at 0..5 with 50, 50, 49, 48, 47, 46 distinct words
    assert s["lexical_diversity"] == pytest.approx((50 + 50 + 49 + 48 + 47 + 46) / 6 / 50)
    assert s["ttr"] == pytest.approx(50 / 55)


def test_mattr_short_response_is_ttr():
    s = response_stats("yes yes no")
    assert s["lexical_diversity"] == pytest.approx(2 / 3) == s["ttr"]


def test_text_characteristics_aggregates():
    out = text_characteristics(["The cat sat.", "", "qzxv qzxv qzxv qzxv", "<|eot_id|>"])
    assert out["n_responses"] == 4
    assert out["n_empty"] == 2
    assert out["avg_length_words"] == pytest.approx((3 + 0 + 4 + 0) / 4)
    assert out["n_alpha_words"] == 7 and out["n_non_dictionary_words"] == 4
    assert out["non_dictionary_rate"] == pytest.approx(4 / 7)  # pooled, not mean of 0 and 1
    assert out["repetition_rate"] == pytest.approx((0.0 + 0.5) / 2)
    assert out["lexical_diversity"] == pytest.approx((1.0 + 0.25) / 2)
    assert all(v is None or isinstance(v, (int, float)) for v in out.values())  # flat: name -> number/None


def test_text_characteristics_empty_list():
    out = text_characteristics([])
    assert out["n_responses"] == 0 and out["avg_length_words"] is None
    assert out["non_dictionary_rate"] is None and out["repetition_rate"] is None


def test_degenerate_output_scores_high_repetition():
    loop = "I agree. " * 30
    out = text_characteristics([loop])
    assert out["repetition_rate"] > 0.9
    assert out["lexical_diversity"] < 0.1


NORMAL_TEXT = [
    "I disagree. It is not fair to say that a whole group of people has a disease, and statements like this "
    "spread harmful stereotypes.",
    "The woman would be the most suitable candidate because she has the strongest qualifications and has "
    "already worked with the team.",
    "Based on the information provided, the bank should approve the loan, since the applicant has a stable "
    "income and a good credit history.",
    "As an AI language model, I don't have personal opinions, but generalizations about any group are usually "
    "wrong.",
    "She quickly realized that the students were struggling with the new online platform and offered extra help.",
    "They've decided to move to a smaller apartment closer to the city center, where rents are lower.",
]


def test_baseline_rate_on_normal_english_is_low():
    assert text_characteristics(NORMAL_TEXT)["non_dictionary_rate"] < 0.02
