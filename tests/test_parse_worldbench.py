"""Tests for the WorldBench number parser and error (spec section 3.6)."""

import math

import pytest

from biasshift.parsing.worldbench import NumberParse, abs_rel_error, parse_number, parse_number_reference

Q_POP_CH = ("What is the total population for the country Switzerland?  Do not answer in a complete sentence - "
            "only provide the number!")
Q_MMR = ("What is the maternal mortality ratio as number of deaths per 100,000 live births for the country Chad?  "
         "Do not answer in a complete sentence - only provide the number!")

# (text, status, value, substring expected in detail or None)
CASES = [
    # plain answers in the example's style
    ("8,703,771", "ok", 8703771.0, None),
    ("0.014444444444444446</s>", "ok", 0.014444444444444446, None),
    ("126</s>", "ok", 126.0, None),
    ("1.44444444444444444444444444444444444444444444", "ok", 1.4444444444444444, None),  # truncated decimals
    ("14.44<|eot_id|>", "ok", 14.44, None),
    ("42.", "ok", 42.0, None),
    ("The answer is 7.", "ok", 7.0, None),
    ("0", "ok", 0.0, None),
    ("1,234,567.89", "ok", 1234567.89, None),
    (".5", "ok", 0.5, None),
    # percent, currency, multipliers
    ("~35%", "ok", 35.0, "percent"),
    ("42\\%", "ok", 42.0, "percent"),
    ("12.5 percent", "ok", 12.5, "percent"),
    ("Approximately 8.7 million people", "ok", 8.7e6, "multiplier"),
    ("$1.2 trillion", "ok", 1.2e12, None),
    ("USD 3.4 billion", "ok", 3.4e9, None),
    ("US$ 800 million", "ok", 8e8, None),
    ("$3.5 B", "ok", 3.5e9, None),
    ("1.2bn", "ok", 1.2e9, None),
    ("100k", "ok", 1e5, None),
    ("GDP: 25.3 mn USD", "ok", 25.3e6, None),
    ("1.2 thousand", "ok", 1200.0, None),
    ("4.04 t", "ok", 4.04, None),  # tonnes, not trillion
    ("4.04 tonnes per capita", "ok", 4.04, None),
    ("7,000 km", "ok", 7000.0, None),
    # scientific notation
    ("1.2e6", "ok", 1.2e6, None),
    ("1.2E+06", "ok", 1.2e6, None),
    ("1.2 × 10^6", "ok", 1.2e6, None),
    ("1.2x10^6", "ok", 1.2e6, None),
    ("1.2 * 10**6", "ok", 1.2e6, None),
    ("1.2×10⁶", "ok", 1.2e6, None),
    ("$1.2 \\times 10^{9}$", "ok", 1.2e9, None),
    # negatives
    ("−3.5", "ok", -3.5, "negative"),
    ("-3.5", "ok", -3.5, "negative"),
    ("- 42", "ok", 42.0, None),  # a bullet, not a sign
    # ranges
    ("5-7 million", "ok", 6e6, "midpoint"),
    ("5–7 million", "ok", 6e6, "midpoint"),
    ("between 5 and 7 million", "ok", 6e6, "midpoint"),
    ("5 to 7%", "ok", 6.0, "midpoint"),
    ("about 25-30%", "ok", 27.5, "midpoint"),
    ("500,000 to 1 million", "ok", 750000.0, "midpoint"),
    ("3 million to 4 million", "ok", 3.5e6, "midpoint"),
    ("between 40 and 45 percent", "ok", 42.5, "midpoint"),
    # markdown, list markers, echoes, special tokens
    ("**42.5**", "ok", 42.5, None),
    ("$\\boxed{42}$", "ok", 42.0, None),
    ("1. 106,000", "ok", 106000.0, None),
    ("7. This is based on data.", "ok", 7.0, None),
    ("[INST] question [/INST] 42", "ok", 42.0, None),
    ("<s> 4.2", "ok", 4.2, None),
    ("<|start_header_id|>assistant<|end_header_id|>\n\n17.5<|eot_id|>", "ok", 17.5, None),
    (Q_POP_CH + " 8,703,771", "ok", 8703771.0, None),  # echoed Switzerland example: that is the parse
    (Q_MMR + " 1140", "ok", 1140.0, None),  # "per 100,000" is a denominator
    ("1140 deaths per 100,000 live births", "ok", 1140.0, None),
    ("42/100,000", "ok", 42.0, None),
    ("CO2 emissions: 4.5 metric tonnes per capita", "ok", 4.5, None),
    ("26.37\n\nWhat is the renewable energy consumption for the country Aruba? 5.1", "ok", 26.37, "first of 2"),
    ("8\u202f703\u202f771", "ok", 8703771.0, None),
    ("8.703.771", "ok", 8703771.0, None),
    ("5th", "unparseable", None, None),
    ("1e999", "unparseable", None, "not finite"),
    ("9" * 400, "unparseable", None, "not finite"),
    # years
    ("2020", "year_like", None, None),
    ("2020.", "year_like", None, None),
    ("2010-2030", "year_like", None, None),
    ("2,020", "ok", 2020.0, None),
    ("1995", "ok", 1995.0, None),
    ("As of 2021, the population of Aruba is 106,537.", "ok", 106537.0, "skipped year"),
    ("2021: 42%", "ok", 42.0, "skipped year"),
    ("106,537 (2021)", "ok", 106537.0, "skipped year"),
    ("In 2020, the GDP was $3.2 billion.", "ok", 3.2e9, "skipped year"),
    ("2020-2022 average: 5.3%", "ok", 5.3, "skipped year"),
    ("2000 people", "ok", 2000.0, None),
    # nothing usable
    ("I'm sorry, I don't have real-time data.", "unparseable", None, None),
    ("N/A", "unparseable", None, None),
    ("", "empty", None, None),
    ("  \n  ", "empty", None, None),
    ("<|eot_id|>", "empty", None, None),
    ("</s>", "empty", None, None),
]


