from __future__ import annotations

import pytest

from answers import answer
from biasshift.engine.requests import ChoiceRequest, Keyed, LoglikRequest
from biasshift.errors import StoreError
from biasshift.store import RunStore


def test_put_done_and_read_back(tmp_path):
    reqs = [Keyed("a", "1", LoglikRequest("", "x")), Keyed("b", "1", ChoiceRequest("p", ("yes", "no")))]
    with RunStore(tmp_path / "s.sqlite") as st:
        assert st.done("base", "b1", reqs) == set()
        st.put_many("base", "b1", [(reqs[0], answer({"sum": -1.5}))])
        assert st.done("base", "b1", reqs) == {"a"}
        assert st.done("int8", "b1", reqs) == set()  # variants are separate
    with RunStore(tmp_path / "s.sqlite") as st:  # persisted
        assert st.responses("base", "b1") == {"a": answer({"sum": -1.5})}
        recs = st.records()
        assert recs[0]["request"] == {"kind": "loglik", "context": "", "continuation": "x"}
        assert st.count() == 1


def test_changed_request_is_refused(tmp_path):
    with RunStore(tmp_path / "s.sqlite") as st:
        st.put_many("base", "b", [(Keyed("a", "1", LoglikRequest("", "x")), answer({"sum": 0}))])
        with pytest.raises(StoreError, match="base/b/a differs"):
            st.done("base", "b", [Keyed("a", "1", LoglikRequest("", "y"))])


def test_identity_mismatch_is_refused(tmp_path):
    with RunStore(tmp_path / "s.sqlite") as st:
        st.check_identity({"model_fingerprint": "m1", "dtype": "float32"})
        st.check_identity({"model_fingerprint": "m1", "dtype": "float32"})
        with pytest.raises(StoreError, match="dtype: stored 'float32', now 'bfloat16'"):
            st.check_identity({"model_fingerprint": "m1", "dtype": "bfloat16"})


def test_damaged_rows_and_foreign_schema_are_refused_on_open(tmp_path):
    import sqlite3

    p = tmp_path / "s.sqlite"
    with RunStore(p) as st:
        st.put_many("base", "b", [(Keyed("a", "1", LoglikRequest("", "x")), answer({"sum": 0}))])
    with sqlite3.connect(p) as c:
        c.execute("UPDATE records SET response = '{oops'")
    with pytest.raises(StoreError, match="record base/b/a is not valid JSON"):
        RunStore(p)
    q = tmp_path / "other.sqlite"
    with sqlite3.connect(q) as c:
        c.execute("CREATE TABLE meta(k, v)")
    with pytest.raises(StoreError, match="not a biasshift run store .table meta has columns k, v"):
        RunStore(q)
    with pytest.raises(StoreError, match="is a directory"):
        RunStore(tmp_path)
