"""Damaged QuantizedIndex folders: every kind of damage is refused with IndexCorruptError naming the file and what
to do, never loaded to answer wrongly and never a raw EOFError/AttributeError/faiss AssertionError.

Regression (issue 17, item 7): files swapped in from another index of the same shape, reversed or duplicated ids
and an empty payloads file all loaded and answered wrongly; 16 other damages gave raw exceptions. Now save()
writes a manifest (size and sha256 of every file, the index's identity) and load() checks it and the files'
agreement with one another. Bounded: small indexes (80 x 64-d), hypothesis with max_examples and a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedopt import ConfigError, Fingerprint, IndexCorruptError
from embedopt.stores import QuantizedIndex

FP = Fingerprint("test", "damage-model", "r1", "document", "", 64, True)
N = 80
FILES = ("index.json", "codes.npy", "ids.npy", "int8.npy", "float16.npy", "payloads.jsonl", "manifest.json")


def _unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, 64)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _build(folder: Path, seed: int, shortlist: str | int = "binary") -> Path:
    index = QuantizedIndex(FP, keep_float=True, shortlist=shortlist)  # type: ignore[arg-type]
    # ids of one length and payloads of one shape in both indexes: swapped files have the same sizes
    index.add([f"doc-{seed}-{i:03d}" for i in range(N)], _unit(N, seed),
              [{"n": i, "tag": f"s{seed}"} for i in range(N)])
    return index.save(folder)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("indexes")
    return {"a": _build(root / "a", 1), "b": _build(root / "b", 2), "funnel": _build(root / "funnel", 3, 16)}


@pytest.fixture
def copy(saved: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    def make(name: str = "a") -> Path:
        return Path(shutil.copytree(saved[name], tmp_path / f"copy-{name}"))
    return make


def _refused(folder: Path, *, verify: bool = True) -> IndexCorruptError:
    with pytest.raises(IndexCorruptError) as info:
        QuantizedIndex.load(folder, verify=verify)
    err = info.value
    message = str(err)
    assert "rebuild" in message or "restore" in message or ".save(folder)" in message, message
    assert err.path is not None and Path(err.path).is_relative_to(folder), err.path
    return err


# ------------------------------------------------------------------------------------------------ the damages
def _swap(name: str) -> Callable[[Path, Path], None]:
    def damage(folder: Path, other: Path) -> None:
        shutil.copyfile(other / name, folder / name)
    return damage


def _rewrite_ids(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path, Path], None]:
    def damage(folder: Path, other: Path) -> None:
        ids = np.load(folder / "ids.npy")
        np.save(folder / "ids.npy", change(ids.copy()), allow_pickle=False)
    return damage


def _dup(ids: np.ndarray) -> np.ndarray:
    ids[1] = ids[0]
    return ids


def _truncate(name: str, keep: float) -> Callable[[Path, Path], None]:
    def damage(folder: Path, other: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: int(len(data) * keep)])
    return damage


def _garbage(name: str, same_size: bool) -> Callable[[Path, Path], None]:
    def damage(folder: Path, other: Path) -> None:
        size = (folder / name).stat().st_size if same_size else 97
        (folder / name).write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    return damage


def _delete(name: str) -> Callable[[Path, Path], None]:
    def damage(folder: Path, other: Path) -> None:
        (folder / name).unlink()
    return damage


def _write(name: str, text: str) -> Callable[[Path, Path], None]:
    def damage(folder: Path, other: Path) -> None:
        (folder / name).write_text(text)
    return damage


def _swap_with_manifest(name: str) -> Callable[[Path, Path], None]:
    """A file and the manifest both taken from the other index: each checksum agrees with the manifest, but the
    manifest names another index than index.json."""
    def damage(folder: Path, other: Path) -> None:
        for n in (name, "manifest.json"):
            shutil.copyfile(other / n, folder / n)
    return damage


def _object_ids(folder: Path, other: Path) -> None:
    np.save(folder / "ids.npy", np.array([object()] * N, dtype=object), allow_pickle=True)


def _flip_calibration(folder: Path, other: Path) -> None:
    meta = json.loads((folder / "index.json").read_text())
    meta["calibration"]["sha256"] = "0" * 64
    (folder / "index.json").write_text(json.dumps(meta))


DAMAGES: dict[str, Callable[[Path, Path], None]] = {
    **{f"swapped {n} from another index": _swap(n) for n in FILES},
    **{f"swapped {n} and the manifest": _swap_with_manifest(n) for n in ("codes.npy", "int8.npy", "ids.npy")},
    "reversed ids": _rewrite_ids(lambda ids: ids[::-1]),
    "duplicated ids": _rewrite_ids(_dup),
    "empty payloads file": _write("payloads.jsonl", ""),
    **{f"{n} truncated to half": _truncate(n, 0.5) for n in FILES},
    **{f"{n} emptied": _truncate(n, 0.0) for n in FILES},
    **{f"{n} garbage of its size": _garbage(n, True) for n in FILES},
    **{f"{n} garbage": _garbage(n, False) for n in FILES},
    **{f"{n} deleted": _delete(n) for n in FILES if n != "manifest.json"},
    "index.json is []": _write("index.json", "[]"),
    "manifest.json is []": _write("manifest.json", "[]"),
    "manifest lists no files": _write("manifest.json", json.dumps({"format": "embedopt.quantized-index.manifest",
                                                                   "files": {}})),
    "ids pickled objects": _object_ids,
    "calibration checksum": _flip_calibration,
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_every_damage_is_one_typed_error_naming_the_file(damage, copy, saved):
    folder = copy("a")
    DAMAGES[damage](folder, saved["b"])
    _refused(folder)


def test_the_intact_copy_loads_and_answers(copy):
    """The control for the damages above: the same copy, undamaged, loads and finds its own vectors."""
    folder = copy("a")
    index = QuantizedIndex.load(folder)
    assert len(index) == N and index.search(_unit(N, 1)[7], 1).ids[0] == ["doc-1-007"]
    assert index.get_payloads(["doc-1-005"]) == [{"n": 5, "tag": "s1"}]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == set(FILES) - {"manifest.json"}
    assert manifest["index_id"] == json.loads((folder / "index.json").read_text())["index_id"]


# What verify=False (sizes only) still catches: anything that changes a size or breaks the files' agreement.
STRUCTURAL = ["duplicated ids", "empty payloads file", "ids pickled objects", "index.json is []",
              "calibration checksum", *(f"{n} truncated to half" for n in FILES), *(f"{n} garbage" for n in FILES),
              *(f"{n} deleted" for n in FILES if n != "manifest.json")]


@pytest.mark.parametrize("damage", STRUCTURAL)
def test_without_checksums_sizes_and_structure_still_refuse(damage, copy, saved):
    folder = copy("a")
    DAMAGES[damage](folder, saved["b"])
    _refused(folder, verify=False)


def test_structure_is_checked_without_a_manifest(copy, saved):
    """An old folder (no manifest) opened with verify=False still gets the structural checks: duplicated ids,
    payloads of unknown ids, arrays of the wrong shape or dtype."""
    for damage in ("duplicated ids", "swapped payloads.jsonl from another index", "codes.npy garbage"):
        folder = copy("a")
        (folder / "manifest.json").unlink()
        DAMAGES[damage](folder, saved["b"])
        _refused(folder, verify=False)
        shutil.rmtree(folder)


def test_a_folder_saved_before_manifests_is_refused_with_how_to_add_one(copy, caplog):
    """Decision for old folders: refused by default (their files cannot be checked), with the one line that adds
    a manifest; verify=False opens them with a warning, and saving writes the manifest."""
    folder = copy("a")
    (folder / "manifest.json").unlink()
    meta = json.loads((folder / "index.json").read_text())
    del meta["index_id"]
    (folder / "index.json").write_text(json.dumps(meta))
    err = _refused(folder)
    assert "verify=False" in str(err) and err.path == str(folder / "manifest.json")
    with caplog.at_level("WARNING", logger="embedopt.stores"):
        index = QuantizedIndex.load(folder, verify=False)
    assert "not checked" in caplog.text
    index.save(folder)
    assert QuantizedIndex.load(folder).search(_unit(N, 1)[3], 1).ids[0] == ["doc-1-003"]


def test_the_funnel_index_is_checked_too(copy):
    folder = copy("funnel")
    np.save(folder / "codes.npy", np.full((N, 16), np.nan, dtype=np.float32))
    _refused(folder, verify=False)
    _refused(folder)


@settings(max_examples=40, deadline=5_000, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(FILES), at=st.floats(0, 1, exclude_max=True), xor=st.integers(1, 255),
       verify=st.booleans())
def test_any_flipped_byte_is_refused_or_with_verify_false_loads_without_a_raw_exception(saved, tmp_path_factory,
                                                                                       name, at, xor, verify):
    folder = Path(shutil.copytree(saved["a"], tmp_path_factory.mktemp("flip") / "idx"))
    data = bytearray((folder / name).read_bytes())
    data[int(at * len(data))] ^= xor
    (folder / name).write_bytes(bytes(data))
    if verify and name != "manifest.json":
        _refused(folder)
        return
    # The manifest is not checked against itself (a flipped space is harmless), and verify=False checks sizes
    # only (a flipped byte inside a vector is not seen: that is what the checksums are for). Either way: refused
    # with the typed error, or loaded and searchable.
    try:
        index = QuantizedIndex.load(folder, verify=verify)
    except IndexCorruptError as exc:
        assert exc.path is not None
        return
    assert len(index) == N and len(index.search(_unit(1, 5), 3).ids[0]) == 3


# ------------------------------------------------------------------------------------------------ writing
def test_save_refuses_a_folder_that_holds_something_else(tmp_path):
    """save() replaces its folder whole, so a folder of other files (a user's home, '.') is refused, not wiped."""
    index = QuantizedIndex(FP)
    index.add(["a", "b"], _unit(2, 0))
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not an embedopt index folder"):
        index.save(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError):
        index.save(tmp_path / "file")


def test_saving_over_the_folder_it_maps_keeps_it_whole(tmp_path):
    index = QuantizedIndex(FP, keep_float=True)
    index.add([f"d{i}" for i in range(50)], _unit(50, 0))
    folder = index.save(tmp_path / "idx")
    index.add(["new"], _unit(1, 9))
    index.delete(["d0"])
    index.save(folder)  # reads the old mapped files while writing the new folder
    again = QuantizedIndex.load(folder)
    assert len(again) == 50 and "new" in again and "d0" not in again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temporary or old folder left beside it


_SAVER = """
import sys, numpy as np
from embedopt import Fingerprint
from embedopt.stores import QuantizedIndex
fp = Fingerprint("test", "damage-model", "r1", "document", "", 64, True)
v = np.random.default_rng(0).standard_normal((60000, 64)).astype(np.float32)
index = QuantizedIndex(fp, keep_float=True)
index.add([f"d{i}" for i in range(len(v))], v / np.linalg.norm(v, axis=1, keepdims=True))
n = 0
while True:
    index.add([f"extra{n}"], v[:1])
    index.save(sys.argv[1])
    n += 1
    print(n, flush=True)
"""


@pytest.mark.slow
def test_a_save_killed_at_any_moment_leaves_a_whole_index(tmp_path):
    """A process saving in a loop is SIGKILLed at several moments; the folder always loads, fully checked."""
    folder = tmp_path / "idx"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for delay in (0.0, 0.05, 0.13, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(folder)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        proc.stdout.readline()  # the first save is complete
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        index = QuantizedIndex.load(folder)
        assert len(index) > 60000
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".idx.") and ".old-" in p.name] == []
        for leftover in tmp_path.glob(".idx.*"):  # a killed save leaves its hidden temporary folder, never idx
            shutil.rmtree(leftover)
