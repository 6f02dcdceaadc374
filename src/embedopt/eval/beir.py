"""Read a BEIR-format dataset: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

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


def load_beir(path: str | os.PathLike[str], split: str = "test") -> BeirDataset:
    root = Path(path)
    files = {"corpus": root / "corpus.jsonl", "queries": root / "queries.jsonl",
             "qrels": root / "qrels" / f"{split}.tsv"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"{root} is not a BEIR-format dataset: missing {', '.join(missing)}")
    corpus: dict[str, dict[str, str]] = {}
    with files["corpus"].open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                corpus[str(row["_id"])] = {"title": row.get("title") or "", "text": row.get("text") or ""}
    qrels: dict[str, dict[str, int]] = {}
    with files["qrels"].open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        for row in reader:
            if not row or row[0] in ("query-id", "query_id"):
                continue
            qid, did, score = row[0], row[1], int(float(row[2]))
            if did in corpus:
                qrels.setdefault(qid, {})[did] = score
    queries: dict[str, str] = {}
    with files["queries"].open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                qid = str(row["_id"])
                if qid in qrels:
                    queries[qid] = row["text"]
    qrels = {q: r for q, r in qrels.items() if q in queries}
    return BeirDataset(root.name, corpus, queries, qrels)
