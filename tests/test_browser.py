"""The HTML report in a real browser: headless Chromium renders its tables and charts, and untrusted text
(model name, group label, generation, item text) never runs as script. Skips when Chromium is absent
(.ci/run installs it)."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from biasshift.engine.requests import GenerateRequest, Keyed
from biasshift.report import build_report, write_report
from biasshift.store import RunStore
from report_helpers import CROWS_BASE, CROWS_INT8, dt_units, standard_run, write_generation_benchmark

PAYLOAD = '<script>document.body.setAttribute("data-pwned","1")</script>'
ATTR = '"><img src=x onerror="document.body.setAttribute(\'data-pwned\',\'2\')">'
SVG = '<svg onload="document.body.setAttribute(\'data-pwned\',\'3\')"></svg>'


def _chromium() -> str | None:
    return next((c for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)


pytestmark = pytest.mark.skipif(_chromium() is None, reason="no chromium/chromium-browser/google-chrome on PATH")


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]


@pytest.fixture(scope="module")
def evil_report(tmp_path_factory):
    """A run whose model name, group labels, generations and item texts all carry script payloads."""
    d = standard_run(tmp_path_factory.mktemp("browser") / "r", model=ATTR + PAYLOAD, variants=("int8",))
    write_generation_benchmark(d, "fake_gen", {"base": PAYLOAD + SVG, "int8": ATTR + " & more"},
                               prompt="Prompt " + ATTR, group_names=[PAYLOAD, "Europe"])
    # dt_stereotyping generations (diff table): the group label and the answers are payloads
    base = dt_units(CROWS_BASE, groups=[PAYLOAD] * 20)
    var = dt_units(CROWS_INT8, groups=[PAYLOAD] * 20)
    for u in var:
        u["texts"] = [PAYLOAD + " I agree " + SVG]
    import json

    for v, units in (("base", base), ("int8", var)):
        p = d / "units" / v / "dt_stereotyping.jsonl"
        p.write_text("".join(json.dumps(u) + "\n" for u in units))
    store = RunStore(d / "store.sqlite")
    store.put_many("base", "dt_stereotyping", [(Keyed(str(i), str(i), GenerateRequest(prompt="User: " + ATTR, max_new_tokens=4)),
                                                {"samples": [{"text": "x", "n_tokens": 1, "finish": "eos"}]}) for i in range(20)])
    store.close()
    report = build_report([d], n_boot=100, n_perm=200)
    out = tmp_path_factory.mktemp("browser_out")
    write_report(report, out, ["html"])
    return out / "report.html", report


def _run(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_report_renders_and_no_script_runs(evil_report, tmp_path):
    path, report = evil_report
    assert report.diffs and any(d.rows for d in report.diffs)
    res = _run(["--dump-dom", path.resolve().as_uri()], tmp_path)
    dom = res.stdout
    assert "biasshift report" in dom, res.stderr[-2000:]
    p = _Dom()
    p.feed(dom)
    body = [(k, v) for t, k, v in p.attrs if t == "body"]
    assert not [k for k, _ in body if k == "data-pwned"]  # neither the <script>, the onerror nor the onload handler ran
    assert 'data-pwned="' not in dom
    assert "script" not in p.tags and "svg" not in p.tags
    assert not [a for a in p.attrs if a[1].startswith("on")]
    imgs = [v for t, k, v in p.attrs if t == "img" and k == "src"]
    assert len(imgs) >= 4 and all(v.startswith("data:image/png;base64,") for v in imgs)  # heatmap, forest, bars, ...
    assert p.tags.count("table") >= 6
    for section in ('id="summary"', 'id="diff"', 'id="efficiency"', 'id="comparisons"', 'id="samples"'):
        assert section in dom
    assert dom.count('<tbody class="s') >= 4  # the sortable item table
    assert "&lt;script&gt;document.body" in dom  # the payloads are there, as text


def test_report_screenshot_shows_tables_and_charts(evil_report, tmp_path):
    from PIL import Image

    path, _ = evil_report
    shot = tmp_path / "shot.png"
    res = _run(["--window-size=1280,4000", f"--screenshot={shot}", path.resolve().as_uri()], tmp_path)
    assert shot.exists() and shot.stat().st_size > 20_000, res.stderr[-2000:]
    im = Image.open(shot).convert("RGB")
    assert im.size == (1280, 4000)
    import numpy as np

    px = np.asarray(im.resize((320, 1000))).reshape(-1, 3).astype(int)
    colours = {tuple(c) for c in px}
    non_white = int((px.sum(axis=1) < 720).sum())
    assert len(colours) > 50 and non_white > 5_000  # text, table borders and figures drawn, not a blank page
    red = int(((px[:, 0] > 150) & (px[:, 1] < 120) & (px[:, 2] < 120)).sum())
    assert red > 0  # the significant (red) cells and chart marks are painted


def test_the_harness_detects_a_script_that_runs(tmp_path):
    """Control: the same payload in a page without escaping and without CSP does run (so the checks above can fail)."""
    page = tmp_path / "control.html"
    page.write_text(f"<!DOCTYPE html><html><body><p>x</p>{PAYLOAD}</body></html>")
    dom = _run(["--dump-dom", page.resolve().as_uri()], tmp_path).stdout
    assert 'data-pwned="1"' in dom
