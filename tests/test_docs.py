"""Every ```python block of README.md and docs/**/*.md runs as written, imports included.

A page's blocks run in order in one namespace (a page that builds on earlier blocks says so at its top), in-process
so a model a page loads through a spec is loaded once per session, in a fresh folder where ``examples/`` points at
the repository's (the pages say "run from the repository root") and with ``$EMBEDOPT_HOME`` of its own (the
distilled static model and trained rerankers are shared with the real one, so nothing is distilled twice). Blocks
that use Redis use the one at 127.0.0.1:6379; when none answers, a redis-server is started there.

A block that needs what a test machine lacks (an API key, a remote server, a trained cross-encoder) is marked in
the markdown with ``<!-- not run: REASON -->`` on the line before it. Exactly those are skipped, and how many each
page has is pinned in ``NOT_RUN``: marking another block "not run" is a decision, made here on purpose.
"""

from __future__ import annotations

import re
import socket
import sys
import time
import traceback
from dataclasses import dataclass

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow

PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))]

#: Blocks marked ``<!-- not run: ... -->``, per page; every other page has none.
NOT_RUN: dict[str, int] = {
    "docs/architecture.md": 1,  # a line of tests/contracts/test_providers.py, not a program
    "docs/distributed.md": 2,  # a Ray cluster (tests/test_distributed.py runs the same calls on a real one)
    "docs/langchain.md": 2,  # API keys; a trained cross-encoder
    "docs/llamaindex.md": 1,  # a trained cross-encoder
    "docs/providers.md": 2,  # API keys; an OpenAI-compatible server
    "docs/retrieval.md": 1,  # a trained cross-encoder
}

_NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>.+?)\s*-->$")
_REDIS = ("127.0.0.1", 6379)


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    """1-based line of the opening fence."""
    code: str
    not_run: str | None
    """The reason given in the marker, for a block marked not run."""


