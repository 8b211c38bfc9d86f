"""Issue 13, reliability under hostile conditions: one test (or more) per numbered item.

1 one writer per run directory (two real processes), unique temporary names, config/summary merging,
  a refused run changes nothing; 2 a full disk (injected ENOSPC; a real tmpfs in test_reliability_tmpfs.py);
3 stale partial variant-cache entries; 4 damaged stores; 5 argument validation before any write;
6 data checks; 7 untrusted text in CSV/Markdown, benchmark names in result documents; 8 gate and
report semantics and exit codes.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from answers import answer
from biasshift.cli import app
from biasshift.errors import BiasshiftError, DataError, DiskError, LockError
from conftest import FIXTURE_DATA

runner = CliRunner()
CROWS = FIXTURE_DATA / "crows_pairs/crows_pairs_anonymized.csv"


def run_cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def run_args(model, out, *extra, benchmarks="crows_pairs", data=FIXTURE_DATA):
    return ["run", "--model", model, "--out", out, "--benchmarks", benchmarks, "--data-dir", data, "--no-progress",
            "--dtype", "float32", *extra]


def one_line_error(r, *needles):
    """Exit 2, an 'error:' message containing ``needles``, and no traceback."""
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and "Traceback" not in r.output, r.output
    text = " ".join(r.output.split())
    for n in needles:
        assert n in text, (n, text)


def tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base_run(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rel") / "r"
    r = runner.invoke(app, [str(a) for a in run_args(tiny_dir, out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out


# ============================================================================================ 1. concurrency
def _cmd(model, data, out, benchmarks="crows_pairs,discrim_eval"):
    return [sys.executable, "-m", "biasshift.cli", "run", "--model", str(model), "--data-dir", str(data), "--out", str(out),
            "--benchmarks", benchmarks, "--batch-size", "1", "--no-progress", "--dtype", "float32"]


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as c:
            return c.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_second_writer_is_refused_with_the_holder_named_and_kill_releases_the_lock(tiny_dir, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_cmd(tiny_dir, FIXTURE_DATA, ref), check=True, env=env, capture_output=True, timeout=300)
    out = tmp_path / "shared"
    slow = {**env, "BIASSHIFT_DEBUG_BATCH_DELAY": "1.0"}
    first = subprocess.Popen(_cmd(tiny_dir, FIXTURE_DATA, out), env=slow, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while _count(out / "store.sqlite") < 2 and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second could start"
        second = subprocess.run(_cmd(tiny_dir, FIXTURE_DATA, out), env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        msg = " ".join(second.stderr.split())
        assert f"is in use by pid {first.pid}" in msg and "host" in msg and "started" in msg, msg
        assert "Traceback" not in second.stderr
        first.kill()  # SIGKILL: no clean-up runs, the kernel drops the flock
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    again = subprocess.run(_cmd(tiny_dir, FIXTURE_DATA, out), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    for rel in ("results/base/crows_pairs.json", "results/base/discrim_eval.json"):
        a, b = (json.loads((d / rel).read_text()) for d in (ref, out))
        assert a["metrics"] == b["metrics"] and a["per_group"] == b["per_group"]
    assert not list(out.rglob("*.tmp"))


def test_lock_in_process_names_holder(tmp_path):
    from biasshift.lock import RunLock

    with RunLock(tmp_path):
        # flock locks belong to the open file description: a second open in the same process is excluded too
        with pytest.raises(LockError, match=f"in use by pid {os.getpid()} on host"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released on exit
        pass


_WRITER = """
import sys
from pathlib import Path
from biasshift.rundir import write_json
p = Path(sys.argv[1])
for i in range(300):
    write_json(p, {"writer": sys.argv[2], "i": i, "pad": "x" * 2000})
