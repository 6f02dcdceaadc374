"""The command line under bad input: every run ends in success, or in exit status 2 with one line on stderr that
says what to do (never a traceback), and no output file is ever left half written.

Regression (issue 17, item 11): 23 of 65 bad-input runs ended in raw tracebacks (binary input, ``-o`` under a file
or a directory, malformed BEIR folders, empty or unknown qrels, Redis down for ``cache stats/clear``, garbage
LIVE.json, a ``[]`` ledger), outputs were written in place (a kill left 1,042 of 200,000 lines), ``eval --plot``
found matplotlib missing only after the work, and ``cache warm`` exited 0 with a tier down. Bounded: the static
model, small inputs, hypothesis with max_examples and a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedopt.cli import main

from ..conftest import SAMPLE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Exit status and stderr lines of one in-process run (argparse's SystemExit counted as its status)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err.strip().splitlines()


def _assert_one_line_exit_2(code: int, err: list[str], *, mentions: str = "") -> None:
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("embedopt") and "Traceback" not in err[0], err
    assert mentions.lower() in err[0].lower(), err


# ------------------------------------------------------------------------------------------------ the cases
def _beir(root: Path, corpus: str | bytes, queries: str = '{"_id": "q1", "text": "list files"}\n',
          qrels: str | bytes = "query-id\tcorpus-id\tscore\nq1\td1\t1\n") -> Path:
    (root / "qrels").mkdir(parents=True)
    for name, data in (("corpus.jsonl", corpus), ("queries.jsonl", queries), ("qrels/test.tsv", qrels)):
        (root / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return root


_DOC = '{"_id": "d1", "title": "ls", "text": "list directory contents"}\n'


def _cases(tmp: Path, model: str, redis_url: str) -> dict[str, tuple[list[str], str, Path | None]]:
    """name -> (argv, a word the error line must hold, an output path that must not appear)."""
    (tmp / "binary.txt").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (tmp / "nul.txt").write_bytes(b"a\x00b\n")
    (tmp / "good.txt").write_text("list directory contents\ncopy files\n")
    (tmp / "a-file").write_text("x")
    (tmp / "a-folder.npy").mkdir()
    (tmp / "empty-ledger.json").write_text("[]")
    (tmp / "routes-ledger.json").write_text('{"routes": []}')
    (tmp / "bad-route-ledger.json").write_text('{"routes": {"r": {"bogus": 1}}}')
    beirs = {
        "corpus not JSON": _beir(tmp / "b1", "garbage\n"),
        "corpus line a list": _beir(tmp / "b2", "[]\n"),
        "corpus text a number": _beir(tmp / "b3", '{"_id": "d1", "text": 5}\n'),
        "corpus not UTF-8": _beir(tmp / "b4", b'{"_id": "d1", "text": "\xff\xfe"}\n'),
        "corpus empty": _beir(tmp / "b5", ""),
        "qrels two columns": _beir(tmp / "b6", _DOC, qrels="q1\td1\n"),
        "qrels score not a number": _beir(tmp / "b7", _DOC, qrels="q1\td1\tgood\n"),
        "qrels NUL": _beir(tmp / "b8", _DOC, qrels=b"q1\td1\x00\t1\n"),
        "qrels empty": _beir(tmp / "b9", _DOC, qrels=""),
        "qrels unknown ids": _beir(tmp / "b10", _DOC, qrels="q9\td9\t1\n"),
        "queries garbage": _beir(tmp / "b11", _DOC, queries="{\n"),
    }
    live_garbage = tmp / "vi-garbage"
    (live_garbage / "versions" / "v1").mkdir(parents=True)
    (live_garbage / "versions" / "v1" / "version.json").write_text(json.dumps({"model": model, "dim": None}))
    (live_garbage / "LIVE.json").write_text("{garbage")
    live_list = Path(str(live_garbage) + "-list")
    (live_list / "versions" / "v1").mkdir(parents=True)
    (live_list / "versions" / "v1" / "version.json").write_text("[]")
    (live_list / "LIVE.json").write_text('{"live": "v1"}')
    live_missing = Path(str(live_garbage) + "-missing")
    live_missing.mkdir()
    (live_missing / "LIVE.json").write_text('{"live": "v7"}')
    embed = ["embed", "-m", model, "--no-progress"]
    evaluate = ["--models", model, "--cache", "none", "--no-progress", "-o", str(tmp / "results.json")]
    out = tmp / "out.npy"
    return {
        "binary input": ([*embed, str(tmp / "binary.txt"), "-o", str(out)], "UTF-8", out),
        "NUL input": ([*embed, str(tmp / "nul.txt"), "-o", str(out)], "NUL", out),
        "input a folder": ([*embed, str(tmp), "-o", str(out)], "not a file", out),
        "input missing": ([*embed, str(tmp / "nope.txt"), "-o", str(out)], "does not exist", out),
        "-o under a file": ([*embed, str(tmp / "good.txt"), "-o", str(tmp / "a-file" / "o.npy")], "is a file",
                            tmp / "a-file" / "o.npy"),
        "-o a folder": ([*embed, str(tmp / "good.txt"), "-o", str(tmp / "a-folder.npy")], "is a folder", None),
        "-o another suffix": ([*embed, str(tmp / "good.txt"), "-o", str(tmp / "o.csv")], ".npy", tmp / "o.csv"),
        **{f"eval, {name}": (["eval", str(folder), *evaluate], str(folder.name), tmp / "results.json")
           for name, folder in beirs.items()},
        "eval, not a BEIR folder": (["eval", str(tmp / "a-folder.npy"), *evaluate], "BEIR", tmp / "results.json"),
        "eval, -o under a file": (["eval", str(SAMPLE), *evaluate[:-1], str(tmp / "a-file" / "r.json")],
                                  "is a file", None),
        "eval, plot format": (["eval", str(SAMPLE), *evaluate, "--plot", str(tmp / "p.bmp")], "--plot",
                              tmp / "results.json"),
        "eval, oversample": (["eval", str(SAMPLE), *evaluate, "--oversample", "lots"], "oversample",
                             tmp / "results.json"),
        "build-index, malformed": (["build-index", str(beirs["corpus not JSON"]), str(tmp / "vi"), "-m", model],
                                   "not JSON", tmp / "vi"),
        "drift report, --db a text file": (["drift", "report", "--db", str(tmp / "good.txt")], "SQLite", None),
        "drift report, --db a folder": (["drift", "report", "--db", str(tmp / "a-folder.npy")], "SQLite", None),
        "cache stats, Redis down": (["cache", "stats", "--cache", redis_url], "Redis", None),
        "cache clear, Redis down": (["cache", "clear", "--cache", redis_url], "Redis", None),
        "migrate status, garbage LIVE.json": (["migrate", "status", str(live_garbage)], "LIVE.json", None),
        "migrate status, version.json a list": (["migrate", "status", str(live_list)], "version.json", None),
        "migrate status, LIVE names no version": (["migrate", "status", str(live_missing)], "v7", None),
        "migrate status, no index": (["migrate", "status", str(tmp / "nothing")], "LIVE.json", None),
        "costs, [] ledger": (["costs", str(tmp / "empty-ledger.json")], "ledger", None),
        "costs, routes a list": (["costs", str(tmp / "routes-ledger.json")], "ledger", None),
        "costs, unknown route field": (["costs", str(tmp / "bad-route-ledger.json")], "ledger", None),
        "costs, binary ledger": (["costs", str(tmp / "binary.txt")], "ledger", None),
        "costs, missing ledger": (["costs", str(tmp / "nope.json")], "does not exist", None),
        "unknown option": (["embed", "--bogus"], "--help", None),
        "unknown command": (["frobnicate"], "--help", None),
        "bad number": (["costs", "--estimate", "--price", "cheap"], "--help", None),
    }


def _case_names() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return list(_cases(Path(tmp), "static:x", "redis://127.0.0.1:1/0"))


CASE_NAMES = _case_names()


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory, static_model_dir: Path) -> dict[str, tuple]:
    return _cases(tmp_path_factory.mktemp("cli"), f"static:{static_model_dir}",
                  f"redis://127.0.0.1:{_free_port()}/0")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_one_line_and_exit_2(name, cases, capsys):
    argv, mentions, output = cases[name]
    code, err = _run(argv, capsys)
    _assert_one_line_exit_2(code, err, mentions=mentions)
    if output is not None:
        assert not output.exists(), f"{output} was written"


def test_eval_plot_checks_matplotlib_before_the_work(tmp_path, static_model_dir, capsys, monkeypatch):
    """Without matplotlib, `eval --plot` stops before embedding anything (no results file), naming the extra."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails as if not installed
    results = tmp_path / "r.json"
    started = time.perf_counter()
    code, err = _run(["eval", str(SAMPLE), "--models", f"static:{static_model_dir}", "--cache", "none",
                      "--no-progress", "-o", str(results), "--plot", str(tmp_path / "p.png")], capsys)
    _assert_one_line_exit_2(code, err, mentions='pip install "embedopt[eval]"')
    assert not results.exists() and time.perf_counter() - started < 5


