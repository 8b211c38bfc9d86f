"""Benchmark options as pydantic models: unknown keys and bad values refused with the option's name, CLI strings
coerced, defaults and JSON types unchanged from the hand-written dicts, one shared decoding model."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from biasshift import benchmarks
from biasshift.benchmarks.base import Item, RequestContext
from biasshift.benchmarks.bbq import BBQ
from biasshift.benchmarks.bold import Bold
from biasshift.benchmarks.generation import DecodingOptions, GenerationOptions
from biasshift.benchmarks.harm import ClassifierOptions
from biasshift.benchmarks.options import BenchmarkOptions, ChoicePolicyOptions
from biasshift.benchmarks.perplexity import Perplexity, WindowOptions, chosen_windows
from biasshift.engine.requests import LoglikAnswer
from biasshift.errors import ConfigError

#: every benchmark's ``default_options`` dict before the options became models (copied from the old modules)
OLD_DEFAULTS = {
    "crows_pairs": {"score": "mean"},
    "discrim_eval": {"policy": "case_space"},
    "global_opinion_qa": {"min_questions": 50, "policy": "space"},
    "dt_stereotyping": {"system": "untargeted", "max_new_tokens": 150, "samples": 1, "temperature": 0.0, "top_p": 1.0,
                        "normalize_quotes": True, "strip_echo": True},
    "dt_stereotyping_sampled": {"system": "untargeted", "max_new_tokens": 150, "samples": 5, "temperature": 1.0,
                                "top_p": 1.0, "normalize_quotes": True, "strip_echo": True},
    "discrim_eval_gen": {"max_new_tokens": 200, "samples": 1, "temperature": 0.0, "top_p": 1.0, "max_refusal_rate": 0.8,
                         "bias_types": "gender,race"},
    "worldbench": {"max_new_tokens": 64, "samples": 1, "temperature": 0.0, "top_p": 1.0},
    "bbq": {"score": "sum", "categories": "all"},
    "bold": {"max_new_tokens": 100, "domains": "all", "toxicity_model": "profanity_check", "toxicity_batch_size": 32,
             "min_group_n": 10},
    "dialect_ppl": {"window": 512, "format": "auto"},
    "perplexity": {"window": 512, "text": ""},
    "toxigen": {"source": "safenlp", "labels": "all", "max_new_tokens": 100, "samples": 1, "temperature": 0.0, "top_p": 1.0,
                "classifier": "profanity_check", "classifier_batch_size": 32, "classifier_device": "auto", "min_group_n": 10},
    "realtoxicityprompts": {"subsets": "all", "mode": "sampled", "samples": 25, "temperature": 1.0, "top_p": 0.9,
                            "max_new_tokens": 20, "greedy_max_new_tokens": 100, "classifier": "profanity_check",
                            "classifier_batch_size": 32, "classifier_device": "auto"},
    "regard": {"max_new_tokens": 100, "samples": 1, "temperature": 0.0, "top_p": 1.0, "classifier": "",
               "classifier_input": "continuation", "classifier_batch_size": 32, "classifier_device": "auto", "min_group_n": 5},
    "holistic_bias": {"max_new_tokens": 100, "samples": 1, "temperature": 0.0, "top_p": 1.0, "classifier": "",
                      "classifier_input": "continuation", "classifier_batch_size": 32, "classifier_device": "auto",
                      "min_group_n": 10, "n_samples": 10000, "variants": True},
    "mmlu": {"shots": 0, "letters": "spaced", "subjects": "all"},
    "aave_literature": {"window": 2048, "max_windows": 0},
    "unqover": {"categories": "all", "sample": 10000},
}
REGARD = {"classifier": "sasha/regardv3"}  # regard benchmarks need a classifier to be constructed
DECODING = ("max_new_tokens", "samples", "temperature", "top_p")


def make(name: str, **opts):
    cls = benchmarks.get(name)
    return cls({**(REGARD if name in ("regard", "holistic_bias") else {}), **opts})


def test_defaults_and_their_json_types_are_the_old_ones():
    assert set(OLD_DEFAULTS) == set(benchmarks.names())
    for name, old in OLD_DEFAULTS.items():
        cls = benchmarks.get(name)
        assert issubclass(cls.Options, BenchmarkOptions) and cls.Options.model_config["extra"] == "forbid"
        new = cls.Options().model_dump(mode="json")
        assert new == old, name
        assert {k: type(v) for k, v in new.items()} == {k: type(v) for k, v in old.items()}, name
        assert cls.default_options == old
    # an instance records its options as JSON: the old keys, the old types (REGARD's classifier aside)
    for name in OLD_DEFAULTS:
        doc = make(name).options_json()
        assert json.loads(json.dumps(doc)) == {**OLD_DEFAULTS[name], **(REGARD if name in ("regard", "holistic_bias") else {})}


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        BBQ({"foo": "1"})
    assert str(e.value) == "--option bbq.foo: unknown option for bbq; valid: categories, score"
    with pytest.raises(ConfigError, match=r"^--option worldbench\.seed: unknown option for worldbench; "
                                          r"valid: max_new_tokens, samples, temperature, top_p$"):
        make("worldbench", seed="3")


@pytest.mark.parametrize("name, key, value, message", [
    ("bbq", "score", "max", "--option bbq.score=max: must be 'sum' or 'mean'"),
    ("crows_pairs", "score", "median", "--option crows_pairs.score=median: must be 'mean' or 'sum'"),
    ("dt_stereotyping", "samples", "0", "--option dt_stereotyping.samples=0: must be >= 1"),
    ("dt_stereotyping", "max_new_tokens", "ten", "--option dt_stereotyping.max_new_tokens=ten: must be a whole number"),
    ("dt_stereotyping", "temperature", "warm", "--option dt_stereotyping.temperature=warm: must be a number"),
    ("dt_stereotyping", "top_p", "nan", "--option dt_stereotyping.top_p=nan: must be a finite number"),
    ("dt_stereotyping", "top_p", "1.5", "--option dt_stereotyping.top_p=1.5: must be in (0, 1]"),
    ("dt_stereotyping", "strip_echo", "maybe", "--option dt_stereotyping.strip_echo=maybe: must be true or false "
                                               "(also 1/0, yes/no, on/off)"),
    ("global_opinion_qa", "policy", "loose", "--option global_opinion_qa.policy=loose: must be 'case_space', 'space' "
                                             "or 'exact'"),
    ("global_opinion_qa", "min_questions", "0", "--option global_opinion_qa.min_questions=0: must be >= 1"),
    ("perplexity", "window", "1", "--option perplexity.window=1: must be >= 2"),
    ("mmlu", "shots", "6", "--option mmlu.shots=6: must be <= 5"),
    ("bold", "domains", "gender,weather", "--option bold.domains=gender,weather: unknown weather; use 'all' or a "
                                          "comma-separated list of gender, political_ideology, profession, race, "
                                          "religious_ideology"),
    ("discrim_eval_gen", "bias_types", "all", "--option discrim_eval_gen.bias_types=all: unknown all; use a "
                                              "comma-separated list of gender, race"),
])
def test_bad_value_names_option_value_and_what_is_accepted(name, key, value, message):
    with pytest.raises(ConfigError) as e:
        make(name, **{key: value})
    assert str(e.value) == message


def test_cross_field_decoding_checks():
    with pytest.raises(ConfigError, match=r"^--option worldbench: samples=3 with temperature=0: greedy decoding gives one "
                                          r"answer; use samples=1, or a temperature > 0 to sample$"):
        make("worldbench", samples="3")
    assert make("worldbench", samples="3", temperature="0.5").options.samples == 3
    # realtoxicityprompts decides by its mode: greedy ignores the sampling settings, sampled needs a temperature
    with pytest.raises(ConfigError, match="mode=sampled needs a temperature > 0"):
        make("realtoxicityprompts", temperature="0")
    g = make("realtoxicityprompts", mode="greedy", temperature="0")
    req = g.requests(Item("i", "i", {"prompt": "So"}), RequestContext(render=lambda p: p.text, seed=0, chat_template=False))
    assert not req[0].request.do_sample and req[0].request.max_new_tokens == 100


def test_strings_from_the_command_line_are_coerced():
    b = make("dt_stereotyping", max_new_tokens="16", temperature="0.7", samples="2", strip_echo="false",
             normalize_quotes="0")
    o = b.options
    assert (o.max_new_tokens, o.temperature, o.samples, o.strip_echo, o.normalize_quotes) == (16, 0.7, 2, False, False)
    assert isinstance(o.max_new_tokens, int) and isinstance(o.temperature, float)
    for text, value in (("true", True), ("false", False), ("1", True), ("0", False), ("yes", True), ("off", False),
                        ("TRUE", True), ("On", True)):
        assert make("dt_stereotyping", strip_echo=text).options.strip_echo is value
    assert make("worldbench", temperature="1").options_json()["temperature"] == 1.0  # a float, as before
    # list options: the string as given (JSON unchanged), split by the benchmark
    bbq = BBQ({"categories": "Age,Gender_identity"})
    assert bbq.categories == ["Age", "Gender_identity"] and bbq.options_json()["categories"] == "Age,Gender_identity"
    assert BBQ({"categories": "all"}).categories == list(BBQ.subset_files)
    assert Bold({"domains": "gender"}).domains == ["gender"]
    assert Bold({"domains": " race , gender,"}).domains == ["race", "gender"]
    assert make("mmlu", subjects="anatomy").subjects == ["anatomy"]
    assert make("unqover", categories="religion").categories == ["religion"]
    assert make("toxigen", labels="hate").labels == ["hate"]
    assert make("realtoxicityprompts", subsets="nontoxic").subsets() == ["nontoxic"]
    assert make("discrim_eval_gen", bias_types="race").bias_types == ["race"]


def test_stored_json_options_rebuild_the_same_benchmark():
    for name in benchmarks.names():
        b = make(name)
        again = benchmarks.get(name)(b.options_json())  # a report rebuilding from a result document
        assert again.options == b.options
    b = make("dt_stereotyping", max_new_tokens="16")
    assert benchmarks.get("dt_stereotyping")(b.options_json()).options.max_new_tokens == 16
    assert benchmarks.get("dt_stereotyping")(b.options).options is b.options  # a model instance is taken as is


def test_options_are_immutable():
    b = BBQ()
    with pytest.raises(ValidationError):
        b.options.score = "mean"  # type: ignore[misc]


def test_decoding_options_are_one_shared_model():
    gen = [n for n in benchmarks.names() if benchmarks.get(n).kind == "generation"]
    assert set(gen) == {"dt_stereotyping", "dt_stereotyping_sampled", "discrim_eval_gen", "worldbench", "bold", "toxigen",
                        "realtoxicityprompts", "regard", "holistic_bias"}
    for name in gen:
        opts = benchmarks.get(name).Options
        assert issubclass(opts, GenerationOptions), name
        if name != "bold":  # BOLD is greedy-only: it has max_new_tokens and no sampling options (as before)
            assert issubclass(opts, DecodingOptions), name
        for cls in opts.__mro__:  # the decoding fields are declared on the shared models only
            if cls not in (GenerationOptions, DecodingOptions):
                assert not set(DECODING) & set(cls.__dict__.get("__annotations__", {})), (name, cls)
    assert "samples" not in Bold.Options.model_fields
    for name in ("toxigen", "realtoxicityprompts", "regard", "holistic_bias"):
        assert issubclass(benchmarks.get(name).Options, ClassifierOptions)
    for name in ("discrim_eval", "global_opinion_qa"):
        assert issubclass(benchmarks.get(name).Options, ChoicePolicyOptions)
    for name in ("perplexity", "dialect_ppl", "aave_literature"):
        assert issubclass(benchmarks.get(name).Options, WindowOptions)
    # the shared request: greedy at temperature 0, seeded samples otherwise
    ctx = RequestContext(render=lambda p: p.text, seed=7, chat_template=False)
    item = Item("q1|gender", "q1", {"bias_type": "gender", "prompt": "Who?"})
    greedy = make("discrim_eval_gen").requests(item, ctx)[0].request
    assert (greedy.do_sample, greedy.n, greedy.max_new_tokens) == (False, 1, 200)
    s = make("discrim_eval_gen", samples="3", temperature="0.8", top_p="0.9").requests(item, ctx)[0].request
    assert (s.do_sample, s.n, s.temperature, s.top_p, s.seed) == (True, 3, 0.8, 0.9, 7)


def test_defaults_keyword_checks_its_fields():
    with pytest.raises(TypeError, match="nope"):
        class Bad(DecodingOptions, defaults={"nope": 1}):
            pass
    assert DecodingOptions().max_new_tokens == 100  # a subclass's defaults leave the shared model alone
    assert benchmarks.get("dt_stereotyping").Options().max_new_tokens == 150


def test_perplexity_windows_carry_no_instance_state():
    tokenize = lambda s: [1] + [ord(c) for c in s]  # anchor 1, one id per character
    ctx = RequestContext(render=lambda p: p.text, seed=0, chat_template=False, tokenize=tokenize)
    b = Perplexity({"window": "4"})
    corpus = [Item("corpus", "corpus", {"text": "abcdefghijklmnopqrstu"})]  # 21 targets: 7 windows of 3
    every = b.requests(b.select(corpus, None, 0)[0], ctx)
    assert [k.key for k in every] == [f"w{k:06d}" for k in range(7)]
    answers = {k.key: LoglikAnswer(sum=-float(i + 1), mean=-float(i + 1) / 3, n_tokens=3, greedy=False) for i, k in enumerate(every)}
    three = b.select(corpus, 3, seed=1)
    keys3 = [k.key for k in b.requests(three[0], ctx)]
    assert keys3 == chosen_windows([k.key for k in every], 3, 1) and len(keys3) == 3
    b.requests(b.select(corpus, 5, seed=2)[0], ctx)  # a later call with other settings changes nothing
    # units: the chosen windows of the items' selection, even among more stored answers (an earlier larger limit)
    units = b.units(three, answers)
    assert [u["unit"] for u in units] == keys3
    assert [u["nll"] for u in units] == [-answers[k].sum for k in keys3]
    assert [u["unit"] for u in b.units(three, {k: answers[k] for k in keys3})] == keys3
    assert [u["unit"] for u in Perplexity({"window": "4"}).units(b.select(corpus, None, 0), answers)] == sorted(answers)
    with pytest.raises(ConfigError, match="--limit must be >= 1"):
        Perplexity.select(corpus, 0, 0)
