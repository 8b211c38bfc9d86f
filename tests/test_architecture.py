"""The spine's promises: no import cycle, and an engine added without touching runner or executors."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from biasshift import engine as engines
from biasshift.engine.base import Engine, EngineStats
from biasshift.engine.requests import ChoiceAnswer, GenerateAnswer, LoglikAnswer, Sample
from biasshift.runner import RunConfig, Runner
from conftest import FIXTURE_DATA

SRC = Path(__file__).resolve().parents[1] / "src" / "biasshift"


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the biasshift modules it imports, at module level or inside functions."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg
                    for _ in range(node.level - 1):
                        base = base.rsplit(".", 1)[0]
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                for a in node.names:
                    if f"{target}.{a.name}" in mods:
                        deps.add(f"{target}.{a.name}")
                    elif target in mods:
                        deps.add(target)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
        deps.discard(mod)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_runner_and_executors_name_no_engine_class():
    graph = import_graph()
    for mod in ("biasshift.runner", "biasshift.executors"):
        assert "biasshift.engine.hf" not in graph[mod], mod
        assert "HFEngine" not in (SRC / (mod.split(".")[1] + ".py")).read_text(), mod


class ConstantEngine:
    """A made-up engine: every log-likelihood is -1 per token, every choice uniform, every text 'I agree.'"""

    name = "constant"

    def __init__(self, variant_info: dict) -> None:
        self.stats = EngineStats()
        self.progress = None
        self.variant_info = variant_info

    @classmethod
    def open(cls, strategy, spec, settings):
        return cls({"strategy": strategy.spec_name, "config": strategy.config(), "requested": strategy.requested(),
                    "engine": {"name": cls.name, "batch_size": settings.batch_size}})

    def run(self, items, on_batch, done=()):
        done = set(done)
        out = []
        for it in items:
            if it.key in done:
                continue
            r = it.request
            if r.kind in ("loglik", "loglik_ids"):
                n = len(r.continuation.split()) if r.kind == "loglik" else len(r.ids) - 1
                out.append((it, LoglikAnswer(-float(n), -1.0, n, False, engine=self.name)))
            elif r.kind == "choice":
                p = 1.0 / len(r.choices)
                out.append((it, ChoiceAnswer({c: p for c in r.choices}, {c: p for c in r.choices}, 0.0, engine=self.name)))
            else:
                out.append((it, GenerateAnswer(tuple(Sample("I agree.", 2, "eos") for _ in range(r.n)), engine=self.name)))
        on_batch(out)

    def describe(self):
        return {"name": self.name}

    def close(self):
        pass


def test_a_new_engine_plugs_in_through_the_registry_alone(tiny_dir, tmp_path, monkeypatch):
    import sys
    import types

    mod = types.ModuleType("constant_engine_for_test")
    mod.ConstantEngine = ConstantEngine
    monkeypatch.setitem(sys.modules, "constant_engine_for_test", mod)
    monkeypatch.setitem(engines._REGISTRY, "constant", ("constant_engine_for_test:ConstantEngine", "test engine"))
    assert isinstance(ConstantEngine({}), Engine)
    out = tmp_path / "run"
    cfg = RunConfig(model=str(tiny_dir), benchmarks=["crows_pairs", "discrim_eval"], out=out, data_dir=FIXTURE_DATA,
                    device="cpu", dtype="float32", limit=4, engine="constant")
    summary = Runner(cfg, progress=False).run()
    # CrowS: equal per-token scores on both sentences -> "more" never wins -> 0%
    assert summary["variants"]["base"]["crows_pairs"]["value"] == 0.0
    doc = json.loads((out / "results" / "base" / "discrim_eval.json").read_text())
    assert doc["inference"]["engine"]["name"] == "constant"
    assert doc["primary"]["value"] == 0.0  # uniform choice: p(yes) = 0.5 for every profile, no spread
    from biasshift.store import RunStore

    with RunStore(out / "store.sqlite") as store:
        answers = store.responses("base", "crows_pairs")
    assert answers and {a.engine for a in answers.values()} == {"constant"}  # each answer says which engine ran it


def test_a_variant_is_not_continued_on_another_engine(tiny_dir, tmp_path, monkeypatch):
    import sys
    import types

    import pytest

    from biasshift.errors import StoreError

    mod = types.ModuleType("constant_engine_for_test")
    mod.ConstantEngine = ConstantEngine
    monkeypatch.setitem(sys.modules, "constant_engine_for_test", mod)
    monkeypatch.setitem(engines._REGISTRY, "constant", ("constant_engine_for_test:ConstantEngine", "test engine"))
    out = tmp_path / "run"

    def cfg(engine: str, limit: int) -> RunConfig:
        return RunConfig(model=str(tiny_dir), benchmarks=["crows_pairs"], out=out, data_dir=FIXTURE_DATA, device="cpu",
                         dtype="float32", limit=limit, engine=engine)

    Runner(cfg("constant", 2), progress=False).run()
    Runner(cfg("hf", 2), progress=False).run()  # nothing left to compute: no engine opens, the results stand
    with pytest.raises(StoreError, match="computed with --engine constant"):
        Runner(cfg("hf", 4), progress=False).run()
