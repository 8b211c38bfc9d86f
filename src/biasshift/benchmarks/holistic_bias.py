"""HolisticBias regard prompts (ROBBIE's ``holisticbiasr``; docs/benchmarks.md, code base B).

Prompts are built from HolisticBias v1.1 (facebookresearch/ResponsibleNLP ``holistic_bias/dataset/v1.1``) the
way ROBBIE (``robbie/datasets/holisticbiasr.py`` with ``HolisticBiasSentenceGenerator``) built B's
``holisticbiasr/prompts.jsonl``:

1. noun phrases: ``noun`` ("a woman"; axis ``null``), ``descriptor_noun`` ("a Deaf woman"; each descriptor
   with every noun of its gender, or every noun when it has none; the article is the descriptor's ``article``
   field, else "an" before a vowel, else "a"), ``noun_descriptor`` (standalone phrases with ``{noun}``, e.g.
   "a woman who uses a wheelchair", article from the noun) and ``fixed_phrase`` (standalone phrases without a
   noun, e.g. "a wheelchair user"); the bare ``descriptor`` type is left out, as ROBBIE does. Exact repeats
   (same axis and phrase) are counted and dropped;
2. each noun phrase x each of the 10 regard templates (biasshift.benchmarks.regard.TEMPLATES);
3. stylistic variants, each with probability 1/2 (ROBBIE; option ``variants``): hyphens -> spaces, then
   lowercasing; ROBBIE draws them unseeded, we draw them from a hash of (noun phrase, template), so every
   run sees the same prompts;
4. the indefinite article becomes "The" ("The deaf woman was known for").
B then kept 10,000 prompts after ``random.seed(42)`` shuffling (option ``n_samples``; 0 keeps all): we shuffle
the sorted prompt list with ``random.Random(42)`` (the same sampling scheme; B's exact 10,000 are not
recoverable, its file is not public).

Generation, classifier (option ``classifier``, required: no offline regard classifier ships) and metrics as
for ``regard``; groups: ``axis`` (the 13 HolisticBias axes plus ``null``, primary gap), ``axis_bucket`` and
``context``.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from pydantic import Field

from ..data import DataFile
from ..errors import DataError
from .base import Item
from .harm import load_classifier
from .io import read_json
from .regard import TEMPLATES, RegardBase

_HB = ("https://raw.githubusercontent.com/facebookresearch/ResponsibleNLP/0ec714eb084217f44cd9ac466d9e988c795302f9/"
       "holistic_bias/dataset/v1.1/")
FILES = {
    "descriptors": DataFile(rel="holistic_bias/v1.1/descriptors.json", url=_HB + "descriptors.json",
                            sha256="c1328f0edfdeefb76302d360a01878df3db55f18026f4ea1956b4a0f52daf943",
                            description="HolisticBias v1.1 descriptors (13 axes)"),
    "nouns": DataFile(rel="holistic_bias/v1.1/nouns.json", url=_HB + "nouns.json",
                      sha256="9bbe15bf01ea8827fd5d68a81ee2b05e04bd5f79478d9027efec0b4dbd232ee6",
                      description="HolisticBias v1.1 nouns (female/male/neutral)"),
    "standalone": DataFile(rel="holistic_bias/v1.1/standalone_noun_phrases.json", url=_HB + "standalone_noun_phrases.json",
                           sha256="bac592574f81df55e8c8d8e3919a866d43cbd8df5ae9376a68d95e7b83dbebac",
                           description="HolisticBias v1.1 standalone noun phrases"),
}
NONE = "(none)"


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"




def read_nouns(path: Path) -> dict[str, list[tuple[str, str]]]:
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise DataError("expected an object {gender: [[singular, plural], ...]}", path=path)
    out: dict[str, list[tuple[str, str]]] = {}
    for gender, pairs in data.items():
        if not isinstance(pairs, list):
            raise DataError("expected a list of [singular, plural] pairs", path=path, field=gender)
        for k, p in enumerate(pairs):
            if not (isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) and x.strip() for x in p)):
                raise DataError("expected a [singular, plural] pair of non-empty strings", path=path, field=f"{gender}[{k}]")
        out[gender] = [(p[0], p[1]) for p in pairs]
    return out


def noun_phrases(descriptors_path: Path, nouns_path: Path, standalone_path: Path) -> tuple[list[dict[str, str]], int]:
    """All noun phrases of the four types ROBBIE keeps, and the number of exact repeats dropped."""
    nouns = read_nouns(nouns_path)
    all_nouns = [(g, s) for g, pairs in nouns.items() for s, _ in pairs]
    rows: list[dict[str, str]] = [{"axis": "null", "bucket": NONE, "descriptor": NONE, "noun": s, "type": "noun",
                                   "noun_phrase": f"{article(s)} {s}"} for _, s in all_nouns]
    desc = read_json(descriptors_path)
    if not isinstance(desc, dict) or not desc:
        raise DataError("expected an object {axis: {bucket: [descriptors]}}", path=descriptors_path)
    for axis, buckets in desc.items():
        if not isinstance(buckets, dict):
            raise DataError("expected an object {bucket: [descriptors]}", path=descriptors_path, field=axis)
        for bucket, entries in buckets.items():
            if not isinstance(entries, list):
                raise DataError("expected a list of descriptors", path=descriptors_path, field=f"{axis}/{bucket}")
            for k, e in enumerate(entries):
                where = f"{axis}/{bucket}[{k}]"
                if isinstance(e, str):
                    e = {"descriptor": e}
                if not isinstance(e, dict) or not isinstance(e.get("descriptor"), str) or not e["descriptor"].strip():
                    raise DataError("expected a descriptor string or an object with a 'descriptor' string",
                                    path=descriptors_path, field=where)
                d, gender = e["descriptor"], e.get("gender")
                if gender is not None and gender not in nouns:
                    raise DataError(f"unknown gender {gender!r} (nouns.json has {', '.join(nouns)})",
                                    path=descriptors_path, field=f"{where}.gender")
                art = e.get("article", article(d))
                for g, s in all_nouns:
                    if gender is None or gender == g:
                        rows.append({"axis": axis, "bucket": bucket, "descriptor": d, "noun": s, "type": "descriptor_noun",
                                     "noun_phrase": f"{art} {d} {s}"})
    stand = read_json(standalone_path)
    if not isinstance(stand, dict):
        raise DataError("expected an object {axis: [noun phrases]}", path=standalone_path)
    for axis, entries in stand.items():
        if not isinstance(entries, list):
            raise DataError("expected a list of noun phrases", path=standalone_path, field=axis)
        for k, e in enumerate(entries):
            phrase = e if isinstance(e, str) else e.get("noun_phrase") if isinstance(e, dict) else None
            if not isinstance(phrase, str) or not phrase.strip():
                raise DataError("expected a noun phrase string or an object with 'noun_phrase'", path=standalone_path,
                                field=f"{axis}[{k}]")
            if "{noun}" in phrase:
                d = phrase.replace("{article}", "").replace("{noun}", "").strip()
                for _, s in all_nouns:
                    rows.append({"axis": axis, "bucket": NONE, "descriptor": d, "noun": s, "type": "noun_descriptor",
                                 "noun_phrase": phrase.replace("{article}", article(s)).replace("{noun}", s)})
            else:
                rows.append({"axis": axis, "bucket": NONE, "descriptor": phrase, "noun": NONE, "type": "fixed_phrase",
                             "noun_phrase": phrase})
    seen, out = set(), []
    for r in rows:
        key = (r["axis"], r["noun_phrase"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out, len(rows) - len(out)


def _coin(*parts: str) -> float:
    h = hashlib.sha256("\x00".join(("holistic_bias", *parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def styled(noun_phrase: str, template: str, variants: bool) -> str:
    """ROBBIE's variants (hyphens -> spaces, lowercase; each p = 1/2, here hash-seeded) and 'a'/'an' -> 'The'."""
    v = noun_phrase
    if variants and _coin(noun_phrase, template, "hyphens") < 0.5:
        v = v.replace("-", " ")
    if variants and _coin(noun_phrase, template, "lowercase") < 0.5:
        v = v.lower()
    for art in ("a ", "an "):
        if v.startswith(art):
            return "The " + v[len(art):]
    raise ValueError(v)


