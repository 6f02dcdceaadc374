"""Read a BEIR-format dataset: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["BeirDataset", "load_beir"]


@dataclass
class BeirDataset:
    name: str
    corpus: dict[str, dict[str, str]]
    """doc id → ``{"title": ..., "text": ...}``"""
    queries: dict[str, str]
    """query id → text; only queries that have judgements in the split are kept."""
    qrels: dict[str, dict[str, int]]
    """query id → {doc id → relevance}"""

    @property
    def doc_ids(self) -> list[str]:
        return list(self.corpus)

    @property
    def query_ids(self) -> list[str]:
        return list(self.queries)

    def doc_texts(self) -> list[str]:
        """``title + " " + text`` per document, in :attr:`doc_ids` order (BEIR's usual join)."""
        return [f"{d['title']} {d['text']}".strip() if d.get("title") else d["text"] for d in self.corpus.values()]

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


def load_beir(path: str | os.PathLike[str], split: str = "test") -> BeirDataset:
    """Read a BEIR-format folder. Malformed files raise :class:`~embedopt.errors.ConfigError` naming the file and
    line; a corpus with no documents too."""
    root = Path(path)
    files = {"corpus": root / "corpus.jsonl", "queries": root / "queries.jsonl",
             "qrels": root / "qrels" / f"{split}.tsv"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"{root} is not a BEIR-format dataset: missing {', '.join(missing)}")
    try:
        return _load(root, files)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{root} holds a file that is not UTF-8 text ({exc}); BEIR files are UTF-8 .jsonl "
                          "and .tsv") from exc


def _load(root: Path, files: dict[str, Path]) -> BeirDataset:
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
    return BeirDataset(root.name, corpus, queries, qrels)
