"""Bad input to QuantizedIndex.add/search/delete/get and to the file writers: a typed error that says what to do,
with nothing added, or the right result; never a raw TypeError/ValueError/IndexError.

Regression (issue 17, item 13): None, strings, zero vectors, non-dict payloads and a NaN oversample raised raw
errors (or, for zero vectors, were accepted and ranked at random); ``add("ab", 2 vectors)`` took the ids 'a' and
'b'; ``Calibration.save`` did not create its folder; model folders were written mode 700 whatever the umask.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedopt import Calibration, ConfigError, DimensionError, EmbedOptError, Fingerprint, InputError
from embedopt._files import atomic_file, atomic_folder, atomic_write_text, umask
from embedopt.stores import QuantizedIndex

FP = Fingerprint("test", "input-model", "r1", "document", "", 32, True)


def _unit(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, 32)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def index() -> QuantizedIndex:
    idx = QuantizedIndex(FP)
    idx.add([f"d{i}" for i in range(40)], _unit(40), [{"n": i} for i in range(40)])
    return idx


def _unchanged(index: QuantizedIndex) -> None:
    assert len(index) == 40 and index.ids == [f"d{i}" for i in range(40)]
    assert index.search(_unit(40)[5], 1).ids[0] == ["d5"]


@pytest.mark.parametrize(("call", "error", "says"), [
    (lambda i: i.add(None, _unit(1)), InputError, "list of strings"),
    (lambda i: i.add(5, _unit(1)), InputError, "list of strings"),
    (lambda i: i.add(["x"], None), InputError, "array of numbers"),
    (lambda i: i.add(["x"], "not a vector"), InputError, "array of numbers"),
    (lambda i: i.add(["x"], [["a"] * 32]), InputError, "array of numbers"),
    (lambda i: i.add(["x"], 1.0), DimensionError, "single number"),
    (lambda i: i.add(["x"], np.zeros(32)), InputError, "all zeros"),
    (lambda i: i.add(["x", "y"], np.stack([_unit(1)[0], np.zeros(32)])), InputError, "vector #1 is all zeros"),
    (lambda i: i.add(["x"], np.full(32, np.nan)), InputError, "NaN"),
    (lambda i: i.add(["x"], _unit(1), ["payload"]), InputError, "payload #0 is a str"),
    (lambda i: i.add(["x"], _unit(1), [None]), InputError, "not a dict"),
    (lambda i: i.add(["x"], _unit(1), {"a": 1}), InputError, "one dict per vector"),
    (lambda i: i.add(["x"], _unit(1), [{"f": object()}]), InputError, "JSON"),
    (lambda i: i.add("ab", _unit(2)), InputError, "1 ids, 2 vectors"),
    (lambda i: i.add([""], _unit(1)), InputError, "non-empty"),
    (lambda i: i.search(None), InputError, "array of numbers"),
    (lambda i: i.search("a query"), InputError, "array of numbers"),
    (lambda i: i.search(np.zeros(32)), InputError, "all zeros"),
    (lambda i: i.search(_unit(1, 3), oversample=math.nan), ConfigError, "oversample"),
    (lambda i: i.search(_unit(1, 3), oversample=-2), ConfigError, "oversample"),
    (lambda i: i.search(_unit(1, 3), oversample="4"), ConfigError, "oversample"),
    (lambda i: i.search(_unit(1, 3), oversample=math.inf), ConfigError, "oversample"),
    (lambda i: i.search(_unit(1, 3), k=True), ConfigError, "k must be"),
    (lambda i: i.search(_unit(1, 3), k=0), ConfigError, "k must be"),
    (lambda i: i.delete(5), InputError, "list of strings"),
    (lambda i: i.delete([None]), InputError, "id #0"),
    (lambda i: i.get(5), InputError, "list of strings"),
])
def test_bad_input_is_a_typed_error_and_nothing_changes(index, call, error, says):
    with pytest.raises(error, match=says):
        call(index)
    _unchanged(index)


def test_a_string_is_one_id_never_its_characters(index):
    """add("ab", one vector) adds the id 'ab'; delete("ab") deletes it (not 'a' and 'b')."""
    v = _unit(1, seed=7)
    index.add("ab", v, [{"k": 1}])
    assert "ab" in index and "a" not in index and "b" not in index
    assert index.search(v, 1).ids[0] == ["ab"] and index.get("ab")[0].payload == {"k": 1}
    index.add(["a"], _unit(1, seed=8))
    assert index.delete("ab") == 1 and "a" in index and "ab" not in index


def test_numpy_scalars_are_accepted_where_numbers_are(index):
    assert index.search(_unit(1, 3), k=np.int64(3), oversample=np.float32(2.0)).ids[0].__len__() == 3


_junk = st.one_of(st.none(), st.text(max_size=5), st.integers(), st.floats(), st.booleans(),
                  st.lists(st.one_of(st.none(), st.text(max_size=3), st.floats(), st.integers()), max_size=4),
                  st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))


@settings(max_examples=150, deadline=2_000, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=_junk, vectors=st.one_of(_junk, st.just(np.zeros((1, 32))), st.just(_unit(1, 9))),
       payloads=st.one_of(st.none(), _junk), k=_junk, oversample=_junk)
def test_any_junk_is_a_typed_error_or_works(index, ids, vectors, payloads, k, oversample):
    n = len(index)
    try:
        index.add(ids, vectors, payloads)
    except EmbedOptError:
        assert len(index) == n  # nothing was added
    else:
        assert len(index) >= n and all(i in index for i in ([ids] if isinstance(ids, str) else ids))
    try:
        found = index.search(vectors, k, oversample=oversample)
    except EmbedOptError:
        pass
    else:
        assert all(len(row) <= k and all(i in index for i in row) for row in found.ids)
    with contextlib.suppress(EmbedOptError):
        assert index.delete(ids) <= len(ids) if not isinstance(ids, str) else index.delete(ids) <= 1


# ------------------------------------------------------------------------------------------------ files
def test_calibration_save_creates_its_folder(tmp_path):
    cal = Calibration.fit(_unit(64))
    path = cal.save(tmp_path / "new" / "deeper" / "calibration.json")
    assert Calibration.load(path).dim == 32


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_written_folders_and_files_respect_the_umask(tmp_path, mask):
    """Model folders (the static distillation cache, exports: atomic_folder), index folders and single files
    get what the umask allows a new folder or file, not mkdtemp's 0700 / mkstemp's 0600."""
    old = os.umask(mask)
    try:
        assert umask() == mask
        with atomic_folder(tmp_path / f"model-{mask:o}") as tmp:
            (tmp / "weights.bin").write_bytes(b"x")
        text = atomic_write_text(tmp_path / f"file-{mask:o}.json", "{}")
        index = QuantizedIndex(FP)
        index.add(["a", "b"], _unit(2))
        saved = index.save(tmp_path / f"index-{mask:o}")
    finally:
        os.umask(old)
    for folder in (tmp_path / f"model-{mask:o}", saved):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE(text.stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((saved / "index.json").stat().st_mode) == 0o666 & ~mask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_file(target) as f:
        f.write("half a new fi")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "model") as tmp:
        (tmp / "a").write_text("x")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_a_folder_replaced_whole_keeps_no_old_copy(tmp_path):
    for n in range(3):
        with atomic_folder(tmp_path / "model") as tmp:
            (tmp / "version").write_text(str(n))
    assert (tmp_path / "model" / "version").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_symlinked_folder_is_replaced_by_the_new_one_and_the_link_removed(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with atomic_folder(tmp_path / "link") as tmp:
        (tmp / "a").write_text("new")
    assert (tmp_path / "link" / "a").read_text() == "new" and not (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
