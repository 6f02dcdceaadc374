"""A BM25 index over the same documents and ids as a vector store: the lexical half of hybrid retrieval.

:class:`LexicalIndex` keeps, per document id, the tokens of the text that was embedded, and scores queries with
BM25 through `bm25s <https://github.com/xhluca/bm25s>`_ (an eager sparse matrix of per-term scores; a query is a
sum of a few columns).

**Tokens.** :class:`Tokenizer` turns a text into terms the same way at index and at query time, and its settings
are saved with the index: lowercase, then words of two or more letters or digits (the regex ``(?u)\\b\\w\\w+\\b``,
as bm25s and scikit-learn split), then the 33 English stopwords of Lucene's ``EnglishAnalyzer`` removed, then the
Snowball English stemmer (PyStemmer; ``stemmer=None`` turns it off).

**Scores.** ``method="lucene"`` (default): ``idf = ln(1 + (N - df + 0.5) / (df + 0.5))`` times
``tf / (tf + k1 * (1 - b + b * dl / avgdl))``, as Lucene since 8.0 (no ``k1 + 1`` factor, which does not change the
order); ``method="robertson"``: ``idf = ln((N - df + 0.5) / (df + 0.5))``, clamped at 0. A query term that occurs
twice counts twice. Only documents with a positive score (sharing a term with the query) are returned.

**Changes.** An add is searchable at once, a delete is masked at once; the collection statistics (N, df, avgdl)
are those of the last *build*, as in Lucene between merges: a new document is scored with them (a term the build
never saw gets the idf of ``df = 0``), a deleted one still counts in them. The index is rebuilt — statistics
recomputed, deleted rows dropped, the vocabulary compacted — by :meth:`LexicalIndex.rebuild`, and by the next
search once the adds and deletes since the last build exceed ``rebuild_fraction`` of the documents it counted
(default 10%; ``0`` rebuilds before any search that follows a change, ``None`` only when asked).

**Files.** :meth:`LexicalIndex.save` writes a folder atomically: ``lexical.json`` (settings, statistics),
``vocab.json``, ``ids.npy``, ``tokens.npy`` + ``offsets.npy`` (each row's term ids), ``alive.npy``, ``df.npy``, and
the built matrix in bm25s's own format under ``bm25s/`` (``np.save(allow_pickle=False)`` + JSON; nothing is
pickled). :meth:`LexicalIndex.load` restores exactly the saved state: same results before and after.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._extras import require
from ._files import atomic_folder
from .errors import ConfigError, InputError

__all__ = ["ENGLISH_STOPWORDS", "LexicalIndex", "LexicalResult", "Tokenizer"]

Method = Literal["lucene", "robertson"]
_METHODS: tuple[str, ...] = ("lucene", "robertson")
_FORMAT = "embedopt.lexical-index"
_VERSION = 1
_PATTERN = r"(?u)\b\w\w+\b"

ENGLISH_STOPWORDS: tuple[str, ...] = (
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of",
    "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "will", "with",
)
"""Lucene's ``EnglishAnalyzer`` stopwords (also bm25s's ``"en"`` list)."""


@dataclass(frozen=True)
class LexicalResult:
    """Per query, the ids found (best first) and their BM25 scores: the shape of a vector store's
    ``SearchResult``, so a hybrid search treats both sides alike (``embedopt.fusion.Ranking.from_result``)."""

    ids: list[list[str]]
    scores: list[np.ndarray]
    """float32 per query."""
    timings_ms: dict[str, float] = field(default_factory=dict)
    """``lexical`` (scoring and top k), and ``rebuild`` when this search rebuilt the statistics first."""


@dataclass(frozen=True)
class Tokenizer:
    """Text → terms: lowercase, words of 2+ word characters, stopwords out, stems (see the module docstring).

    Args:
        stopwords: the words to drop (after lowercasing; default Lucene's 33 English ones; ``()`` keeps all).
        stemmer: a Snowball algorithm name for PyStemmer (``"english"``, ``"porter"``, ``"german"`` ...) or
            ``None``. Stemming needs ``pip install "embedopt[lexical]"``.
        lowercase: fold case first (default).
    """

    stopwords: tuple[str, ...] = ENGLISH_STOPWORDS
    stemmer: str | None = "english"
    lowercase: bool = True
    _split: Callable[[str], list[str]] = field(init=False, repr=False, compare=False)
    _stem: Callable[[list[str]], list[str]] | None = field(init=False, repr=False, compare=False)
    _stop: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.stopwords, str) or not all(isinstance(w, str) for w in self.stopwords):
            raise ConfigError("stopwords must be a sequence of words, e.g. embedopt.lexical.ENGLISH_STOPWORDS or ()")
        object.__setattr__(self, "stopwords", tuple(self.stopwords))
        object.__setattr__(self, "_stop", frozenset(w.lower() if self.lowercase else w for w in self.stopwords))
        object.__setattr__(self, "_split", re.compile(_PATTERN).findall)
        stem = None
        if self.stemmer is not None:
            stemmer_mod = require("Stemmer", extra="lexical", feature="stemming in LexicalIndex",
                                  package="PyStemmer")
            if self.stemmer not in stemmer_mod.algorithms():
                raise ConfigError(f"unknown stemmer {self.stemmer!r}; use one of {sorted(stemmer_mod.algorithms())} "
                                  "or stemmer=None")
            stem = stemmer_mod.Stemmer(self.stemmer).stemWords
        object.__setattr__(self, "_stem", stem)

    def __repr__(self) -> str:
        stop = "ENGLISH_STOPWORDS" if self.stopwords == ENGLISH_STOPWORDS else f"{len(self.stopwords)} words"
        return f"Tokenizer(stopwords={stop}, stemmer={self.stemmer!r}, lowercase={self.lowercase})"

    def __call__(self, text: str) -> list[str]:
        words = self._split(text.lower() if self.lowercase else text)
        words = [w for w in words if w not in self._stop]
        return list(self._stem(words)) if self._stem is not None and words else words

    def to_dict(self) -> dict[str, Any]:
        return {"pattern": _PATTERN, "lowercase": self.lowercase, "stopwords": list(self.stopwords),
                "stemmer": self.stemmer}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        if d.get("pattern") != _PATTERN:
            raise ConfigError(f"the index was tokenized with the pattern {d.get('pattern')!r}, which this version of "
                              "embedopt does not know; rebuild the lexical index from the documents")
        return cls(stopwords=tuple(d["stopwords"]), stemmer=d["stemmer"], lowercase=bool(d["lowercase"]))


def _idf(method: str, df: np.ndarray, n: int) -> np.ndarray:
    df = df.astype(np.float64)
    if method == "lucene":
        return np.log1p((n - df + 0.5) / (df + 0.5))
    return np.log(np.maximum(1.0, (n - df + 0.5) / (df + 0.5)))


def _check_ids(ids: Any) -> list[str]:
    if isinstance(ids, str):
        raise InputError("ids must be a list of strings, not one string; wrap a single id in a list")
    out = list(ids)
    for n, i in enumerate(out):
        if not isinstance(i, str) or not i or "\x00" in i:
            raise InputError(f"ids must be non-empty strings without NUL characters; id #{n} is {i!r}", n)
    return out


class LexicalIndex:
    """BM25 over string ids, beside the vectors of a store (same ids, same texts).

    Args:
        tokenizer: how texts become terms (default :class:`Tokenizer`: lowercase, stopwords, English stemmer).
        k1, b: BM25's term-frequency saturation and length normalization; Lucene's defaults 1.2 and 0.75 (measured
            on manpages and debian-packages, within 0.006 NDCG@10 of bm25s's 1.5 and slightly ahead on both).
        method: ``"lucene"`` (default) or ``"robertson"`` (see the module docstring).
        rebuild_fraction: rebuild the statistics before a search once adds and deletes since the last build
            exceed this fraction of the documents it counted; ``None``: only on :meth:`rebuild`.
    """

    def __init__(self, *, tokenizer: Tokenizer | None = None, k1: float = 1.2, b: float = 0.75,
                 method: Method = "lucene", rebuild_fraction: float | None = 0.1) -> None:
        if method not in _METHODS:
            raise ConfigError(f"method must be one of {_METHODS}, got {method!r}")
        if not (isinstance(k1, (int, float)) and k1 >= 0):
            raise ConfigError(f"k1 must be a number >= 0, got {k1!r}")
        if not (isinstance(b, (int, float)) and 0 <= b <= 1):
            raise ConfigError(f"b must be between 0 and 1, got {b!r}")
        if rebuild_fraction is not None and not (isinstance(rebuild_fraction, (int, float)) and rebuild_fraction >= 0):
            raise ConfigError(f"rebuild_fraction must be a number >= 0 or None, got {rebuild_fraction!r}")
        self._bm25s = require("bm25s", extra="lexical", feature="LexicalIndex")
        self.tokenizer = tokenizer if tokenizer is not None else Tokenizer()
        self.k1, self.b, self.method = float(k1), float(b), method
        self.rebuild_fraction = rebuild_fraction
        self._vocab: dict[str, int] = {}
        self._row_ids: list[str] = []
        self._row_tokens: list[np.ndarray] = []
        self._alive: list[bool] = []
        self._row_of: dict[str, int] = {}
        self._changes = 0  # rows added or deleted since the last build
        # The last build: rows [0, _built) are in the bm25s matrix, scored with these statistics.
        self._bm25: Any = None
        self._built = 0
        self._stats_n = 0
        self._avgdl = 0.0
        self._df = np.zeros(0, dtype=np.int64)
        self._cache: dict[str, Any] = {}  # derived arrays, dropped on every change

    # ------------------------------------------------------------------------------------------- describe
    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, id_: object) -> bool:
        return isinstance(id_, str) and id_ in self._row_of

    def __repr__(self) -> str:
        return (f"LexicalIndex(documents={len(self)}, method={self.method!r}, k1={self.k1}, b={self.b}, "
                f"terms={len(self._vocab)}, changes_since_build={self._changes}, tokenizer={self.tokenizer!r})")

    @property
    def ids(self) -> list[str]:
        """The live ids, in the order they were added."""
        return [i for i, a in zip(self._row_ids, self._alive, strict=True) if a]

    @property
    def changes_since_build(self) -> int:
        """Adds and deletes not yet in the statistics; the next search rebuilds when this passes
        ``rebuild_fraction`` of the documents counted at the last build."""
        return self._changes

    # ------------------------------------------------------------------------------------------- write
    def add(self, ids: Any, texts: Any) -> None:
        """Index ``texts`` under ``ids`` (the text that was embedded); an id already present is replaced."""
        id_list = _check_ids(ids)
        if isinstance(texts, str):
            raise InputError("texts must be a list of strings, not one string; wrap a single text in a list")
        text_list = list(texts)
        if len(id_list) != len(text_list):
            raise InputError(f"{len(id_list)} ids and {len(text_list)} texts must match; nothing was added")
        if len(set(id_list)) != len(id_list):
            raise InputError("ids must be unique within one add(); nothing was added")
        for n, t in enumerate(text_list):
            if not isinstance(t, str):
                raise InputError(f"text #{n} is a {type(t).__name__}, not a string; nothing was added", n)
        rows = [self._term_ids(self.tokenizer(t), grow=True) for t in text_list]
        self.delete([i for i in id_list if i in self._row_of])
        for i, toks in zip(id_list, rows, strict=True):
            self._row_of[i] = len(self._row_ids)
            self._row_ids.append(i)
            self._row_tokens.append(toks)
            self._alive.append(True)
        self._changes += len(id_list)
        self._cache.clear()

    def delete(self, ids: Any) -> int:
        """Mask ``ids`` (unknown ids are ignored); returns how many were deleted. The rows leave the statistics
        at the next rebuild."""
        n = 0
        for i in _check_ids(ids):
            row = self._row_of.pop(i, None)
            if row is not None:
                self._alive[row] = False
                n += 1
        self._changes += n
        if n:
            self._cache.clear()
        return n

    def _term_ids(self, terms: list[str], *, grow: bool) -> np.ndarray:
        vocab = self._vocab
        if grow:
            return np.array([vocab.setdefault(t, len(vocab)) for t in terms], dtype=np.int32)
        return np.array([vocab[t] for t in terms if t in vocab], dtype=np.int32)

    def rebuild(self) -> None:
        """Recompute the statistics over the live documents, drop deleted rows, compact the vocabulary."""
        live = [r for r, a in enumerate(self._alive) if a]
        ids = [self._row_ids[r] for r in live]
        tokens = [self._row_tokens[r] for r in live]
        flat = np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.int32)
        used = np.zeros(len(self._vocab), dtype=bool)
        used[flat] = True
        new_ids = (np.cumsum(used) - 1).astype(np.int32)  # old term id -> new, keeping the order
        remap = new_ids[flat]
        self._vocab = {w: int(new_ids[t]) for w, t in self._vocab.items() if used[t]}
        lengths = np.array([len(t) for t in tokens], dtype=np.int64)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        self._row_tokens = [remap[bounds[n]:bounds[n + 1]] for n in range(len(tokens))]
        self._row_ids, self._alive = ids, [True] * len(ids)
        self._row_of = {i: n for n, i in enumerate(ids)}
        self._df = _doc_freqs(self._row_tokens, len(self._vocab))
        self._stats_n, self._built = len(ids), len(ids)
        self._avgdl = float(lengths.mean()) if len(ids) else 0.0
        self._bm25 = None
        if ids and len(self._vocab):
            bm25 = self._bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
            bm25.index(([t.tolist() for t in self._row_tokens], dict(self._vocab)), create_empty_token=False,
                       show_progress=False)
            self._bm25 = bm25
        self._changes = 0
        self._cache.clear()

    def _needs_rebuild(self) -> bool:
        if self._changes == 0:
            return False
        if self._built == 0 and self._stats_n == 0:
            return True  # never built: there are no statistics to score with
        return self.rebuild_fraction is not None and self._changes > self.rebuild_fraction * self._stats_n

    # ------------------------------------------------------------------------------------------- search
    def search(self, queries: str | Sequence[str], k: int = 10, *,
               allowed: Iterable[str] | None = None) -> LexicalResult:
        """The ``k`` best documents of each query, best first (ties broken by id), with their BM25 scores.

        ``allowed``: only these ids may be returned (a metadata filter evaluated by the store); unknown ids are
        ignored. A query with no term in the index returns no hits.
        """
        query_list = [queries] if isinstance(queries, str) else list(queries)
        for n, q in enumerate(query_list):
            if not isinstance(q, str):
                raise InputError(f"query #{n} is a {type(q).__name__}, not a string", n)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"k must be a positive int, got {k!r}")
        started = time.perf_counter()
        if self._needs_rebuild():
            self.rebuild()
        rebuilt = time.perf_counter()
        mask = self._mask(allowed)
        id_arr = self._id_array()
        ids: list[list[str]] = []
        scores: list[np.ndarray] = []
        for q in query_list:
            s = self._scores(self._term_ids(self.tokenizer(q), grow=False))
            cand = np.flatnonzero(mask & (s > 0))
            if len(cand) > k:
                kth = np.partition(s[cand], len(cand) - k)[len(cand) - k]
                cand = cand[s[cand] >= kth]  # every tie of the k-th score, ordered below
            order = np.lexsort((id_arr[cand], -s[cand]))[:k]
            ids.append([self._row_ids[r] for r in cand[order]])
            scores.append(s[cand[order]].astype(np.float32))
        timings = {"lexical": (time.perf_counter() - rebuilt) * 1e3}
        if rebuilt - started > 1e-4:
            timings["rebuild"] = (rebuilt - started) * 1e3
        return LexicalResult(ids, scores, {key: round(v, 3) for key, v in timings.items()})

    def _id_array(self) -> np.ndarray:
        if "ids" not in self._cache:
            self._cache["ids"] = np.array(self._row_ids, dtype=str)
        arr: np.ndarray = self._cache["ids"]
        return arr

    def _mask(self, allowed: Iterable[str] | None) -> np.ndarray:
        if "alive" not in self._cache:
            self._cache["alive"] = np.array(self._alive, dtype=bool)
        alive: np.ndarray = self._cache["alive"]
        if allowed is None:
            return alive
        if isinstance(allowed, str):
            raise InputError("allowed must be a collection of ids, not one string; wrap a single id in a list")
        rows = [r for r in (self._row_of.get(i) for i in allowed) if r is not None]
        keep = np.zeros(len(alive), dtype=bool)
        keep[rows] = True
        return keep

    def _scores(self, terms: np.ndarray) -> np.ndarray:
        """BM25 of every row (deleted ones included) for the query's term ids."""
        out = np.zeros(len(self._row_ids), dtype=np.float64)
        if not len(terms):
            return out
        known = terms[terms < len(self._df)]
        if self._bm25 is not None and len(known):
            out[: self._built] = self._bm25.get_scores_from_ids(known.tolist())
        if len(self._row_ids) > self._built:
            out[self._built:] = self._pending_scores(terms)
        return out

    def _pending_scores(self, terms: np.ndarray) -> np.ndarray:
        """Rows added since the last build, scored with its statistics (a term it never saw: ``df = 0``)."""
        if "pending" not in self._cache:
            toks = self._row_tokens[self._built:]
            lengths = np.array([len(t) for t in toks], dtype=np.int64)
            rows = np.repeat(np.arange(len(toks)), lengths)
            flat = np.concatenate(toks).astype(np.int64) if toks else np.zeros(0, dtype=np.int64)
            keys, tf = np.unique(flat * len(toks) + rows, return_counts=True)  # sorted by term, then row
            self._cache["pending"] = (keys // max(1, len(toks)), keys % max(1, len(toks)), tf, lengths)
        term_of, row_of, tf, lengths = self._cache["pending"]
        n_rows = len(lengths)
        out = np.zeros(n_rows, dtype=np.float64)
        if not n_rows:
            return out
        df = np.zeros(len(terms), dtype=np.int64)
        seen = terms < len(self._df)
        df[seen] = self._df[terms[seen]]
        idf = _idf(self.method, df, self._stats_n)
        norm = self.k1 * (1 - self.b + self.b * lengths / (self._avgdl or 1.0))
        lo = np.searchsorted(term_of, terms, side="left")
        hi = np.searchsorted(term_of, terms, side="right")
        for t_idf, a, z in zip(idf, lo, hi, strict=True):
            r, f = row_of[a:z], tf[a:z]
            out[r] += t_idf * f / (f + norm[r])
        return out

    # ------------------------------------------------------------------------------------------- files
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the index to ``folder`` atomically (it appears whole or not at all); returns the folder."""
        out = Path(folder)
        words = [""] * len(self._vocab)
        for w, t in self._vocab.items():
            words[t] = w
        lengths = np.array([len(t) for t in self._row_tokens], dtype=np.int64)
        with atomic_folder(out) as tmp:
            np.save(tmp / "ids.npy", np.array(self._row_ids, dtype=str), allow_pickle=False)
            np.save(tmp / "tokens.npy", np.concatenate(self._row_tokens) if self._row_tokens
                    else np.zeros(0, dtype=np.int32), allow_pickle=False)
            np.save(tmp / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                    allow_pickle=False)
            np.save(tmp / "alive.npy", np.array(self._alive, dtype=bool), allow_pickle=False)
            np.save(tmp / "df.npy", self._df, allow_pickle=False)
            (tmp / "vocab.json").write_text(json.dumps(words, ensure_ascii=False))
            if self._bm25 is not None:
                self._bm25.save(str(tmp / "bm25s"), allow_pickle=False, show_progress=False)
            meta = {"format": _FORMAT, "version": _VERSION, "tokenizer": self.tokenizer.to_dict(), "k1": self.k1,
                    "b": self.b, "method": self.method, "rebuild_fraction": self.rebuild_fraction,
                    "rows": len(self._row_ids), "documents": len(self), "built_rows": self._built,
                    "stats": {"n": self._stats_n, "avgdl": self._avgdl}, "changes_since_build": self._changes,
                    "has_matrix": self._bm25 is not None, "bm25s_version": self._bm25s.__version__}
            (tmp / "lexical.json").write_text(json.dumps(meta, indent=1))
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, mmap: bool = False) -> LexicalIndex:
        """Open an index written by :meth:`save`, in exactly the saved state. ``mmap`` maps the bm25s matrix
        from disk instead of reading it into memory."""
        root = Path(folder)
        try:
            meta = json.loads((root / "lexical.json").read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{root} holds no readable lexical index ({exc}); build one with "
                              "LexicalIndex().add(ids, texts) and save(folder)") from exc
        if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise ConfigError(f"{root} is not an embedopt lexical index of version {_VERSION}; rebuild it from the "
                              "documents")
        try:
            index = cls(tokenizer=Tokenizer.from_dict(meta["tokenizer"]), k1=meta["k1"], b=meta["b"],
                        method=meta["method"], rebuild_fraction=meta["rebuild_fraction"])
            ids = np.load(root / "ids.npy", allow_pickle=False)
            flat = np.load(root / "tokens.npy", allow_pickle=False)
            offsets = np.load(root / "offsets.npy", allow_pickle=False)
            alive = np.load(root / "alive.npy", allow_pickle=False)
            df = np.load(root / "df.npy", allow_pickle=False)
            words = json.loads((root / "vocab.json").read_text())
            n = int(meta["rows"])
            ok = (len(ids) == len(alive) == len(offsets) - 1 == n and int(offsets[-1]) == len(flat)
                  and (not len(flat) or int(flat.max()) < len(words)) and len(df) <= len(words)
                  and int(alive.sum()) == int(meta["documents"]) and 0 <= int(meta["built_rows"]) <= n)
            bm25 = None
            if meta["has_matrix"]:
                bm25 = index._bm25s.BM25.load(str(root / "bm25s"), mmap=mmap, load_vocab=False,
                                              show_progress=False)
                ok = ok and int(bm25.scores["num_docs"]) == int(meta["built_rows"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"the lexical index in {root} is damaged or incomplete ({exc}); rebuild it from the "
                              "documents") from exc
        if not ok:
            raise ConfigError(f"the lexical index in {root} is damaged: its files disagree on the number of rows "
                              f"({n} expected); rebuild it from the documents")
        index._vocab = {w: t for t, w in enumerate(words)}
        index._row_ids = [str(i) for i in ids]
        index._row_tokens = [flat[offsets[r]:offsets[r + 1]].astype(np.int32) for r in range(n)]
        index._alive = [bool(a) for a in alive]
        index._row_of = {i: r for r, i in enumerate(index._row_ids) if index._alive[r]}
        index._df = df.astype(np.int64)
        index._bm25, index._built = bm25, int(meta["built_rows"])
        index._stats_n, index._avgdl = int(meta["stats"]["n"]), float(meta["stats"]["avgdl"])
        index._changes = int(meta["changes_since_build"])
        return index


def _doc_freqs(rows: Sequence[np.ndarray], vocab_size: int) -> np.ndarray:
    """How many rows contain each term."""
    if not rows or not vocab_size:
        return np.zeros(vocab_size, dtype=np.int64)
    lengths = np.array([len(t) for t in rows], dtype=np.int64)
    keys = np.sort(np.repeat(np.arange(len(rows), dtype=np.int64), lengths) * vocab_size
                   + np.concatenate(rows).astype(np.int64))
    first = np.ones(len(keys), dtype=bool)  # the first (row, term) of each run: one per document and term
    first[1:] = keys[1:] != keys[:-1]
    return np.bincount(keys[first] % vocab_size, minlength=vocab_size).astype(np.int64)