def test_cache_warm_fails_when_a_tier_it_was_asked_to_fill_is_down(tmp_path, static_model_dir, capsys):
    (tmp_path / "in.txt").write_text("list directory contents\ncopy files\n")
    spec = f"memory,redis://127.0.0.1:{_free_port()}/0,sqlite:{tmp_path / 'v.sqlite3'}"
    code, err = _run(["cache", "warm", str(tmp_path / "in.txt"), "-m", f"static:{static_model_dir}", "--cache",
                      spec, "--no-progress"], capsys)
    assert code == 2 and "redis" in err[-1] and "cache warm again" in err[-1], err
    assert not any("Traceback" in line for line in err)
    code, err = _run(["cache", "warm", str(tmp_path / "in.txt"), "-m", f"static:{static_model_dir}", "--cache",
                      f"memory,sqlite:{tmp_path / 'v.sqlite3'}", "--no-progress"], capsys)
    assert code == 0 and "2 unique texts" in err[-1]


# ------------------------------------------------------------------------------------------------ hypothesis
_WORDS = st.sampled_from(["-", "", "x", "none", "0", "-1", "nan", "1e999", "\x00", "\u2603", "--json", "-o",
                          "--dim", "3", "--cache", "memory", "sqlite:", "redis://127.0.0.1:1/0", "memcached://x",
                          "--precision", "int8", "binary", "--input-type", "query", "--field", "--estimate",
                          "--price", "--use-case", "code", "--model", "-m", "static:/nonexistent", "bogus:x",
                          "--fingerprint", "--plot", "--monitor", "--db"])


