"""A vector store with a BM25 index beside it: the two halves of hybrid retrieval, kept in step.

:class:`HybridStore` wraps any embedopt store (:class:`~embedopt.stores.QuantizedIndex`,
:class:`~embedopt.stores.EdgeStore`, :class:`~embedopt.stores.QdrantStore`) and a
:class:`~embedopt.lexical.LexicalIndex`. It is itself a store (``add``, ``delete``, ``get``, ``search`` go to the
vectors as before), and every write reaches both sides with the same ids: the lexical side indexes the text that
was embedded (the payload's ``text_key``, or ``texts=`` where the payload does not hold it plainly), a delete —
by ids or by filter — masks the same ids there, and the BM25 statistics are rebuilt once the changes pass the
lexical index's ``rebuild_fraction``. :meth:`HybridStore.search_lexical` applies the same metadata filter as the
vector search (the store evaluates it; BM25 scores only the ids that match), so both sides see the same documents.

:meth:`HybridStore.save` writes the lexical index into the store's own folder (``<folder>/lexical/``), so the
two travel and load together. Fusion of the two result lists is :mod:`embedopt.fusion`'s; the
:class:`~embedopt.retrieval.Retriever` does it when built with ``fusion=``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError
from .fingerprint import Fingerprint
from .lexical import LexicalIndex, LexicalResult
from .stores.base import Record, Rescore, SearchResult, VectorStore, as_ids
from .stores.filters import Filter, parse_filter

__all__ = ["LEXICAL_FOLDER", "HybridStore"]

LEXICAL_FOLDER = "lexical"
"""The lexical index's folder inside a saved store's folder."""


class HybridStore:
    """A vector store and a BM25 index over the same documents (same ids, same texts).

    .. code-block:: python

        store = HybridStore(QuantizedIndex(embedder.fingerprint("document")))
        retriever = Retriever(embedder, store, fusion="rrf")   # or "convex:0.6", fit with embedopt eval --fusion
        retriever.add_texts(texts, ids=ids, metadatas=metas)
        retriever.retrieve("ls -la", where={"section": "1"})   # the filter applies to both sides
        store.save("./index")                                  # the vectors, and the BM25 index in ./index/lexical

    Args:
        store: the vector store (any embedopt store); its ``add``/``delete``/``search`` keep working through this.
        lexical: the BM25 index (default: a new :class:`~embedopt.lexical.LexicalIndex`, English stemming). Give
            one that :meth:`~embedopt.lexical.LexicalIndex.load` opened to resume a saved index.
        text_key: the payload field holding the text that was embedded (``"text"`` for the Retriever,
            ``"page_content"`` for the LangChain store).
    """

    def __init__(self, store: VectorStore, lexical: LexicalIndex | None = None, *, text_key: str = "text") -> None:
        if isinstance(store, HybridStore):
            raise ConfigError("the store is already a HybridStore; wrap the vector store itself")
        if not isinstance(store, VectorStore):
            raise ConfigError(f"store must be an embedopt vector store, got {type(store).__name__}")
        if lexical is not None and not isinstance(lexical, LexicalIndex):
            raise ConfigError(f"lexical must be a LexicalIndex, got {type(lexical).__name__}")
        self.store = store
        self.fingerprint: Fingerprint = store.fingerprint
        self.dim: int = store.dim
        self.lexical = lexical if lexical is not None else LexicalIndex()
        self.text_key = text_key
        if len(self.lexical) and len(self.lexical) != len(store):
            raise ConfigError(f"the lexical index holds {len(self.lexical)} documents, the store {len(store)}: they "
                              "were not saved together. Rebuild the lexical index with HybridStore.rebuild_lexical()")

    # ------------------------------------------------------------------------------------------- describe
    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, id_: object) -> bool:
        return id_ in self.store  # type: ignore[operator]

    def __repr__(self) -> str:
        return f"HybridStore({self.store!r}, {self.lexical!r}, text_key={self.text_key!r})"

    # ------------------------------------------------------------------------------------------- write
    def _texts(self, payloads: list[dict[str, Any]] | None, n: int) -> list[str]:
        if payloads is None:
            raise InputError(f"a hybrid store indexes each document's text: give payloads with the text under "
                             f"{self.text_key!r} (Retriever.add_texts does), or texts=; nothing was added")
        texts = [p.get(self.text_key) for p in payloads]
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise InputError(f"payload #{bad} has no text under {self.text_key!r} for the lexical index; add it, set "
                             "text_key to the field that holds the text, or pass texts=; nothing was added", bad)
        return texts  # type: ignore[return-value]

    def add(self, ids: Any, vectors: Any, payloads: list[dict[str, Any]] | None = None, *,
            texts: Sequence[str] | None = None) -> None:
        """Add to both sides; ``texts`` (the text that was embedded) default to ``payload[text_key]``. Bad input
        is refused before either side changes."""
        id_list = as_ids(ids)
        if texts is None:
            text_list = self._texts(payloads, len(id_list))
        else:
            if isinstance(texts, str):
                raise InputError("texts must be a list of strings, not one string; nothing was added")
            text_list = list(texts)
        if len(text_list) != len(id_list):
            raise InputError(f"{len(id_list)} ids and {len(text_list)} texts must match; nothing was added")
        bad = next((i for i, t in enumerate(text_list) if not isinstance(t, str)), None)
        if bad is not None:
            raise InputError(f"text #{bad} is a {type(text_list[bad]).__name__}, not a string; nothing was added",
                             bad)
        if len(set(id_list)) != len(id_list):
            raise InputError("ids must be unique within one add(); nothing was added")
        self.store.add(id_list, vectors, payloads)  # checks the vectors; raises before the lexical side changes
        self.lexical.add(id_list, text_list)

    def delete(self, ids: Any = None, *, where: Filter | None = None) -> int:
        """Delete ``ids``, or those matching ``where`` (both: the ids that match), from both sides."""
        if where is not None:
            parse_filter(where)  # a bad filter is refused before anything is deleted
            gone = [r.id for r in self.store.get(ids, where=where)]
            n = self.store.delete(ids, where=where)
        else:
            if ids is None:
                raise ConfigError("delete() needs ids or where=; clear() deletes everything")
            gone = as_ids(ids)
            n = self.store.delete(gone)
        if gone:
            self.lexical.delete(gone)
        return n

    def clear(self) -> None:
        self.store.clear()
        self.lexical.delete(self.lexical.ids)
        self.lexical.rebuild()

    def close(self) -> None:
        """Close the vector store when it holds files open (an EdgeStore); the lexical index holds none."""
        close = getattr(self.store, "close", None)
        if callable(close):
            close()

    def rebuild_lexical(self, *, batch: int = 10_000) -> None:
        """Rebuild the lexical side from the texts the store's payloads hold (after an index was saved without
        it, or to change the tokenizer: set ``self.lexical`` to a new empty index first)."""
        self.lexical.delete(self.lexical.ids)
        records = self.store.get()
        for start in range(0, len(records), batch):
            chunk = records[start:start + batch]
            self.lexical.add([r.id for r in chunk], self._texts([r.payload for r in chunk], len(chunk)))
        self.lexical.rebuild()

    # ------------------------------------------------------------------------------------------- read
    def get(self, ids: Any = None, *, where: Filter | None = None, with_vectors: bool = False,
            limit: int | None = None) -> list[Record]:
        return self.store.get(ids, where=where, with_vectors=with_vectors, limit=limit)

    def get_payloads(self, ids: list[str]) -> list[dict[str, Any]]:
        return self.store.get_payloads(ids)

    def search(self, queries: Any, k: int = 10, *, oversample: float = 4.0, rescore: Rescore = "int8",
               where: Filter | None = None) -> SearchResult:
        """The vector side's search, unchanged."""
        return self.store.search(queries, k, oversample=oversample, rescore=rescore, where=where)

    def allowed_ids(self, where: Filter | None) -> list[str] | None:
        """The ids matching ``where`` (evaluated by the vector store, on its payloads), or ``None`` for all."""
        if parse_filter(where) is None:
            return None
        return [r.id for r in self.store.get(where=where)]

    def search_lexical(self, queries: str | Sequence[str], k: int = 10, *,
                       where: Filter | None = None) -> LexicalResult:
        """BM25's top ``k`` per query among the documents matching ``where`` (the vector search's filter)."""
        return self.lexical.search(queries, k, allowed=self.allowed_ids(where))

    # ------------------------------------------------------------------------------------------- files
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Save both sides into ``folder``: a :class:`~embedopt.stores.QuantizedIndex` saves its vectors there, an
        :class:`~embedopt.stores.EdgeStore` is flushed in its own folder (give that folder); a Qdrant server keeps
        its own data. The lexical index goes to ``folder/lexical`` in every case."""
        store: Any = self.store
        root = Path(folder)
        if hasattr(store, "save"):
            root = Path(store.save(root))
        elif hasattr(store, "flush"):
            store.flush()
        self.lexical.save(root / LEXICAL_FOLDER)
        return root

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, store: VectorStore | None = None,
             expect: Fingerprint | None = None, text_key: str = "text") -> HybridStore:
        """Open what :meth:`save` wrote: the QuantizedIndex in ``folder`` (or the ``store`` you reopened, for an
        EdgeStore or a Qdrant server) and the lexical index in ``folder/lexical``. A store saved without a
        lexical index gets one built from its payloads' texts."""
        root = Path(folder)
        if store is None:
            from .stores import QuantizedIndex

            store = QuantizedIndex.load(root, expect=expect)
        elif expect is not None and expect.space_id != store.fingerprint.space_id:
            raise ConfigError(f"the store holds vectors of {store.fingerprint.id}, not of {expect.id}")
        if (root / LEXICAL_FOLDER).is_dir():
            return cls(store, LexicalIndex.load(root / LEXICAL_FOLDER), text_key=text_key)
        hybrid = cls(store, text_key=text_key)
        hybrid.rebuild_lexical()
        return hybrid
