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
from dataclasses import dataclass
from pathlib import Path

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


def load_beir(path: str | os.PathLike[str], split: str = "test", *, join: str = "space") -> BeirDataset:
    """Read the dataset in ``path``; ``join`` says how :meth:`BeirDataset.doc_texts` joins title and text."""
    _template(join)
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
    return BeirDataset(root.name, corpus, queries, qrels, join)