class HolisticBias(RegardBase):
    name = "holistic_bias"
    title = "HolisticBias (regard)"
    data_files = tuple(FILES.values())
    primary_description = ("max - min over HolisticBias axes of the share of continuations with negative regard")
    group_fields = ("axis", "axis_bucket", "context")

    class Options(RegardBase.Options, defaults={"min_group_n": 10}):
        #: prompts kept after ROBBIE's seeded shuffle (0 keeps every prompt)
        n_samples: int = Field(10000, ge=0)
        #: ROBBIE's article/capitalisation variants of the noun phrases
        variants: bool = True

    options: Options

    def load(self, files: dict[str, Path]) -> list[Item]:
        load_classifier(self.name, self.options, "regard")  # fail before any generation, never fall back
        phrases, repeats = noun_phrases(files[FILES["descriptors"].rel], files[FILES["nouns"].rel],
                                        files[FILES["standalone"].rel])
        items, no_article = [], 0
        for t, (context, template) in enumerate(TEMPLATES):
            for r in phrases:
                try:
                    np_ = styled(r["noun_phrase"], template, self.options.variants)
                except ValueError:  # ROBBIE refuses a phrase without an indefinite article; we count and skip it
                    no_article += 1
                    continue
                iid = f"{r['axis']}|{r['noun_phrase']}|{t}"
                items.append(Item(id=iid, unit=iid, fields={
                    "prompt": template.format(noun_phrase=np_), "noun_phrase": np_, "axis": r["axis"],
                    "axis_bucket": f"{r['axis']}/{r['bucket']}", "context": context, "type": r["type"]}))
        total = len(items)
        if repeats:
            self.count_quirk("repeated_noun_phrases_dropped", repeats)
        if no_article:
            self.count_quirk("no_indefinite_article_skipped", no_article)
        items.sort(key=lambda it: it.id)
        random.Random(42).shuffle(items)
        n = self.options.n_samples
        if n:
            items = items[:n]
        self.load_notes.append(f"{len(phrases)} noun phrases x {len(TEMPLATES)} templates = {total} prompts, "
                               f"{len(items)} kept (random.Random(42) shuffle, n_samples {n or 'all'}); dropped "
                               f"{repeats} repeated noun phrases, {no_article} phrases without an indefinite article")
        return items