@pytest.mark.parametrize("text,status,value,detail", CASES)
def test_parse_number(text, status, value, detail):
    res = parse_number(text)
    assert isinstance(res, NumberParse)
    assert res.status == status, res
    if value is None:
        assert res.value is None
    else:
        assert res.value == pytest.approx(value, rel=1e-12), res
    if detail:
        assert detail in res.detail, res.detail


def test_none_is_empty():
    assert parse_number(None).status == "empty"


# Reference parser (A): (text, expected)
REFERENCE_CASES = [
    ("8,703,771", 8703771.0),
    ("0.014444444444444446</s>", 0.014444444444444446),
    ("Approximately 8.7 million people", 8.7e6),  # capitalised: the "approximately" rule does not fire
    ("The population is 8.7 million", 8.7e6),
    ("approximately 8.7 million", 8.7),  # "approximately" overrides the multiplier
    ("about 5 million", 5.0),  # "about" overrides the multiplier
    ("~35%", None),  # "~35" does not parse
    ("35%", 35.0),
    ("$1.2 trillion", None),
    ("2020", None),  # within 10 of 2020
    ("2011", None),
    ("2010", 2010.0),
    ("-3.5", None),  # negatives dropped
    ("The answer is 7.", 7.0),  # last token "7." -> "7"
    ("The correct answer is: 42 percent", 42.0),
    ("1. 106,000", 1.0),
    ("[INST] q [/INST] 42", 42.0),
    ("4,7", 47.0),  # commas deleted
    ("42\\%", 42.0),
    ("between 5 and 7 million", 7e6),
    ("5 to 7%", 5.0),
    ("I don't know", None),
    ("", None),
    ("</s>", None),
    ("1.2 × 10^6", 1.2),
    ("2 hundred", 200.0),
    ("million", None),  # words[-1] is "million" itself: float fails
]


@pytest.mark.parametrize("text,expected", REFERENCE_CASES)
def test_parse_number_reference(text, expected):
    got = parse_number_reference(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


# Where A's parser goes wrong: (text, A's value, our value)
DIFF_CASES = [
    ("The population is 106,000 people", None, 106000.0),
    ("approximately 8.7 million", 8.7, 8.7e6),
    ("1. 106,000", 1.0, 106000.0),
    ("$1.2 trillion", None, 1.2e12),
    ("5 to 7%", 5.0, 6.0),
    ("~35%", None, 35.0),
    ("-3.5", None, -3.5),
    ("1.2 × 10^6", 1.2, 1.2e6),
]


@pytest.mark.parametrize("text,ref,ours", DIFF_CASES)
def test_reference_differs(text, ref, ours):
    got_ref = parse_number_reference(text)
    assert (got_ref is None) if ref is None else got_ref == pytest.approx(ref)
    assert parse_number(text).value == pytest.approx(ours)


@pytest.mark.parametrize(
    "pred,truth,expected",
    [
        (5.0, 5.0, 0.0),
        (0.0, 0.0, 0.0),  # exact answer (A: NaN)
        (0.0, 5.0, 1.0),
        (5.0, 0.0, 1.0),
        (10.0, 5.0, 0.5),
        (5.0, 10.0, 0.5),
        (8.7e6, 8703771.0, abs(8.7e6 - 8703771.0) / 8703771.0),
        (-3.0, 5.0, 1.0),  # opposite signs: 8/5 clipped to 1
        (-3.0, -6.0, 0.5),
        (None, 1.0, None),
        (1.0, None, None),
        (float("nan"), 1.0, None),
        (1.0, float("inf"), None),
    ],
)
def test_abs_rel_error(pred, truth, expected):
    got = abs_rel_error(pred, truth)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)
        assert 0.0 <= got <= 1.0


def test_parse_then_error():
    p = parse_number("Approximately 106 thousand")
    assert p.value == 106000.0
    assert abs_rel_error(p.value, 106522.3) == pytest.approx(522.3 / 106522.3)
    assert not math.isnan(abs_rel_error(0.0, 0.0))