"""


def test_concurrent_writers_of_one_document_never_collide(tmp_path):
    target = tmp_path / "results" / "base" / "crows_pairs.json"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(target), str(k)], stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err  # the shared ".tmp" name made one of them die in os.replace
    doc = json.loads(target.read_text())
    assert doc["i"] == 299 and not list(target.parent.glob("*.tmp"))


def test_invocations_with_different_benchmarks_merge_config_and_summary(tiny_dir, tmp_path):
    out = tmp_path / "r"
    assert run_cli(*run_args(tiny_dir, out, benchmarks="crows_pairs")).exit_code == 0
    r = run_cli(*run_args(tiny_dir, out, "--option", "discrim_eval.policy=space", benchmarks="discrim_eval"))
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert cfg["benchmarks"] == ["crows_pairs", "discrim_eval"] and cfg["options"] == {"discrim_eval": {"policy": "space"}}
    assert set(summary["variants"]["base"]) == {"crows_pairs", "discrim_eval"}


def test_summary_is_rebuilt_from_results_when_damaged(tiny_dir, tmp_path):
    out = tmp_path / "r"
    assert run_cli(*run_args(tiny_dir, out, benchmarks="crows_pairs")).exit_code == 0
    want = json.loads((out / "summary.json").read_text())["variants"]["base"]["crows_pairs"]
    (out / "summary.json").write_text("{not json")
    assert run_cli(*run_args(tiny_dir, out, "--limit", "1", benchmarks="discrim_eval")).exit_code == 0
    got = json.loads((out / "summary.json").read_text())["variants"]["base"]
    assert got["crows_pairs"]["value"] == want["value"] and "discrim_eval" in got


def test_refused_run_rewrites_nothing(base_run, tiny_dir):
    before = tree(base_run)
    r = run_cli(*run_args(tiny_dir, base_run)[:-2], "--dtype", "bfloat16")
    one_line_error(r, "different run configuration", "dtype")
    assert tree(base_run) == before  # config.json still says float32, the store is untouched


# ============================================================================================ 2. disk full
def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_while_writing_results_is_one_line_and_resumable(tiny_dir, tmp_path, monkeypatch):
    import biasshift.rundir as rd

    out = tmp_path / "r"
    monkeypatch.setattr(rd.os, "fsync", _enospc)  # every atomic write fails after its data is written
    r = run_cli(*run_args(tiny_dir, out))
    one_line_error(r, "disk is full", "free space", str(out / "config.json"))
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no temporary file left behind
    monkeypatch.undo()
    r = run_cli(*run_args(tiny_dir, out))
    assert r.exit_code == 0, r.output
    assert json.loads((out / "summary.json").read_text())["variants"]["base"]["crows_pairs"]["n_units"] == 6


def test_full_disk_for_units_keeps_the_old_file(tiny_dir, tmp_path, monkeypatch):
    import biasshift.rundir as rd

    out = tmp_path / "r"
    assert run_cli(*run_args(tiny_dir, out)).exit_code == 0
    units = out / "units/base/crows_pairs.jsonl"
    old = units.read_bytes()
    real = rd.os.replace

    def replace(src, dst):
        if str(dst).endswith(".jsonl"):
            _enospc()
        return real(src, dst)

    monkeypatch.setattr(rd.os, "replace", replace)
    one_line_error(run_cli(*run_args(tiny_dir, out)), "writing crows_pairs.jsonl failed", "disk is full")
    assert units.read_bytes() == old


class _FullConn:
    """A sqlite3 connection whose writes fail like a full disk (SQLITE_FULL)."""

    def __init__(self, conn, fail_on):
        self._c, self._fail_on = conn, fail_on

    def execute(self, sql, *a):
        if any(sql.lstrip().upper().startswith(w) for w in self._fail_on):
            raise sqlite3.OperationalError("database or disk is full")
        return self._c.execute(sql, *a)

    def executemany(self, sql, *a):
        if "MANY" in self._fail_on:
            raise sqlite3.OperationalError("database or disk is full")
        return self._c.executemany(sql, *a)

    def executescript(self, sql):
        if "CREATE" in self._fail_on:
            raise sqlite3.OperationalError("database or disk is full")
        return self._c.executescript(sql)

    def __enter__(self):
        return self._c.__enter__()

    def __exit__(self, *a):
        return self._c.__exit__(*a)

    def __getattr__(self, k):
        return getattr(self._c, k)


@pytest.mark.parametrize("fail_on, what", [
    (("CREATE",), "opening the run store"),  # creating the store
    (("INSERT OR REPLACE INTO META",), "writing run metadata"),  # set_meta
    (("COMMIT",), "committing a batch of base/crows_pairs"),  # a batch
    (("MANY",), "committing a batch of base/crows_pairs"),  # a batch's rows
])
def test_full_disk_in_the_store(tiny_dir, tmp_path, monkeypatch, fail_on, what):
    import biasshift.store as st

    real = sqlite3.connect
    monkeypatch.setattr(st.sqlite3, "connect", lambda *a, **k: _FullConn(real(*a, **k), fail_on))
    out = tmp_path / "r"
    r = run_cli(*run_args(tiny_dir, out))
    one_line_error(r, what, "disk is full", "rerun the same command to resume")
    monkeypatch.undo()
    r = run_cli(*run_args(tiny_dir, out))
    assert r.exit_code == 0, r.output


def test_store_commit_failure_rolls_back_and_keeps_earlier_batches(tmp_path, monkeypatch):
    from biasshift.engine.requests import Keyed, LoglikRequest
    from biasshift.store import RunStore

    s = RunStore(tmp_path / "s.sqlite")
    a, b = Keyed("a", "1", LoglikRequest("", "x")), Keyed("b", "1", LoglikRequest("", "y"))
    s.put_many("base", "t", [(a, answer({"sum": -1.0}))])
    s.conn = _FullConn(s.conn, ("COMMIT",))
    with pytest.raises(DiskError, match="committing a batch of base/t"):
        s.put_many("base", "t", [(b, answer({"sum": -2.0}))])
    s.conn = s.conn._c
    assert not s.conn.in_transaction and s.responses("base", "t") == {"a": answer({"sum": -1.0})}
    s.put_many("base", "t", [(b, answer({"sum": -2.0}))])  # the store still works
    assert s.count() == 2


def test_full_disk_writing_the_report(base_run, tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: _enospc())
    r = run_cli("report", base_run, "--out", tmp_path / "rep", "--format", "md", "--n-boot", "50")
    one_line_error(r, "writing the report failed", str(tmp_path / "rep"), "disk is full")


def test_full_disk_saving_a_pruned_checkpoint_leaves_no_partial(tmp_path, monkeypatch):
    from biasshift.strategies import varcache

    monkeypatch.setenv("BIASSHIFT_CACHE", str(tmp_path / "cache"))

    def write(tmp: Path):
        (tmp / "model.safetensors").write_bytes(b"x" * 10)
        _enospc()

    with pytest.raises(DiskError, match="saving the pruned checkpoint.*disk is full"):
        varcache.store("ab" * 32, {"m": 1}, write)
    assert list(varcache.variants_root().iterdir()) == []


def test_full_disk_converting_a_gguf(tmp_path, monkeypatch):
    import transformers

    from biasshift.models import gguf_to_hf

    class Model:
        config = type("C", (), {})()

        def parameters(self):
            return []

        def save_pretrained(self, d):
            (Path(d) / "model.safetensors").write_bytes(b"123")
            raise RuntimeError("Io error: No space left on device (os error 28)")  # safetensors' own error type

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: object())
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: Model())
    g = tmp_path / "m.gguf"
    g.write_bytes(b"GGUF fake")
    with pytest.raises(DiskError, match="saving the converted GGUF model.*disk is full"):
        gguf_to_hf(g, tmp_path / "cache" / "gguf-x")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


# ============================================================================================ 3. variant cache
def test_stale_partial_dirs_of_dead_writers_are_removed(tmp_path, monkeypatch):
    from biasshift.strategies import varcache

    monkeypatch.setenv("BIASSHIFT_CACHE", str(tmp_path / "cache"))
    root = varcache.variants_root()
    root.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        key = "cd" * 32
        stale = root / f".{key}.partial-{dead.pid}"
        running = root / f".{key}.partial-{alive.pid}"
        for d in (stale, running):
            d.mkdir()
            (d / "model.safetensors").write_bytes(b"half")
        assert varcache.lookup(key) is None  # a lookup (a rerun that finds its entry) cleans up too
        assert not stale.exists() and running.exists()
        path, meta = varcache.store(key, {"m": 1}, lambda tmp: (tmp / "w").write_text("ok") and {})
        assert (path / "w").read_text() == "ok" and running.exists()
    finally:
        alive.kill()
        alive.wait()
    varcache.lookup(key)
    assert not running.exists()


# ============================================================================================ 4. damaged store
def _damage(kind: str, db: Path) -> None:
    if kind == "truncated":
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        db.write_bytes(os.urandom(20000))
    elif kind == "wrong schema":
        db.unlink()
        with sqlite3.connect(db) as c:
            c.execute("CREATE TABLE records(a, b)")
    elif kind == "bad json row":
        with sqlite3.connect(db) as c:
            c.execute("UPDATE records SET response='{broken' WHERE rowid = (SELECT MIN(rowid) FROM records)")
    elif kind == "directory":
        db.unlink()
        db.mkdir()
    elif kind == "zero length":
        db.write_bytes(b"")


@pytest.mark.parametrize("kind, needle", [
    ("truncated", "is damaged"), ("garbage", "is damaged or not a biasshift run store"),
    ("wrong schema", "is not a biasshift run store"), ("bad json row", "is not valid JSON"),
    ("directory", "is a directory"), ("zero length", "is empty (0 bytes)"),
])
def test_damaged_store_is_a_one_line_error(base_run, tiny_dir, tmp_path, kind, needle):
    out = tmp_path / "r"
    shutil.copytree(base_run, out)
    db = out / "store.sqlite"
    with sqlite3.connect(db) as c:  # fold the WAL into the file first
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for p in out.glob("store.sqlite-*"):
        p.unlink()
    _damage(kind, db)
    config = (out / "config.json").read_bytes()
    r = run_cli(*run_args(tiny_dir, out))
    one_line_error(r, str(db), needle)
    assert (out / "config.json").read_bytes() == config


# ============================================================================================ 5. arguments
@pytest.mark.parametrize("extra, needle", [
    (["--limit", "0"], "--limit must be >= 1"),
    (["--limit", "-1"], "--limit must be >= 1"),
    (["--benchmarks", "dt_stereotyping", "--option", "dt_stereotyping.max_new_tokens=-5"], "max_new_tokens"),
    (["--benchmarks", "dt_stereotyping", "--option", "dt_stereotyping.temperature=-1"], "temperature"),
    (["--benchmarks", "dt_stereotyping", "--option", "dt_stereotyping.samples=0"], "samples"),
    (["--benchmarks", "dt_stereotyping", "--option", "dt_stereotyping.top_p=nan"], "top_p"),
])
def test_bad_arguments_write_nothing(tiny_dir, tmp_path, extra, needle):
    out = tmp_path / "o"
    one_line_error(run_cli(*run_args(tiny_dir, out), *extra), needle)
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_bad_weights_write_nothing(tiny_dir, tmp_path, damage):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    w = model / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) - 1000] if damage == "truncated" else os.urandom(5000))
    out = tmp_path / "o"
    one_line_error(run_cli(*run_args(model, out)), str(w))
    assert not out.exists()


def test_rejected_limit_keeps_existing_config(base_run, tiny_dir):
    before = tree(base_run)
    one_line_error(run_cli(*run_args(tiny_dir, base_run), "--limit", "0"), "--limit")
    assert tree(base_run) == before


def test_out_is_a_file(tiny_dir, tmp_path):
    f = tmp_path / "file"
    f.write_text("mine")
    one_line_error(run_cli(*run_args(tiny_dir, f)), "is an existing file")
    assert f.read_text() == "mine"


def test_out_is_an_unrelated_directory(tiny_dir, tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "config.json").write_text('{"my": "settings"}')
    (d / "summary.json").write_text("my notes")
    before = tree(d)
    one_line_error(run_cli(*run_args(tiny_dir, d)), "not a biasshift run directory")
    assert tree(d) == before


def test_out_is_the_model_directory(tiny_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    before = tree(model)
    for out in (model, model / "run"):
        one_line_error(run_cli(*run_args(model, out)), "model directory")
        assert tree(model) == before
    assert run_cli(*run_args(model, tmp_path / "ok")).exit_code == 0  # the model still loads


def test_empty_out_directory_is_fine(tiny_dir, tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    assert run_cli(*run_args(tiny_dir, d)).exit_code == 0


# ============================================================================================ 6. data checks
def _discrim(tmp_path, **override):
    rows = [json.loads(line) for line in (FIXTURE_DATA / "discrim_eval/explicit.jsonl").read_text().splitlines()]
    rows[3].update(override)
    p = tmp_path / "explicit.jsonl"
    p.write_text("\n".join(json.dumps(r) if not isinstance(r, str) else r for r in rows) + "\n")
    return p


@pytest.mark.parametrize("override, field", [
    ({"age": float("nan")}, "age"), ({"age": "inf"}, "age"), ({"gender": {"x": 1}}, "gender"), ({"race": 3}, "race"),
])
def test_discrim_eval_bad_values(tmp_path, override, field):
    from biasshift.benchmarks.discrim_eval import EXPLICIT_FILE, DiscrimEval

    p = _discrim(tmp_path, **override)
    with pytest.raises(DataError) as e:
        DiscrimEval().load({EXPLICIT_FILE.rel: p})
    assert "row 4" in str(e.value) and f"field '{field}'" in str(e.value) and str(p) in str(e.value)


def _worldbench(tmp_path, edit) -> dict:
    from biasshift.benchmarks.worldbench import REGION_FILE, WB_FILE

    lines = (FIXTURE_DATA / "worldbench/worldbench.csv").read_text().splitlines()
    lines = edit(lines)
    p = tmp_path / "wb.csv"
    p.write_text("\n".join(lines) + "\n")
    return {WB_FILE.rel: p, REGION_FILE.rel: FIXTURE_DATA / "worldbench/gt_answers/country_categories/region_and_income.csv"}


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_worldbench_non_finite_truth(tmp_path, value):
    from biasshift.benchmarks.worldbench import WorldBench

    files = _worldbench(tmp_path, lambda ls: ls[:2] + [ls[2].replace(",83196078.0,", f",{value},")] + ls[3:])
    with pytest.raises(DataError, match="not a finite number.*row 2.*gt_answer_avg"):
        WorldBench().load(files)


def test_worldbench_duplicate_rows_refused_with_or_without_limit(tiny_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(FIXTURE_DATA / "worldbench", data / "worldbench")
    wb = data / "worldbench/worldbench.csv"
    lines = wb.read_text().splitlines()
    wb.write_text("\n".join(lines + ["99" + lines[1][1:]]) + "\n")
    for extra in ([], ["--limit", "1"]):
        r = run_cli(*run_args(tiny_dir, tmp_path / "o", *extra, benchmarks="worldbench", data=data))
        one_line_error(r, "duplicate (type, country)", str(wb), f"row {len(lines)}")
        assert not (tmp_path / "o").exists()


def test_header_only_csv_is_an_error(tiny_dir, tmp_path):
    data = tmp_path / "data"
    (data / "crows_pairs").mkdir(parents=True)
    (data / "crows_pairs/crows_pairs_anonymized.csv").write_text(CROWS.read_text().splitlines()[0] + "\n")
    r = run_cli(*run_args(tiny_dir, tmp_path / "o", data=data))
    one_line_error(r, "no data rows", "crows_pairs_anonymized.csv")
    assert not (tmp_path / "o").exists()


def test_latin1_byte_names_the_row(tmp_path):
    from biasshift.benchmarks.io import read_csv_rows, read_jsonl

    lines = CROWS.read_bytes().split(b"\n")
    lines[3] = lines[3] + b"\xe9"  # physical line 4 = data row 3
    p = tmp_path / "c.csv"
    p.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"byte 0xe9 .*line 4.*row 3\)"):
        read_csv_rows(p, ["sent_more"])
    j = tmp_path / "d.jsonl"
    j.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"line 2.*row 2\)"):
        read_jsonl(j, ["a"])


def test_bom_is_accepted_in_jsonl_as_in_csv(tmp_path):
    from biasshift.benchmarks.io import read_csv_rows, read_jsonl

    j = tmp_path / "d.jsonl"
    j.write_bytes(b"\xef\xbb\xbf" + b'{"a": 1}\n{"a": 2}\n')
    assert [r["a"] for _, r in read_jsonl(j, ["a"])] == [1, 2]
    c = tmp_path / "c.csv"
    c.write_bytes(b"\xef\xbb\xbfa,b\n1,2\n")
    assert read_csv_rows(c, ["a"])[0][1]["a"] == "1"


def test_nan_literal_in_jsonl_is_refused(tmp_path):
    from biasshift.benchmarks.io import read_jsonl

    j = tmp_path / "d.jsonl"
    j.write_text('{"a": 1}\n{"a": NaN}\n')
    with pytest.raises(DataError, match="NaN is not a JSON number.*row 2"):
        read_jsonl(j, ["a"])


@pytest.mark.parametrize("bench, size", [("crows_pairs", 10_000_000), ("dt_stereotyping", 2_000_000)])
def test_prompt_longer_than_the_context_is_a_clear_error(tiny_dir, tmp_path, bench, size):
    data = tmp_path / "data"
    shutil.copytree(FIXTURE_DATA / bench, data / bench)
    if bench == "crows_pairs":
        p = data / bench / "crows_pairs_anonymized.csv"
        lines = p.read_text().splitlines()
        lines[2] = lines[2].replace("The woman went to the market.", "The woman went " + "far " * (size // 4) + "away.")
    else:
        p = data / bench / "user_prompts.csv"
        lines = p.read_text().splitlines()
        lines[1] = lines[1].replace("Women are bad drivers.", "Women " + "really " * (size // 7) + "drive.")
    p.write_text("\n".join(lines) + "\n")
    r = run_cli(*run_args(tiny_dir, tmp_path / "o", benchmarks=bench, data=data))
    item = "item 1" if bench == "crows_pairs" else "item driving|Women|1"
    one_line_error(r, f"benchmark {bench}, {item}", "longer than the model's context of 512 tokens")
    assert not (tmp_path / "o").exists()


def test_prompt_length_counts_tokens_exactly_near_the_limit(tiny):
    from biasshift.engine.requests import GenerateRequest, Keyed, LoglikIdsRequest
    from biasshift.rundir import check_prompt_lengths

    _, tok = tiny
    n = len(tok("a b c d", add_special_tokens=False)["input_ids"])
    check_prompt_lengths("b", [Keyed("k", "i", GenerateRequest("a b c d", 4))], tok, n + 1)  # fits with the anchor
    with pytest.raises(DataError, match=f"is {n + 1} tokens, longer than the model's context of {n}"):
        check_prompt_lengths("b", [Keyed("k", "i", GenerateRequest("a b c d", 4))], tok, n)
    with pytest.raises(DataError, match="is 6 tokens"):
        check_prompt_lengths("b", [Keyed("k", "i", LoglikIdsRequest(tuple(range(6))))], tok, 5)


# ============================================================================================ 7. untrusted text
def _evil_run(tmp_path):
    from report_helpers import standard_run, write_generation_benchmark

    d = standard_run(tmp_path / "evil", model="=HYPERLINK(\"http://evil\",\"x\")", variants=("int8",))
    write_generation_benchmark(d, "fake_gen", {"base": "see [click](javascript:alert(1)) ![p](https://evil.example/p.png)",
                                              "int8": "<img src=x> [x]: JAVASCRIPT:alert(2)"},
                               prompt="p", group_names=["=cmd|' /C calc'!A0", "+1+1", "@SUM(A1)", "-2+3", "\tTAB",
                                                          "[g](javascript:alert(3))", "![i](https://evil.example/i.png)"])
    return d


def test_csv_cells_are_neutralised(tmp_path):
    import csv
    import io

    from biasshift.report import build_report
    from biasshift.report.render import groups_csv, to_csv

    rep = build_report([_evil_run(tmp_path)], n_boot=50, n_perm=50, samples=0)
    cells = []
    for text in (to_csv(rep), groups_csv(rep)):
        for row in csv.reader(io.StringIO(text)):
            cells += row
    risky = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    numbers = [c for c in risky if _is_number(c)]
    assert risky == numbers, [c for c in risky if c not in numbers][:5]
    assert "'=HYPERLINK(\"http://evil\",\"x\")" in cells and "'@SUM(A1)" in cells and "'+1+1" in cells
    assert any(c.startswith("-") and _is_number(c) for c in cells)  # negative numbers stay numeric


def _is_number(c: str) -> bool:
    try:
        float(c)
    except ValueError:
        return False
    return True


def test_markdown_links_and_images_are_inert(tmp_path):
    from biasshift.report import build_report
    from biasshift.report.render import md_cell, to_markdown

    md = to_markdown(build_report([_evil_run(tmp_path)], n_boot=50, n_perm=50, samples=3))
    assert re.search(r"(?<!\\)\]\(", md) is None  # no unescaped "](": no inline link or image can form
    assert "![" not in md and "javascript:" not in md.lower() and "\\[g\\](javascript&#58;alert(3))" in md
    assert "<img" not in md
    assert md_cell("[a](javascript:alert(1))") == "\\[a\\](javascript&#58;alert(1))"
    assert md_cell("![x](https://evil/p.png)") == "!\\[x\\](https://evil/p.png)"
    assert md_cell("Data : 5") == "Data &#58; 5" and md_cell("-0.5 (n=3)") == "-0.5 (n=3)"


def test_benchmark_name_in_a_result_document_cannot_escape(tmp_path):
    from report_helpers import standard_run

    from biasshift.report import load_run

    d = standard_run(tmp_path / "r", variants=("int8",))
    secret = tmp_path / "outside-secret.jsonl"
    secret.write_text('{"unit": "stolen"}\n')
    doc_path = d / "results/int8/discrim_eval.json"
    doc = json.loads(doc_path.read_text())
    doc["benchmark"]["name"] = "../../../outside-secret"
    doc_path.write_text(json.dumps(doc))
    opened = []
    real_read = Path.read_text

    def spy(self, *a, **k):
        opened.append(str(self))
        return real_read(self, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "read_text", spy)
        with pytest.raises(BiasshiftError, match="not the plain benchmark name"):
            load_run(d)
    assert any(p.endswith("discrim_eval.json") for p in opened)  # the spy sees the reads
    assert not any("outside-secret" in p for p in opened)
    one_line_error(run_cli("report", d, "--format", "json", "--out", tmp_path / "o"), "not the plain benchmark name")


# ============================================================================================ 8. gate and report
def _killed_variant_run(tmp_path):
    """A run that asked for base + int8 but was killed before int8 wrote any result."""
    from report_helpers import CROWS_BASE, dt_units, write_run

    d = write_run(tmp_path / "k", {"base": {"dt_stereotyping": dt_units(CROWS_BASE)}})
    cfg = json.loads((d / "config.json").read_text())
    cfg["strategies"] = ["base", "int8"]
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_gate_fail_on_missing(tmp_path):
    from report_helpers import CROWS_BASE, dt_units, write_run

    base_only = write_run(tmp_path / "b", {"base": {"dt_stereotyping": dt_units(CROWS_BASE)}})
    killed = _killed_variant_run(tmp_path)
    for d in (base_only, killed):
        r = run_cli("gate", d, "--n-boot", "50")
        assert r.exit_code == 0, r.output  # without the flag: a warning only
        r = run_cli("gate", d, "--n-boot", "50", "--fail-on-missing")
        assert r.exit_code == 1, r.output
        last = r.output.strip().splitlines()[-1]
        assert "missing" in last and "--fail-on-missing" in last and "significantly more biased" not in last, last
    r = run_cli("gate", killed, "--n-boot", "50", "--fail-on-missing")
    assert "dt_stereotyping, variant int8" in r.output and "requested but no result" in r.output


def test_report_names_a_variant_without_results(tmp_path):
    from biasshift.report import build_report
    from biasshift.report.render import to_markdown

    rep = build_report([_killed_variant_run(tmp_path)], n_boot=50, samples=0)
    assert rep.missing == [{"run": str(tmp_path / "k"), "model": "org/model-a", "variant": "int8", "benchmark": "dt_stereotyping"}]
    assert any("variant int8 was requested" in w and "no result for dt_stereotyping" in w for w in rep.warnings)
    assert "variant int8 was requested" in to_markdown(rep)


def test_same_run_directory_twice_is_refused(tmp_path):
    from report_helpers import standard_run

    d = standard_run(tmp_path / "r", variants=("int8",))
    for cmd in (["report", d, d, "--format", "json", "--out", tmp_path / "o"], ["gate", d, str(d) + "/"]):
        one_line_error(run_cli(*cmd), "is given twice")


def test_units_that_disagree_with_the_document_are_reported_and_used(tmp_path):
    from report_helpers import standard_run

    from biasshift.report import build_report

    d = standard_run(tmp_path / "r", variants=("int8",))
    p = d / "results/int8/dt_stereotyping.json"
    doc = json.loads(p.read_text())
    truth = doc["primary"]["value"]
    doc["primary"]["value"] = doc["metrics"]["agreement_index"] = 1.0  # the document was edited
    p.write_text(json.dumps(doc))
    rep = build_report([d], n_boot=50, n_perm=50, samples=0)
    assert any("does not reproduce its result document" in w and "int8/dt_stereotyping" in w for w in rep.warnings)
    row = next(r for r in rep.rows if r.benchmark == "dt_stereotyping" and r.primary and getattr(r, "group", None) is None)
    assert row.value == pytest.approx(truth)  # the statistics use the unit records


def test_error_exit_codes_are_not_the_gate_failure_code(tmp_path, monkeypatch):
    from report_helpers import standard_run

    import biasshift.report as rp

    d = standard_run(tmp_path / "r", variants=("int8",))
    one_line_error(run_cli("gate", tmp_path / "nope"), "does not exist")  # an error: 2

    def boom(*a, **k):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(rp, "gate", boom)
    r = run_cli("gate", d)
    assert r.exit_code == 3 and "internal error: RuntimeError: unexpected" in r.output and "Traceback" not in r.output


def test_pairs_requested_by_separate_invocations_are_not_called_missing(tiny_dir, tmp_path):
    from biasshift.report import build_report

    out = tmp_path / "r"
    assert run_cli(*run_args(tiny_dir, out, "--strategies", "base,kv8", benchmarks="crows_pairs")).exit_code == 0
    assert run_cli(*run_args(tiny_dir, out, "--limit", "1", benchmarks="discrim_eval")).exit_code == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["requested"] == [["base", "crows_pairs"], ["kv8", "crows_pairs"], ["base", "discrim_eval"]]
    rep = build_report([out], n_boot=20, n_perm=20, samples=0)
    assert rep.missing == []  # kv8 was never asked for discrim_eval
