from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
FIXTURE_DATA = Path(__file__).parent / "fixtures" / "data"
REAL_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep tests from reading or writing the user's cache or data dir."""
    old = {k: os.environ.get(k) for k in ("BIASSHIFT_CACHE", "BIASSHIFT_DATA_DIR", "HF_HUB_OFFLINE")}
    os.environ["BIASSHIFT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("BIASSHIFT_DATA_DIR", None)
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    from biasshift.models import ModelSpec, load_model

    lm = load_model(ModelSpec(str(tiny_dir), dtype="float32", device="cpu"))
    return lm.model, lm.tokenizer
