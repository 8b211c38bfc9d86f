"""Issue 13 item 2 on a real full disk: a small tmpfs (needs root and `mount -t tmpfs`; skipped otherwise).

For many amounts of free space the run stops with exit 2 and a one-line error (or succeeds), never a
traceback; after freeing space the same command resumes to results identical to a run on a roomy disk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from biasshift.cli import app
from conftest import FIXTURE_DATA

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt: Path, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free: fill the disk completely, then give ``leave`` back."""
    f = mnt / "filler"
    with open(f, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
        fh.truncate(max(0, fh.tell() - leave))
    return f


def _run(model, out):
    return runner.invoke(app, ["run", "--model", str(model), "--out", str(out), "--benchmarks", "crows_pairs,discrim_eval",
                               "--data-dir", str(FIXTURE_DATA), "--no-progress", "--dtype", "float32", "--batch-size", "2"])


def _results(out: Path) -> dict:
    return {str(p.relative_to(out)): {k: v for k, v in json.loads(p.read_text()).items() if k in ("metrics", "per_group", "n")}
            for p in sorted((out / "results").rglob("*.json"))}


def test_full_tmpfs_at_many_points_then_resume(tiny_dir, tmp_path, tmpfs):
    ref = tmp_path / "ref"
    assert _run(tiny_dir, ref).exit_code == 0
    outcomes = []
    for k, leave in enumerate((0, 2_000, 8_000, 20_000, 40_000, 60_000, 90_000, 130_000)):
        out = tmpfs / f"r{k}"
        filler = _fill(tmpfs, leave)
        r = _run(tiny_dir, out)
        assert r.exit_code in (0, 2), r.output
        assert "Traceback" not in r.output
        if r.exit_code == 2:
            assert "disk is full" in " ".join(r.output.split()), r.output
        outcomes.append(r.exit_code)
        filler.unlink()
        r = _run(tiny_dir, out)  # free space, rerun the same command
        assert r.exit_code == 0, r.output
        assert _results(out) == _results(ref)
        shutil.rmtree(out)
    assert 2 in outcomes  # the disk really was full at some point


def test_full_tmpfs_writing_a_report(tiny_dir, tmp_path, tmpfs):
    run = tmp_path / "r"
    assert _run(tiny_dir, run).exit_code == 0
    _fill(tmpfs, 0)
    r = runner.invoke(app, ["report", str(run), "--out", str(tmpfs / "rep"), "--format", "md,csv,json", "--n-boot", "50"])
    assert r.exit_code == 2 and "Traceback" not in r.output and "disk is full" in " ".join(r.output.split()), r.output