def _argv(tmp: Path, model: str) -> st.SearchStrategy[list[str]]:
    paths = st.sampled_from([str(tmp / n) for n in ("good.txt", "binary.txt", "a-file", "a-folder.npy", "nope",
                                                    "a-file/x.npy", "new/out.npy", "out.jsonl", "led.json")])
    head = st.sampled_from([["embed"], ["embed", "-m", model], ["info", "-m", model], ["costs"], ["specs"],
                            ["models"], ["cache", "stats"], ["cache", "clear"], ["migrate", "status"],
                            ["drift", "report"], ["cache", "warm", "-m", model]])
    tail = st.lists(st.one_of(_WORDS, paths, st.text(max_size=6)), max_size=6)
    return st.builds(lambda h, t: [*h, *t], head, tail)


def test_any_arguments_succeed_or_end_in_one_line_and_exit_2(tmp_path, static_model_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBEDOPT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EMBEDOPT_CACHE", raising=False)
    (tmp_path / "good.txt").write_text("list directory contents\ncopy files\n")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder.npy").mkdir()
    (tmp_path / "led.json").write_text("[]")
    seen: dict[int, int] = {}

    @settings(max_examples=60, deadline=20_000, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(argv=_argv(tmp_path, f"static:{static_model_dir}"))
    def check(argv: list[str]) -> None:
        code, err = _run(argv, capsys)
        seen[code] = seen.get(code, 0) + 1
        assert code in (0, 2), (argv, code, err)
        if code == 2:
            assert len(err) == 1 and err[0].startswith("embedopt"), (argv, err)
        assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*")), argv  # no temporary left behind

    check()
    assert seen.get(2, 0) > 0


# ------------------------------------------------------------------------------------------------ kill
@pytest.mark.slow
def test_a_killed_embed_leaves_the_old_output_or_none_never_a_partial_one(tmp_path, static_model_dir):
    """`embedopt embed` of 20,000 lines to .jsonl (28 MB) is SIGKILLed while it writes: the output path still holds the
    complete file that was there before (and with none before, no file appears)."""
    source = tmp_path / "big.txt"
    source.write_text("".join(f"line {i} about files and folders {i % 97}\n" for i in range(20_000)))
    out = tmp_path / "out.jsonl"
    before = '{"id": 1, "vector": [1]}\n'
    out.write_text(before)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def kill_while_writing(target: Path, seen: Callable[[], bool]) -> None:
        proc = subprocess.Popen([sys.executable, "-m", "embedopt.cli", "embed", str(source), "-o", str(target),
                                 "-m", f"static:{static_model_dir}", "--dim", "64", "--no-progress"],
                                env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not seen() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL, "the command finished before it could be killed mid-write"

    def writing(target: Path) -> Callable[[], bool]:
        return lambda: any(p.stat().st_size > 1_000_000 for p in tmp_path.glob(f".{target.name}.*.tmp"))

    kill_while_writing(out, writing(out))
    assert out.read_text() == before  # the old, complete file: never a partial new one
    fresh = tmp_path / "fresh.jsonl"
    kill_while_writing(fresh, writing(fresh))
    assert not fresh.exists()
