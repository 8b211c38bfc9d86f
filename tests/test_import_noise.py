"""A run that uses no bitsandbytes strategy never imports bitsandbytes (its import logs kernel-loading
warnings on some CPUs), and `biasshift list` fits an 80-column terminal."""

from __future__ import annotations

import os
import subprocess
import sys


def test_base_variant_does_not_import_bitsandbytes(tiny_dir):
    code = (
        "import sys\n"
        "from biasshift import strategies as S\n"
        "from biasshift.models import ModelSpec\n"
        f"v = S.get('base').build(ModelSpec({str(tiny_dir)!r}, dtype='float32', device='cpu'))\n"
        "assert v.info['measured'], v.info\n"
        "print('bitsandbytes' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert "kernels-community" not in out.stderr


def test_list_fits_80_columns():
    out = subprocess.run([sys.executable, "-m", "biasshift.cli", "list"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "COLUMNS": "80", "TERM": "dumb"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any("crows_pairs" in ln for ln in lines) and any("wanda" in ln for ln in lines)
    assert max(len(ln.rstrip()) for ln in lines) <= 80
    # no column squeezed to a few characters: every benchmark's metric line is readable
    assert any("pct_stereotype: % of pairs where the more-stereotypical" in ln for ln in lines)
