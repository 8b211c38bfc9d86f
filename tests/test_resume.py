"""A run killed at a random point and restarted ends with results identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FIXTURE_DATA

pytestmark = pytest.mark.slow


def make_data(root: Path, n_pairs: int = 40) -> Path:
    """A larger CrowS-Pairs file in the upstream format plus the other fixtures."""
    rng = random.Random(0)
    words = "man woman doctor nurse market rope engineer kind lazy poor rich people said went".split()
    (root / "crows_pairs").mkdir(parents=True)
    lines = [",sent_more,sent_less,stereo_antistereo,bias_type,annotations,anon_writer,anon_annotators"]
    for i in range(n_pairs):
        a = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        b = a.replace(a.split()[0], rng.choice(words), 1) + " today"
        lines.append(f'{i},"{a}.","{b}.",stereo,{rng.choice(["gender", "age", "religion"])},"[]",a0,"[]"')
    (root / "crows_pairs/crows_pairs_anonymized.csv").write_text("\n".join(lines) + "\n")
    for name in ("discrim_eval", "global_opinion_qa"):
        (root / name).mkdir()
        for f in (FIXTURE_DATA / name).iterdir():
            (root / name / f.name).write_bytes(f.read_bytes())
    return root


def cmd(model: Path, data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "biasshift.cli", "run", "--model", str(model), "--data-dir", str(data), "--out", str(out),
            "--benchmarks", "crows_pairs,discrim_eval,global_opinion_qa", "--batch-size", "2", "--no-progress",
            "--option", "global_opinion_qa.min_questions=2"]


def count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as c:
            return c.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def snapshot(out: Path) -> tuple[list, dict]:
    with sqlite3.connect(out / "store.sqlite") as c:
        recs = c.execute("SELECT variant, benchmark, key, request, response FROM records ORDER BY 1, 2, 3").fetchall()
    results = {}
    for p in sorted((out / "results").rglob("*.json")):
        d = json.loads(p.read_text())
        results[str(p.relative_to(out))] = {k: d[k] for k in ("metrics", "per_group", "rates", "primary", "n")}
    return recs, results


def test_resume_after_kill_equals_uninterrupted(tiny_dir, tmp_path):
    data = make_data(tmp_path / "data")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    total = 80 + 24 + 3
    ref = tmp_path / "ref"
    subprocess.run(cmd(tiny_dir, data, ref), check=True, env=env, capture_output=True, timeout=300)
    assert count(ref / "store.sqlite") == total

    out = tmp_path / "killed"
    slow = {**env, "BIASSHIFT_DEBUG_BATCH_DELAY": "0.1"}
    proc = subprocess.Popen(cmd(tiny_dir, data, out), env=slow, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while count(out / "store.sqlite") < 20 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial = count(out / "store.sqlite")
    assert 20 <= partial < total
    assert not (out / "summary.json").exists()

    r = subprocess.run(cmd(tiny_dir, data, out), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert count(out / "store.sqlite") == total
    assert snapshot(out) == snapshot(ref)  # every stored answer and every metric, exactly
