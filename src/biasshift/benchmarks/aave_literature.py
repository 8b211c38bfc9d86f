"""Perplexity of the AAVE literature corpus (docs/benchmarks.md, seed paper 2's dialect perplexity text).

Data: the 52 staged raw texts of jazmiahenry/aave_corpora ``literature_unprocessed/`` (novels and stories by
African American authors, 1850s-1920s; docs/data.md), ``dialect_ppl_extra/aave_corpora/literature_unprocessed/
<Author_Title>.txt``, each a plain UTF-8 file that starts with an author/title/year line. Every file is one
work; its text is used as is (the title line included). An empty file is refused with its name.

Procedure (B's windowing, §6.5, with one deliberate difference): each work is tokenized once, with the anchor
token (BOS, else EOS) at its start only, and cut into consecutive non-overlapping windows of ``window``
tokens (default 2048, B's ``max_seq_length``) that share one token (:func:`.perplexity.windows`), so every
token after the anchor is a target exactly once. Perplexity = exp(mean over windows of the window's mean
NLL per token), B's definition; ``ppl_token_weighted`` = exp(total NLL / total tokens). B instead joined all
documents with blank lines into one stream; here each work keeps its own context so that every window
belongs to exactly one work: that gives exact per-work perplexities (``per_group['work']``, and per author)
and makes the work the resampling unit. The difference from B is confined to the at most one window per
work boundary that B's stream lets straddle two works.

Option ``max_windows`` (default 0 = all) scores only the first N windows of each work (for quick runs on
CPU); ``--limit N`` keeps N works chosen by a seeded hash. Unit: the work (its window NLLs and token counts).

Not a bias measure on its own: it is the language-modelling quality on African American English literature.
It is marked as a quality anchor (``is_quality_metric``) and reads as dialect bias next to the WikiText
``perplexity``: an acceleration that raises this perplexity relatively more than WikiText's degrades the
dialect more than standard English.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import Field

from ..data import DataFile
from ..engine.requests import Answer, Keyed, LoglikIdsRequest
from ..errors import DataError
from .base import Benchmark, BenchmarkResult, Item, RequestContext
from .perplexity import WindowOptions, need_tokenize, ppl_metrics, read_text, windows

_COMMIT = "8c0b26e7080f5e60bb3fd62b2061972b8941fb23"
_BASE = f"https://raw.githubusercontent.com/jazmiahenry/aave_corpora/{_COMMIT}/literature_unprocessed"
_DIR = "dialect_ppl_extra/aave_corpora/literature_unprocessed"

#: work (file name without .txt) -> (sha256, lines); manifest-extra.json
WORKS: dict[str, tuple[str, int]] = {
    "Ashby_RedderBlood": ("996eb44704d1dbdf34a72ccd450122eaf5dd84dee0c036ba8ca60ba35bf3bcfa", 2269),
    "Bennett_AGrotesqueLegendofOldCharleston": ("1dbe619be94ec0e2c81a128c970e8f8b8455b599f6ed8e7dfa993503b020e90b", 479),
    "Blackson_RiseandProgressoftheKingdomsofLightandDarkness": ("0ea31b5100414cf2a57de0a6d4af6bbd6917cdd60ad4efd7952c9e9df01b6c81", 391),
    "Brown_Clotel": ("4d49079b54c0c56bb3e9993d5d2bcf7b1a99d7d542c9e1c5a437055dccec6d6a", 668),
    "Bruce_AwakeningofHezekiahJones": ("38f483eabf0149fb6dd2bcdea968d0547f8b0c55dc116cc2ced1774cdc53bf6a", 578),
    "Burgess_AveMariaATale": ("2262b69ae86751a6d0d7b6a078365a5a4c4fa9d13595dcc6e2e3b24df8afeae5", 142),
    "Chesnutt_HouseBehindtheCedars": ("9c181a64ac3aa43dab60f5bc7cc18293b8f52aa6eb82f9a9aafb574e83ea5666", 1920),
    "Chesnutt_TheColonelsDream": ("e22e68566f50dce27918c9da81589fa47a662c9b093bd40ba89f3c3437544598", 2844),
    "Chesnutt_TheMarrowofTradition": ("5d3af02993d735c0b56494ecc712b6c7afb410c95be5a786ffeb5f68d216948a", 2952),
    "Coleman_PoorBen": ("1c416a884ae8af7f18737e9b4e20911e22d8529a67b43c6dee13d77da9a13173", 1294),
    "Detter_NellieBrownOrTheJealousWife": ("274920922261c98ae961e775d73b5b5aeef06f08e8002f2211abacef407b10cc", 2114),
    "Downing_TheAmericanCalvaryman": ("572fb72c3f9b98fbeb764802b393e96de5e7677d414095e35afe43c94898655a", 6542),
    "Dreer_TheImmediateJewelofHisSoul": ("93564d930dd930e8f3f7ae1b12b13cd4e8dd4ce969f0492b2f229353010a7454", 3184),
    "Dubois_QuestoftheSilverFleece": ("a97c6ab2bc4263fc3485bc71829504f8cbbd1d51f85249bb17ab7c38897b9393", 6682),
    "Dunbar_TheFanatics": ("650e2787898fa0e0a7cbf45f33f29c644260ca72e93d768e7a05076140aeb86c", 3244),
    "Dunbar_TheLoveofLandry": ("6034a0fe03129bff015f5ab1059b5ea0953a294c2057e705beeb9b71439220bd", 1396),
    "Dunbar_TheSportoftheGods": ("db8c23bffae1d8ea327aaa3a8b7ad79be6edbe927b8fd28f744a0bffdef9e934", 1998),
    "Dunbar_TheUncalled": ("2803fd2c7c0069e8373587cde6c721a643d64a565fc33553ffc33302d3b0c46e", 1916),
    "Durham_DianePriestessofHaiti": ("ecaf860ab331b585efbc9f132eef69e5f692a5759c169672635a26e73fecc7a7", 1416),
    "Ellis_LeopardsClaw": ("3408ddf32f7158671a69a180439a32a8db7500cffed85c5176fcb5f064d5d69f", 2594),
    "Fleming_ HopesHighway": ("cdd14c247a5563e8a73ede77b65fb2f76d84c3a8f9416dfe6de74025d26d55d5", 1286),
    "Franklin_CrimsonAlters": ("4daa2901f551a70b47c08c10003c45ecb2b896f45f3e425365a7c2f7feb461ce", 814),
    "Fullilove_WhoWasResponsible": ("568f689e4eed1cb6685c313a48efe21d25f31985df0c01b6bcb1a351dc5ed7d7", 1270),
    "Gilmore_TheProblem": ("e5e0c4731fa4efd993cc126caa5af8d241ad8022c9aa68074655ee90d7cf2e8d", 724),
    "Grant_OutoftheDarknessOrDiabolismandDestiny": ("8d0057743c125c7e68b8ce4618d5788ad3c194d908636f2717bac4dec8b2cac0", 1444),
    "Griggs_HinderedHand": ("7bd4b64548b497c4d8704187f1d42483dbdf0c782168460708a0a749e1570c77", 2790),
    "Griggs_ImperiuminImperio": ("d452c86bd61746d506b6ce4f7ea970263379732775c066b119831aa786fda588", 1720),
    "Griggs_Overshadowed": ("4e98a2398bfcbc4fc909d7763c2cbff67fe42fffaa36a897ff8093cab5d326d1", 1130),
    "Griggs_PointingtheWay": ("9ed939c86d48fe836dccecf0ba8f79bdc5b86b6795e6edcf0b9ec859367a919b", 2124),
    "Griggs_UnfetteredANovel": ("f29a5824758d4ea966438f47a470bfd9ed1c62616be7aa78389e1baaa8677f50", 1472),
    "Harper_IolaLeroy": ("4b702d60fa18180e709d11352d20b7650a7ea29330d8a0aee5a4a8fc2e7467ba", 3044),
    "Johnson_AutobiographyofanExColoredMan": ("7c8a681c9093b5ba1e0d95914888a39b96a01a1017db90986edf07b92d81bdbf", 582),
    "Johnson_KeytotheProblem": ("3ab6d9a1371c4aedc8614e27491f10cc908daef8db6f916730edadaf56ac4858", 106),
    "Johnson_TheFamily": ("4c54b14307c9acb99e20b8c8ba3a95d30d79bcc27fef19131121c52c97c5d5a0", 1752),
    "Johnson_TheMurderLink": ("b8774322e98ee35102bd9aef04b1a0fc3fbcbb3142f9247b70f7345603c61400", 2672),
    "Jones_HeartsofGold": ("0de5888398acb477296f3fb5168740223efdd6ae975733c3c969c44a78e7cc7b", 2970),
    "Jones_TheClimbersAStoryofSunkissedSweethearts": ("4e1992d3588897caaa4b4514b5e73edf26b15194863723f020134dcb48f36647", 1966),
    "Kelly_Megda": ("da563455f830b2fd4fe3fcfeeaa191089d862f3795627280c7835f0515636e63", 3930),
    "Micheaux_ConquestTheStoryofaNegroPioneer": ("068a89579abeb56aeafa17b07664922d3e57b557442e329cdd90b5ff0832d5d6", 1646),
    "Micheaux_TheForgedNoteARomanceoftheDarkerRaces": ("1223610dff087c6a1e811bcff4e0595aefe8ec347a201198b1e297ddac7a76e7", 8742),
    "Micheaux_TheHomesteader": ("65d39dd2e024c96e8ea910ab12e9b995b4ddf9037107f51a1b7d1ee7af20b4f4", 7576),
    "Nash_LoveVengeance": ("88bcaa6d934ccda6c36f170c259ef1fb0b2b841a6da149b4278114eae4ed2b25", 2516),
    "Roberts_TheMindReader": ("00bce09856ef8fd67b7f4270200c738defae7de151a713fe355b21d802fbfb12", 3458),
    "Shackelford_LillianSimmons": ("555b54b9250ed1a78bf1efff8bff248d58f92dfd717f25c650ad3f1857d42be3", 1668),
    "Steward_CharlestonLoveStory": ("4b1c5255c2bbcbf57ba0a3ad90bcec20dfbc48412970cca643f42a31300cdf61", 1058),
    "Tracy_SwordofNemesis": ("1a766e884cdd52a3567c7effd790d34eb74a1440f7b894f0e57d501844a309ae", 4090),
    "Walker_RevelationTrialandExileofJohnEpics": ("94a1f9846cfe46bb8b6d96bb9a174a7ecfc3e38429a073aa234a8f05185595bc", 508),
    "Walker_TheUnknownManAnAnswertoMrThomDixonsSinsoftheFathers": ("8b6f6ab28740d9736f0ec4eb265fe1a870a7f234392bfcac44f80886071ccf61", 1794),
    "Walker_TheUnknownManAnAnswertoMrThosDixonsSinsoftheFather": ("6e0b110e24580872ed78d1447e68412b6c3a3676236639c53cd753477c4716aa", 1796),
    "Waring_AsWeSeeIt": ("e7d9aefb4948c6a4e8130439ef2c9b41233d51eb51884ff2fb3dc502d49e48bd", 3170),
    "Webb_GariesandTheirFriends": ("804d2645c945c7465465a40bf783d2bfee4fbc1c860573e86af6ecb4a94fd42a", 6136),
    "Wilson_OurNig": ("f1b138b54de5036f136bacc9191b5fe4d5ef273b4e2e0aa3723a8845f4a10542", 1202),
}
FILES = {w: DataFile(rel=f"{_DIR}/{w}.txt", url=f"{_BASE}/{quote(w)}.txt", sha256=sha,
                     description=f"aave_corpora literature_unprocessed/{w}.txt ({n} lines)")
         for w, (sha, n) in WORKS.items()}


def author(work: str) -> str:
    return work.split("_", 1)[0].strip()


class AAVELiterature(Benchmark):
    name = "aave_literature"
    title = "AAVE literature perplexity"
    kind = "scoring"
    data_files = tuple(FILES.values())
    primary_metric = "ppl"
    primary_description = ("perplexity of 52 African American literature texts (1850s-1920s), non-overlapping "
                           "windows per work; quality on the dialect, read against WikiText perplexity")
    #: higher perplexity is worse
    higher_is_more_biased = True
    is_quality_metric = True
    outcome = "complex"

    class Options(WindowOptions, defaults={"window": 2048}):
        #: score only the first N windows of each work (0 = every window)
        max_windows: int = Field(0, ge=0)

    options: Options

    def load(self, files: dict[str, Path]) -> list[Item]:
        items = []
        for w, spec in FILES.items():
            if spec.rel not in files:  # the runner passes every file; a caller may pass a subset of the works
                continue
            path = files[spec.rel]
            text = read_text(path)
            if not text.strip():
                raise DataError("the text is empty", path=path)
            first = text.strip().splitlines()[0].strip()
            items.append(Item(id=w, unit=w, fields={"text": text, "author": author(w), "title_line": first}))
        if not items:
            raise DataError(f"none of the {len(FILES)} works was given", path=_DIR)
        return items

    def requests(self, item: Item, ctx: RequestContext) -> list[Keyed]:
        wins = windows(need_tokenize(ctx, self.name)(item.fields["text"]), self.options.window)
        k = self.options.max_windows
        if k:
            wins = wins[:k]
        return [Keyed(f"{item.id}/w{i:05d}", item.id, LoglikIdsRequest(ids=w)) for i, w in enumerate(wins)]

    def units(self, items: Sequence[Item], responses: dict[str, Answer]) -> list[dict[str, Any]]:
        out = []
        for it in items:
            rs = []
            while f"{it.id}/w{len(rs):05d}" in responses:
                rs.append(responses[f"{it.id}/w{len(rs):05d}"])
            if not rs:
                raise KeyError(f"{it.id}/w00000")
            out.append({"unit": it.id, "author": it.fields["author"], "nll": [-r.sum for r in rs],
                        "n_tokens": [r.n_tokens for r in rs]})
        return out

    def compute(self, units: Sequence[dict[str, Any]]) -> BenchmarkResult:
        nll = [x for u in units for x in u["nll"]]
        ntok = [x for u in units for x in u["n_tokens"]]
        metrics = ppl_metrics(nll, ntok)
        metrics["n_works"] = len(units)
        per_work = {}
        by_author: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for u in units:
            m = ppl_metrics(u["nll"], u["n_tokens"])
            per_work[u["unit"]] = {"ppl": m["ppl"], "ppl_token_weighted": m["ppl_token_weighted"],
                                   "n_windows": m["n_windows"], "n_tokens": m["n_tokens"], "n": m["n_windows"]}
            by_author[u["author"]].append(u)
        per_author = {}
        for a, us in sorted(by_author.items()):
            m = ppl_metrics([x for u in us for x in u["nll"]], [x for u in us for x in u["n_tokens"]])
            per_author[a] = {"ppl": m["ppl"], "n_works": len(us), "n_tokens": m["n_tokens"], "n": m["n_windows"]}
        notes = [f"each work tokenized once after the anchor token, windows of {self.options.window} tokens "
                 "(one shared token)" + (f", first {self.options.max_windows} window(s) per work" if self.options.max_windows else "")
                 + "; ppl = exp(mean of per-window mean NLL)"]
        return BenchmarkResult(metrics=metrics, primary=self.primary_metric, n_units=len(units),
                               per_group={"work": dict(sorted(per_work.items())), "author": per_author}, notes=notes)
