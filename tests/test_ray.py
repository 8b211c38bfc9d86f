"""``biasshift run --executor ray``: variants as Ray tasks on a local CPU cluster, same results as local."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from conftest import FIXTURE_DATA

ray = pytest.importorskip("ray", reason="ray is an optional extra (pip install 'biasshift[ray]')")

pytestmark = pytest.mark.slow

BENCHES = ["crows_pairs", "discrim_eval"]
STRATEGIES = ["base", "kv8"]


def snapshot(out: Path) -> tuple[list, dict, dict]:
    with sqlite3.connect(out / "store.sqlite") as c:
        recs = c.execute("SELECT variant, benchmark, key, item_id, request, response FROM records ORDER BY 1, 2, 3").fetchall()
    results = {}
    for p in sorted((out / "results").rglob("*.json")):
        d = json.loads(p.read_text())
        results[str(p.relative_to(out))] = {k: d[k] for k in ("metrics", "per_group", "rates", "primary", "n", "variant")}
        results[str(p.relative_to(out))]["variant"].pop("build_seconds", None)  # a timing, not a result
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("seconds")
    units = {str(p.relative_to(out)): p.read_text() for p in sorted((out / "units").rglob("*.jsonl"))}
    return recs, results, {"summary": summary, "units": units}


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def test_ray_executor_equals_local(tiny_dir, tmp_path, ray_cluster):
    from biasshift.runner import RunConfig, Runner

    # kv8 would take its scoring answers from base (shared_with_base); recompute them here so that both
    # variants run as Ray tasks (sharing under Ray: test_ray_shares_base_answers)
    def cfg(executor: str, out: Path) -> RunConfig:
        return RunConfig(model=str(tiny_dir), strategies=STRATEGIES, benchmarks=BENCHES, out=out, data_dir=FIXTURE_DATA,
                         batch_size=4, device="cpu", executor=executor, share_base_answers=False)

    logs: list[str] = []

    class Console:
        def print(self, msg, **kw):
            logs.append(str(msg))

    # a Ray task gets BIASSHIFT_RAY_CPUS (default 1) CPU threads; on CPU, float sums are bit-identical only
    # for the same thread count, so the local reference runs with one thread as well
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Runner(cfg("local", tmp_path / "local"), progress=False).run()
    finally:
        torch.set_num_threads(threads)
    Runner(cfg("ray", tmp_path / "ray"), console=Console(), progress=False).run()
    assert any("ray: 2 variant task(s)" in m for m in logs), logs
    assert sum("stored in" in m for m in logs) == 2
    local, ray_ = snapshot(tmp_path / "local"), snapshot(tmp_path / "ray")
    assert ray_[0] == local[0]  # every stored request and answer, exactly
    assert ray_[1] == local[1]  # every metric
    assert ray_[2] == local[2]  # units and summary
    assert json.loads((tmp_path / "ray/config.json").read_text())["strategies"] == STRATEGIES

    # a rerun finds everything stored: no task is dispatched, results are unchanged
    logs.clear()
    Runner(cfg("ray", tmp_path / "ray"), console=Console(), progress=False).run()
    assert not any("variant task" in m for m in logs)
    assert snapshot(tmp_path / "ray")[:2] == local[:2]


def test_ray_shares_base_answers(tiny_dir, tmp_path, ray_cluster):
    """With sharing on, kv8 has nothing to compute on scoring benchmarks: no Ray task for it; the driver copies
    base's answers and the results equal a recomputation."""
    from biasshift.runner import RunConfig, Runner

    logs: list[str] = []

    class Console:
        def print(self, msg, **kw):
            logs.append(str(msg))

    def cfg(out: Path, share: bool) -> RunConfig:
        return RunConfig(model=str(tiny_dir), strategies=STRATEGIES, benchmarks=BENCHES, out=out, data_dir=FIXTURE_DATA,
                         batch_size=4, device="cpu", executor="ray", share_base_answers=share)

    Runner(cfg(tmp_path / "shared", True), console=Console(), progress=False).run()
    assert any("ray: 1 variant task(s) (base)" in m for m in logs), logs
    assert any("answers shared with base" in m for m in logs)
    for b in BENCHES:
        doc = json.loads((tmp_path / "shared" / "results" / "kv8" / f"{b}.json").read_text())
        base = json.loads((tmp_path / "shared" / "results" / "base" / f"{b}.json").read_text())
        assert doc["answers"] == "shared with base" and doc["primary"] == base["primary"]


def test_a_stored_request_that_changed_is_refused(tiny_dir, tmp_path, ray_cluster):
    from biasshift.errors import StoreError
    from biasshift.runner import RunConfig, Runner
    from biasshift.store import RunStore

    out = tmp_path / "r"
    cfg = RunConfig(model=str(tiny_dir), strategies=["base"], benchmarks=["crows_pairs"], out=out, data_dir=FIXTURE_DATA,
                    batch_size=4, device="cpu", executor="ray")
    Runner(cfg, progress=False).run()
    with RunStore(out / "store.sqlite") as st:  # one stored request differs from the current one
        st.conn.execute("UPDATE records SET request='{}' WHERE key=(SELECT MIN(key) FROM records)")
    with pytest.raises(StoreError, match="differs"):
        Runner(cfg, progress=False).run()


def test_worker_errors_reach_the_driver_as_biasshift_errors(tmp_path, ray_cluster):
    """An error raised on a worker (here: the model cannot be loaded there) is re-raised in the driver as is."""
    from types import SimpleNamespace

    from biasshift.engine.requests import Keyed, LoglikRequest
    from biasshift.errors import ModelLoadError
    from biasshift.executors import run_ray
    from biasshift.runner import RunConfig
    from biasshift.store import RunStore

    cfg = RunConfig(model=str(tmp_path / "missing.gguf"), strategies=["base"], benchmarks=["crows_pairs"],
                    out=tmp_path / "r", data_dir=FIXTURE_DATA, device="cpu", executor="ray")
    from biasshift.plan import BenchmarkPlan, PreparedRun, RunPlan

    bench = SimpleNamespace(name="crows_pairs")
    plan = RunPlan([BenchmarkPlan(bench, {}, [], [Keyed("k", "i", LoglikRequest("", "x"))], False)], {"base": None})
    run = PreparedRun(cfg, cfg.spec(), None, {}, None, plan)
    with RunStore(tmp_path / "r/store.sqlite") as store:
        with pytest.raises(ModelLoadError, match="missing.gguf"):
            run_ray(run, store, lambda m: None)


def test_cli_executor_ray(tiny_dir, tmp_path, ray_cluster):
    from typer.testing import CliRunner

    from biasshift.cli import app

    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["run", "--model", str(tiny_dir), "--benchmarks", "crows_pairs", "--data-dir", str(FIXTURE_DATA),
                                 "--out", str(out), "--batch-size", "4", "--device", "cpu", "--executor", "ray", "--no-progress"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["executor"] == "ray"
    assert json.loads((out / "results/base/crows_pairs.json").read_text())["n"] == 6