def python_blocks(page: str) -> list[Block]:
    """The ```python blocks of ``page``, with the not-run marker that precedes each (blank lines between allowed).
    A marker that precedes anything else is an error: it would silently mark nothing."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    marker: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        m = _NOT_RUN.match(line)
        if m:
            marker = m["reason"]
        elif line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            assert end is not None, f"{page}:{i + 1}: a code fence that never closes"
            if line == "```python":
                blocks.append(Block(page, i + 1, "\n".join(lines[i + 1:end]) + "\n", marker))
            else:
                assert marker is None, f"{page}:{i + 1}: a not-run marker before a {line} block (only python runs)"
            marker = None
            i = end
        elif line:
            assert marker is None, f"{page}:{i}: a not-run marker that no ```python block follows"
        i += 1
    assert marker is None, f"{page}: a not-run marker at the end of the page"
    return blocks


RUNNABLE = [p for p in PAGES if any(b.not_run is None for b in python_blocks(p))]


@pytest.mark.parametrize("page", PAGES)
def test_not_run_blocks_are_marked_and_counted(page):
    """The skipped blocks are exactly the marked ones, and their number per page is pinned."""
    marked = [b for b in python_blocks(page) if b.not_run is not None]
    assert len(marked) == NOT_RUN.get(page, 0), (
        f"{page} marks {len(marked)} block(s) not run ({[b.line for b in marked]}), NOT_RUN pins "
        f"{NOT_RUN.get(page, 0)}: make the block run, or pin the new count on purpose")


def test_the_readme_has_a_python_example_and_runs_all_of_it():
    blocks = python_blocks("README.md")
    assert blocks and all(b.not_run is None for b in blocks)
    assert all(len(b.code.strip().splitlines()) <= 10 for b in blocks), "the README's example is ten lines at most"


@pytest.fixture(scope="session")
def redis_at_6379(tmp_path_factory):
    """The Redis the docs name (localhost:6379): the one running there, else one started there for the session."""
    try:
        socket.create_connection(_REDIS, timeout=0.5).close()
    except OSError:
        pass
    else:
        yield
        return
    from .redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis-6379"))
    server.port = _REDIS[1]
    server.start()
    yield
    server.kill()


@pytest.fixture
def docs_session(tmp_path, monkeypatch, request):
    """A fresh working folder and $EMBEDOPT_HOME; framework globals a page sets are put back afterwards."""
    from embedopt._files import cache_dir

    real_home = cache_dir()
    home = tmp_path / "home"
    home.mkdir()
    for shared in ("static", "rerankers"):  # built once per machine: share them, isolate everything else
        (real_home / shared).mkdir(parents=True, exist_ok=True)
        (home / shared).symlink_to(real_home / shared, target_is_directory=True)
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    monkeypatch.setenv("EMBEDOPT_HOME", str(home))
    monkeypatch.chdir(work)
    saved = _framework_globals()
    yield work
    _restore_framework_globals(saved)


def _framework_globals() -> dict[str, object]:
    saved: dict[str, object] = {}
    if "langchain_core.globals" in sys.modules:
        saved["llm_cache"] = sys.modules["langchain_core.globals"].get_llm_cache()
    if "llama_index.core" in sys.modules:
        saved["embed_model"] = sys.modules["llama_index.core"].Settings._embed_model
    return saved


def _restore_framework_globals(saved: dict[str, object]) -> None:
    if "langchain_core.globals" in sys.modules:
        sys.modules["langchain_core.globals"].set_llm_cache(saved.get("llm_cache"))
    if "llama_index.core" in sys.modules:
        sys.modules["llama_index.core"].Settings._embed_model = saved.get("embed_model")


@pytest.mark.parametrize("page", RUNNABLE)
def test_page_runs_as_written(page, docs_session, request, capsys):
    blocks = [b for b in python_blocks(page) if b.not_run is None]
    if any("localhost:6379" in b.code for b in blocks):
        request.getfixturevalue("redis_at_6379")
    namespace: dict[str, object] = {"__name__": "__docs__"}
    started = time.monotonic()
    for block in blocks:
        try:
            code = "\n" * block.line + block.code  # so a traceback's line numbers are the page's
            exec(compile(code, page, "exec"), namespace)
        except Exception:
            pytest.fail(f"the ```python block at {page}:{block.line} failed:\n{traceback.format_exc()}",
                        pytrace=False)
    with capsys.disabled():
        skipped = NOT_RUN.get(page, 0)
        print(f"\n{page}: {len(blocks)} block(s) ran in {time.monotonic() - started:.1f} s"
              + (f", {skipped} marked not run" if skipped else ""))


def test_every_serve_config_key_is_documented():
    """docs/serve.md lists every key the serve config accepts: read from the ``_keys(table, where, valid)`` calls
    of src/embedopt/serve/config.py, so a key added there without a line in the guide fails here."""
    import ast

    tree = ast.parse((ROOT / "src" / "embedopt" / "serve" / "config.py").read_text(encoding="utf-8"))
    keys = {key for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_keys"
            for key in ast.literal_eval(node.args[2])}
    assert {"host", "max_batch_tokens", "sha256", "routes"} <= keys  # the walk found the tables
    page = (ROOT / "docs" / "serve.md").read_text(encoding="utf-8")
    missing = sorted(k for k in keys if not any(form in page for form in (f"`{k}`", f"[{k}]", f"[{k}.", f"[[{k}]]")))
    assert not missing, f"docs/serve.md does not document serve config key(s) {missing}"


def test_every_cli_option_is_documented():
    """docs/cli.md names every command and option of ``embedopt`` (as ``embedopt ... --help`` prints them)."""
    import argparse

    from embedopt.cli import build_parser

    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, prog: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prog} {name}")
            elif action.option_strings and not isinstance(action, argparse._HelpAction):
                missing.extend(f"{prog} {o}" for o in action.option_strings if f"`{o}`" not in page)
        if f"`{prog}`" not in page and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            missing.append(prog)

    walk(build_parser(), "embedopt")
    assert not missing, f"docs/cli.md does not document {missing}"
