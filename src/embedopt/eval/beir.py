"""Read a BEIR-format dataset: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``.

How a document's title and text become the one string that is embedded is the ``join``: ``"space"`` (the default,
BEIR's own: ``title + " " + text``), ``"colon"`` (``"title: text"``), ``"newline"``, ``"none"`` (the text alone),
or a format string with ``{title}`` and ``{text}`` (``"# {title}\\n\\n{text}"``). A document without a title is
its text alone whatever the join. The join changes what a model sees, so it changes the scores: say which one a
figure used.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["JOINS", "BeirDataset", "join_text", "load_beir"]

JOINS = {"space": "{title} {text}", "colon": "{title}: {text}", "newline": "{title}\n{text}", "none": "{text}"}
"""The named joins; any other value of ``join`` is a format string with ``{title}`` and ``{text}``."""


def _template(join: str) -> str:
    template = JOINS.get(join, join)
    try:
        probe = template.format(title="\0T", text="\0X")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"join {join!r} is neither one of {sorted(JOINS)} nor a format string using {{title}} "
                          f"and {{text}} (braces meant literally are doubled: {{{{ }}}}): {exc!r}") from None
    if "\0X" not in probe:
        raise ConfigError(f"join {join!r} leaves out the document's text: a format string needs {{text}}")
    return template


def join_text(title: str, text: str, join: str = "space") -> str:
    """One document's title and text joined as ``join`` says (see the module docstring)."""
    if not title:
        return text
    return _template(join).format(title=title, text=text).strip()


@dataclass
class BeirDataset:
    name: str
    corpus: dict[str, dict[str, str]]
    """doc id → ``{"title": ..., "text": ...}``"""
    queries: dict[str, str]
    """query id → text; only queries that have judgements in the split are kept."""
    qrels: dict[str, dict[str, int]]
    """query id → {doc id → relevance}"""
    join: str = "space"
    """How :meth:`doc_texts` joins a title and a text (see the module docstring)."""

    def __post_init__(self) -> None:
        _template(self.join)  # a bad join fails here, before anything is embedded

    @property
    def doc_ids(self) -> list[str]:
        return list(self.corpus)

    @property
    def query_ids(self) -> list[str]:
        return list(self.queries)

    def doc_texts(self, join: str | None = None) -> list[str]:
        """Each document's title and text joined (``join``, default the dataset's: ``title + " " + text``),
        in :attr:`doc_ids` order."""
        template = _template(self.join if join is None else join)
        return [template.format(title=d["title"], text=d["text"]).strip() if d.get("title") else d["text"]
                for d in self.corpus.values()]

    def query_texts(self) -> list[str]:
        return list(self.queries.values())


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a .jsonl file; ConfigError naming the line otherwise."""
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{path} line {n} is not JSON ({exc}); fix or remove it") from exc
            if not isinstance(row, dict) or not isinstance(row.get("_id"), (str, int)):
                raise ConfigError(f"{path} line {n} is not an object with an \"_id\"; each line must be like "
                                  '{"_id": "d1", "title": "...", "text": "..."}')
            yield n, row


def _text(value: Any, path: Path, n: int, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{path} line {n}: {field!r} must be a string, got {type(value).__name__}")
    return value


def load_beir(path: str | os.PathLike[str], split: str = "test", *, join: str = "space") -> BeirDataset:
    """Read a BEIR-format folder; ``join`` says how :meth:`BeirDataset.doc_texts` joins title and text. Malformed
    files raise :class:`~embedopt.errors.ConfigError` naming the file and line; a corpus with no documents too."""
    _template(join)
    root = Path(path)
    files = {"corpus": root / "corpus.jsonl", "queries": root / "queries.jsonl",
             "qrels": root / "qrels" / f"{split}.tsv"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"{root} is not a BEIR-format dataset: missing {', '.join(missing)}")
    try:
        return _load(root, files, join)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{root} holds a file that is not UTF-8 text ({exc}); BEIR files are UTF-8 .jsonl "
                          "and .tsv") from exc


def _load(root: Path, files: dict[str, Path], join: str) -> BeirDataset:
    corpus: dict[str, dict[str, str]] = {}
    for n, row in _rows(files["corpus"]):
        corpus[str(row["_id"])] = {"title": _text(row.get("title"), files["corpus"], n, "title"),
                                   "text": _text(row.get("text"), files["corpus"], n, "text")}
    if not corpus:
        raise ConfigError(f"{files['corpus']} holds no documents")
    qrels: dict[str, dict[str, int]] = {}
    with files["qrels"].open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        try:
            for cols in reader:
                if not cols or cols[0] in ("query-id", "query_id"):
                    continue
                qid, did, score = cols[0], cols[1], int(float(cols[2]))
                if did in corpus:
                    qrels.setdefault(qid, {})[did] = score
        except (IndexError, ValueError, OverflowError, csv.Error) as exc:
            raise ConfigError(f"{files['qrels']} line {reader.line_num} is not "
                              f"'query-id<TAB>corpus-id<TAB>score' ({exc})") from exc
    queries: dict[str, str] = {}
    for n, row in _rows(files["queries"]):
        qid = str(row["_id"])
        if qid in qrels:
            queries[qid] = _text(row.get("text"), files["queries"], n, "text")
    qrels = {q: r for q, r in qrels.items() if q in queries}
    return BeirDataset(root.name, corpus, queries, qrels, join)
