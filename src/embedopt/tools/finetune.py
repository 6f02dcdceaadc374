"""Fine-tune an embedding model on a folder of unlabeled documents, and measure what it gained.

The steps, each usable on its own:

1. :func:`load_documents` reads a folder: a BEIR-format corpus (``corpus.jsonl``), a ``.jsonl`` file, or text files.
2. :func:`split_documents` holds out a test split *by document* (a stable hash of the id): no training pair ever
   comes from a test document.
3. Pairs without labels: :func:`heuristic_pairs` (documented below), or :class:`LLMQueryWriter`, which asks any
   OpenAI-compatible chat endpoint for the questions a document answers and caches the answers.
4. :func:`train` fine-tunes a sentence-transformers model, or a static (model2vec) model through
   sentence-transformers' ``StaticEmbedding``, with ``MultipleNegativesRankingLoss`` (in-batch negatives; no
   document twice in a batch) wrapped in ``MatryoshkaLoss``, so that truncated prefixes keep their quality. It
   runs on CUDA when there is a GPU, else on the CPU, with a progress bar, and writes the model atomically.
5. :func:`finetune` does all of it and scores the held-out split before and after at several Matryoshka dims:
   NDCG@10 against the dataset's own judgements when the folder is a BEIR dataset with qrels, otherwise against
   synthetic queries made the same way from the held-out documents.

A trained model is new weights, so it is a new fingerprint: its vectors get their own cache entries, an index
built with the old model refuses it, and an index moves to it through ``embedopt migrate``.

**The heuristic**, per document, in this order, up to ``per_doc`` pairs:

* the first sentence as the query, the title and the remaining text as the passage;
* a later sentence chosen at random (an "inverse cloze" pair), the title and the text without it as the passage.

Sentences under 3 words are skipped, queries are cut to 32 words, and a document whose remaining text is under
8 words gives no pair.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._extras import require
from .._files import atomic_folder, atomic_write_text, cache_dir
from .._sqlite import connect
from ..errors import ConfigError
from ..eval.beir import BeirDataset, load_beir
from ..providers._local import resolve_model
from ..specs import local_model, parse_model

__all__ = ["Document", "FinetuneReport", "FinetuneSettings", "LLMQueryWriter", "Pair", "finetune",
           "heuristic_pairs", "load_documents", "split_documents", "train"]

logger = logging.getLogger(__name__)
META = "embedopt-finetune.json"
REPORT = "finetune-report.json"
_TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """``title + " " + text``: what is embedded for the document (BEIR's join)."""
        return f"{self.title} {self.text}".strip()


@dataclass(frozen=True)
class Pair:
    query: str
    passage: str
    doc_id: str


@dataclass(frozen=True)
class FinetuneSettings:
    """How to train; :data:`TRANSFORMER` and :data:`STATIC` are the defaults for each kind of model."""

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-5
    max_seq_length: int = 128
    """Tokens per text while training (a transformer only; the saved model keeps its own limit)."""
    warmup_ratio: float = 0.1
    matryoshka_dims: tuple[int, ...] | None = None
    """``None``: the model's dim and every one of 768, 512, 256, 128, 64 below it."""
    per_doc: int = 2
    max_pairs: int = 6000
    """At most this many training pairs (sampled): what bounds training time on a large folder."""
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "max_seq_length", "per_doc", "max_pairs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError("batch_size must be >= 2: the loss takes its negatives from the rest of the batch")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"test_fraction must be between 0 and 1, got {self.test_fraction}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")


TRANSFORMER = FinetuneSettings()
"""About 7 minutes on 2 CPU cores for the 2,060 training documents of manpages (about 4,000 pairs)."""
STATIC = FinetuneSettings(epochs=4, batch_size=256, learning_rate=0.05)
"""A static model is a table of token vectors: large batches, a large learning rate, a few epochs, seconds."""


# ------------------------------------------------------------------------------------------------ documents
def load_documents(path: str | os.PathLike[str]) -> list[Document]:
    """Documents from a BEIR-format folder (its ``corpus.jsonl``), a ``.jsonl`` file (``_id``/``id``, ``title``,
    ``text``), or a folder of text files (``.txt``, ``.md``, ``.rst``; the id is the relative path, the title
    the first line when it is a Markdown heading, else the file name)."""
    root = Path(path)
    if root.is_dir() and (root / "corpus.jsonl").is_file():
        root = root / "corpus.jsonl"
    docs: list[Document] = []
    if root.is_file() and root.suffix == ".jsonl":
        with root.open(encoding="utf-8") as lines:
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise ConfigError(f"{root} line {n} is not JSON: {exc}") from exc
                text = row.get("text") if isinstance(row, dict) else None
                if not isinstance(text, str) or not text.strip():
                    raise ConfigError(f"{root} line {n} has no text in field 'text'")
                docs.append(Document(str(row.get("_id", row.get("id", n))), str(row.get("title") or ""), text))
    elif root.is_dir():
        for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES):
            body = f.read_text(encoding="utf-8", errors="replace").strip()
            if not body:
                continue
            first, _, rest = body.partition("\n")
            title, text = (first.lstrip("#").strip(), rest.strip()) if first.startswith("#") else (f.stem, body)
            docs.append(Document(str(f.relative_to(root)), title, text or body))
    else:
        raise ConfigError(f"{path} is neither a folder nor a .jsonl file: give a BEIR-format folder, a .jsonl "
                          "file, or a folder of .txt/.md/.rst files")
    if not docs:
        raise ConfigError(f"no documents found in {path} (looked for corpus.jsonl, .jsonl rows, or "
                          f"{'/'.join(_TEXT_SUFFIXES)} files)")
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"document ids repeat in {path}: each document needs its own id")
    return docs


def _is_test(doc_id: str, fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_documents(docs: Sequence[Document], *, test_fraction: float = 0.2,
                    seed: int = 0) -> tuple[list[Document], list[Document]]:
    """(train, test) by a stable hash of each id: the same document lands on the same side on every run and
    whatever the folder's order, and a document added later does not move the others."""
    train_docs = [d for d in docs if not _is_test(d.id, test_fraction, seed)]
    test_docs = [d for d in docs if _is_test(d.id, test_fraction, seed)]
    if not train_docs or not test_docs:
        raise ConfigError(f"{len(docs)} documents are too few to split {1 - test_fraction:.0%}/{test_fraction:.0%}"
                          ": give more documents")
    return train_docs, test_docs


# ---------------------------------------------------------------------------------------------------- pairs
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9/$-])")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def _words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def heuristic_pairs(docs: Sequence[Document], *, per_doc: int = 2, seed: int = 0) -> list[Pair]:
    """(query, passage) pairs made from the documents alone; see the module docstring for the rules."""
    rng = random.Random(seed)
    pairs: list[Pair] = []
    for doc in docs:
        sents = _sentences(doc.text)
        made = 0
        for at in [0, *rng.sample(range(1, len(sents)), len(sents) - 1)] if sents else []:
            if made >= per_doc:
                break
            query = sents[at]
            rest = " ".join(sents[:at] + sents[at + 1:])
            if len(query.split()) < 3 or len(rest.split()) < 8:
                continue
            pairs.append(Pair(_words(query, 32), replace(doc, text=rest).full_text, doc.id))
            made += 1
    return pairs


_LLM_PROMPT = ("Write {n} different short search queries that a user of a search engine would type to find the "
               "document below, one per line, with no numbering and nothing else.\n\nDocument:\n{doc}")


class LLMQueryWriter:
    """Ask an OpenAI-compatible chat endpoint for the search queries each document answers.

    Answers are cached in SQLite (``$EMBEDOPT_HOME/llm-queries.sqlite3``, keyed by model, prompt and the
    document's text; never by the key), so a run that fails half way resumes without paying again.

    Args:
        model: the chat model's name on that endpoint.
        base_url: the endpoint (``http://127.0.0.1:8000/v1``); ``None`` is OpenAI's own.
        api_key: the key; ``None`` reads ``OPENAI_API_KEY`` (a local server may want none).
        queries_per_doc: queries asked for per document.
        max_chars: the document is cut to this many characters in the prompt.
        concurrency: requests in flight at once.
    """

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 queries_per_doc: int = 2, max_chars: int = 2000, concurrency: int = 4, timeout: float = 60.0,
                 max_retries: int = 3, cache_path: str | os.PathLike[str] | None = None) -> None:
        openai = require("openai", extra="openai", feature="LLMQueryWriter")
        if queries_per_doc < 1:
            raise ConfigError(f"queries_per_doc must be >= 1, got {queries_per_doc}")
        self.model = model
        self.queries_per_doc = queries_per_doc
        self.max_chars = max_chars
        self.concurrency = max(1, concurrency)
        key = api_key or os.environ.get("OPENAI_API_KEY") or "none"
        self._key = key
        self._client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=max_retries)
        self._db_path = Path(cache_path) if cache_path else cache_dir() / "llm-queries.sqlite3"
        self._lock = threading.Lock()
        self._db = connect(self._db_path, schema="CREATE TABLE IF NOT EXISTS answers "
                                                 "(key TEXT PRIMARY KEY, queries TEXT NOT NULL)")

    def __repr__(self) -> str:
        return f"LLMQueryWriter(model={self.model!r}, base_url={str(self._client.base_url)!r})"

    def _prompt(self, doc: Document) -> str:
        return _LLM_PROMPT.format(n=self.queries_per_doc, doc=doc.full_text[: self.max_chars])

    def _ask(self, doc: Document) -> list[str]:
        prompt = self._prompt(doc)
        key = hashlib.sha256(json.dumps([self.model, prompt]).encode()).hexdigest()
        with self._lock:
            row = self._db.execute("SELECT queries FROM answers WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return list(json.loads(row[0]))
        import openai

        from ..providers._api import api_error

        resume = f" on document {doc.id!r}. Pairs made so far are cached: run again to resume"
        try:
            answer = self._client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": prompt}], temperature=0)
            content = answer.choices[0].message.content or ""
        except openai.APIStatusError as exc:
            raise api_error("llm", self.model, status=exc.status_code, message=exc.message + resume,
                            secret=self._key) from None
        except (openai.APIError, IndexError, AttributeError) as exc:
            raise api_error("llm", self.model, status=None, message=f"{type(exc).__name__}: {exc}" + resume,
                            secret=self._key) from None
        queries = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip('"') for line in content.splitlines()]
        queries = [_words(q, 32) for q in queries if len(q.split()) >= 2][: self.queries_per_doc]
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, json.dumps(queries)))
        return queries

    def pairs(self, docs: Sequence[Document], *, show_progress: bool = True) -> list[Pair]:
        """One pair per query the LLM wrote: (query, the whole document)."""
        tqdm = require("tqdm", extra="local", feature="LLMQueryWriter").tqdm
        with ThreadPoolExecutor(self.concurrency) as pool:
            answers = list(tqdm(pool.map(self._ask, docs), total=len(docs), desc="LLM queries", unit="doc",
                                disable=not show_progress))
        return [Pair(q, doc.full_text, doc.id) for doc, queries in zip(docs, answers, strict=True) for q in queries]


# ------------------------------------------------------------------------------------------------- training
def _batches(pairs: Sequence[Pair], batch_size: int, rng: random.Random) -> list[list[Pair]]:
    """Shuffled batches in which no document appears twice: a second pair of a document in the same batch
    would be scored as a negative of the first (sentence-transformers' NO_DUPLICATES sampler, by document). A pair
    left alone at the end has no negatives and is not trained on."""
    pending = list(pairs)
    rng.shuffle(pending)
    batches: list[list[Pair]] = []
    while pending:
        batch: list[Pair] = []
        seen: set[str] = set()
        later: list[Pair] = []
        for p in pending:
            if len(batch) < batch_size and p.doc_id not in seen:
                batch.append(p)
                seen.add(p.doc_id)
            else:
                later.append(p)
        if len(batch) >= 2:
            batches.append(batch)
        elif not later:
            break
        pending = later
    return batches


def _matryoshka_dims(native: int, dims: Sequence[int] | None) -> list[int]:
    from .evaluate import default_dims

    chosen = sorted({int(d) for d in (dims or default_dims(native))}, reverse=True)
    bad = [d for d in chosen if not 0 < d <= native]
    if bad:
        raise ConfigError(f"matryoshka dims {bad} are outside 1..{native} (the model's dim)")
    return chosen


def train(pairs: Sequence[Pair], base: str | os.PathLike[str], output_dir: str | os.PathLike[str], *,
          settings: FinetuneSettings | None = None, device: str | None = None,
          show_progress: bool = True) -> Path:
    """Fine-tune ``base`` on ``pairs`` and write the model to ``output_dir``; return the folder.

    ``base`` is a model spec (``minilm``, ``st:NAME``, a folder, ``static:distill``, ``static:FOLDER``): a
    sentence-transformers model (hub id, packaged copy or folder) or a model2vec folder; the output
    is the same kind (a static model is trained through ``StaticEmbedding`` and written back as model2vec, so
    :class:`~embedopt.providers.StaticProvider` and model2vec load it). ``device=None`` takes CUDA when present.
    """
    s = settings or TRANSFORMER
    if len(pairs) < 2:
        raise ConfigError(f"{len(pairs)} training pairs are too few: give more documents")
    torch = require("torch", extra="local", feature="embedopt finetune")
    st = require("sentence_transformers", extra="local", feature="embedopt finetune", package="sentence-transformers")
    try:
        from sentence_transformers.sentence_transformer.losses import (
            MatryoshkaLoss,
            MultipleNegativesRankingLoss,
        )
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import (  # type: ignore[no-redef]
            MatryoshkaLoss,
            MultipleNegativesRankingLoss,
        )
        from sentence_transformers.models import StaticEmbedding  # type: ignore[no-redef]

    tqdm = require("tqdm", extra="local", feature="embedopt finetune").tqdm
    started = time.perf_counter()
    rng = random.Random(s.seed)
    torch.manual_seed(s.seed)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind, location = local_model(os.fspath(base))
    static = kind == "static"
    folder = Path(location).expanduser()
    if static:
        if not folder.is_dir():
            raise ConfigError(f"a static model to train must be a folder here, got {os.fspath(base)!r}")
        model = st.SentenceTransformer(modules=[StaticEmbedding.from_model2vec(str(folder))], device=device)
        source = folder.resolve().name
    else:
        resolved = resolve_model(location)
        model = st.SentenceTransformer(resolved.location, device=device)
        source = resolved.name
        saved_length = model.max_seq_length
        model.max_seq_length = min(s.max_seq_length, saved_length or s.max_seq_length)
    model.to(torch.float32)  # a static table may be stored in float16; Adam's updates need float32
    native = int(model.get_embedding_dimension())
    dims = _matryoshka_dims(native, s.matryoshka_dims)
    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), dims)
    if len(pairs) > s.max_pairs:
        pairs = rng.sample(list(pairs), s.max_pairs)
    plan = [_batches(pairs, s.batch_size, random.Random(s.seed + e)) for e in range(s.epochs)]
    steps = sum(len(b) for b in plan)
    if steps == 0:
        raise ConfigError("the pairs come from a single document: give more documents")
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.learning_rate, weight_decay=0.0 if static else 0.01)
    warmup = max(1, int(steps * s.warmup_ratio))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))))
    model.train()
    tokenize = getattr(model, "preprocess", None) or model.tokenize  # renamed in sentence-transformers 6
    bar = tqdm(total=steps, desc=f"fine-tune {source}", unit="step", disable=not show_progress)
    losses: list[float] = []
    for batches in plan:
        for batch in batches:
            features = [tokenize([p.query for p in batch]), tokenize([p.passage for p in batch])]
            features = [{k: v.to(model.device) if hasattr(v, "to") else v for k, v in f.items()} for f in features]
            value = loss(features, None)
            value.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(float(value.item()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    seconds = round(time.perf_counter() - started, 1)
    meta = {"base": source, "kind": "static" if static else "sentence-transformers", "pairs": len(pairs),
            "steps": steps, "matryoshka_dims": dims, "settings": asdict(s), "device": str(model.device),
            "seconds": seconds, "first_loss": round(losses[0], 4), "last_loss": round(sum(losses[-10:]) / len(
                losses[-10:]), 4)}
    with atomic_folder(output_dir) as tmp:
        if static:
            _save_static(model[0], folder, tmp)
        else:
            model.max_seq_length = saved_length
            model.save(str(tmp))
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    logger.info("trained %s on %d pairs in %.0fs (%s): %s", source, len(pairs), seconds, model.device, output_dir)
    return Path(output_dir)


def _save_static(module: Any, source: Path, out: Path) -> None:
    """Write a trained ``StaticEmbedding`` back as a model2vec folder, keeping the source's tokenizer and config."""
    from model2vec import StaticModel

    original = StaticModel.from_pretrained(str(source))
    vectors = module.embedding.weight.detach().to("cpu").float().numpy()
    trained = StaticModel(vectors=vectors, tokenizer=original.tokenizer, config=dict(original.config),
                          normalize=bool(original.normalize), base_model_name=original.base_model_name,
                          language=original.language)
    trained.save_pretrained(str(out))


# ------------------------------------------------------------------------------------------------ evaluation
@dataclass
class FinetuneReport:
    base: str
    """The spec of the model before training."""
    output: str
    """The trained model's folder; use it as a model spec."""
    kind: str
    pairs: int
    pair_source: str
    """``heuristic`` or ``llm:<model>``."""
    train_documents: int
    test_documents: int
    test_queries: int
    judged_by: str
    """``qrels``: the dataset's own judgements on held-out documents; ``synthetic``: queries made the same way
    from the held-out documents."""
    train_seconds: float
    device: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    """Per dim: NDCG@10 on the held-out split ``"before"`` and ``"after"``; ``"absolute_change"`` (after −
    before, in NDCG points) and ``"relative_change"`` (after / before − 1), each with a 95% paired-bootstrap
    interval over the held-out queries (``"absolute_ci95"``, ``"relative_ci95"``: ``[low, high]``; an interval that
    contains 0 is a change the held-out set cannot tell from noise); plus ``"reference"``: the reference model's
    NDCG@10 at that dim, when there is one."""
    reference: str | None = None
    """A second model scored and timed beside both (the transformer a static model was distilled from)."""
    speed: dict[str, float] = field(default_factory=dict)
    """Documents per second of the held-out split embedded (no cache), per model, measured in the same run."""
    warnings: list[str] = field(default_factory=list)
    """Why the figures may not hold (too few held-out queries)."""
    bootstrap: dict[str, Any] = field(default_factory=dict)
    """How the intervals were drawn: ``{"resamples", "seed", "level"}``."""
    loadavg: list[float] = field(default_factory=list)
    """``os.getloadavg()`` at the end: the speed figures of a busy machine are noisy."""

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")

    def table(self) -> str:
        lines = [f"NDCG@10 on {self.test_queries} held-out queries over {self.test_documents} held-out documents "
                 f"({self.judged_by}); trained on {self.pairs} {self.pair_source} pairs from "
                 f"{self.train_documents} documents in {self.train_seconds:.0f}s on {self.device}",
                 f"{'dim':>5}  {'before':>7}  {'after':>7}  {'change':>7}" + (f"  {self.reference}" if self.reference
                                                                           else "")]
        lines[1] = (f"{'dim':>5}  {'before':>7}  {'after':>7}  {'relative change (95% CI)':>26}  "
                    f"{'absolute (95% CI)':>27}" + (f"  {self.reference}" if self.reference else ""))
        lines += [f"{r['dim']:>5}  {r['before']:>7.4f}  {r['after']:>7.4f}  "
                  f"{r['relative_change']:>+7.1%} [{r['relative_ci95'][0]:+.1%}, {r['relative_ci95'][1]:+.1%}]"
                  f"  {r['absolute_change']:>+7.4f} [{r['absolute_ci95'][0]:+.4f}, {r['absolute_ci95'][1]:+.4f}]"
                  + (f"  {r['reference']:>7.4f}" if "reference" in r else "") for r in self.rows]
        lines += [f"speed {k}: {v:,.0f} documents/s" for k, v in self.speed.items()]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def held_out(source: str | os.PathLike[str], test_docs: Sequence[Document], *, seed: int = 0) -> BeirDataset:
    """The evaluation set over ``test_docs``: the dataset's own queries whose relevant documents are all held out
    (when ``source`` is a BEIR folder with qrels), else one heuristic query per held-out document, searched
    against the held-out documents with that query's sentence taken out."""
    root = Path(source)
    test_ids = {d.id for d in test_docs}
    if root.is_dir() and (root / "qrels" / "test.tsv").is_file() and (root / "queries.jsonl").is_file():
        ds = load_beir(root)
        qrels = {q: r for q, r in ds.qrels.items() if r and set(r) <= test_ids and any(v > 0 for v in r.values())}
        if qrels:
            corpus = {d.id: {"title": d.title, "text": d.text} for d in test_docs}
            return BeirDataset(f"{ds.name}-heldout", corpus, {q: ds.queries[q] for q in qrels}, qrels)
    pairs = {p.doc_id: p for p in heuristic_pairs(test_docs, per_doc=1, seed=seed)}
    if not pairs:
        raise ConfigError("the held-out documents give no evaluation queries: give longer or more documents")
    corpus = {d.id: {"title": "", "text": pairs[d.id].passage if d.id in pairs else d.full_text} for d in test_docs}
    queries = {f"q-{d}": p.query for d, p in pairs.items()}
    return BeirDataset(f"{root.name}-heldout-synthetic", corpus, queries, {f"q-{d}": {d: 1} for d in pairs})


def _per_query_ndcg(model: str, ds: BeirDataset, dims: Sequence[int], cache: str | None) -> dict[int, np.ndarray]:
    """NDCG@10 of each query of ``ds`` (in :attr:`BeirDataset.query_ids` order), per dim, float32, exact search
    with ties ordered by a hash of the doc id; a dim above the model's own is left out."""
    from ..codec import Codec
    from ..embedder import Embedder
    from ..eval.metrics import ndcg_at_k, tie_keys, top_k

    embedder = Embedder.from_spec(model, cache=cache, show_progress=False)
    full_docs = embedder.embed_full(ds.doc_texts(), "document")
    full_queries = embedder.embed_full(ds.query_texts(), "query")
    keys, ids = tie_keys(ds.doc_ids), ds.doc_ids
    out: dict[int, np.ndarray] = {}
    for dim in dims:
        if dim > full_docs.shape[1]:
            continue
        codec = Codec(dim)
        best = top_k(codec.derive_float(full_queries) @ codec.derive_float(full_docs).T, 10, tiebreak=keys)
        out[dim] = np.array([ndcg_at_k([ids[j] for j in row], ds.qrels[q], 10)
                             for q, row in zip(ds.query_ids, best, strict=True)])
    return out


def _ndcg_by_dim(model: str, ds: BeirDataset, dims: Sequence[int], cache: str | None) -> dict[int, float]:
    return {d: round(float(v.mean()), 4) for d, v in _per_query_ndcg(model, ds, dims, cache).items()}


BOOTSTRAP: dict[str, Any] = {"resamples": 2000, "seed": 0, "level": 0.95}
MIN_QUERIES = 200
"""Fewer held-out queries than this: a warning (on 463 queries a +0.3% change was noise)."""


def _change(before: np.ndarray, after: np.ndarray) -> dict[str, Any]:
    """Absolute and relative change of the mean, with paired-bootstrap percentile intervals (queries resampled
    with replacement, the same resample for both models)."""
    b, a = float(before.mean()), float(after.mean())
    rng = np.random.default_rng(BOOTSTRAP["seed"])
    picks = rng.integers(0, len(before), size=(int(BOOTSTRAP["resamples"]), len(before)))
    mb, ma = before[picks].mean(axis=1), after[picks].mean(axis=1)
    tail = (1 - float(BOOTSTRAP["level"])) / 2 * 100
    absolute = np.percentile(ma - mb, [tail, 100 - tail])
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.percentile(np.where(mb > 0, ma / mb - 1, np.nan), [tail, 100 - tail])
    return {"absolute_change": round(a - b, 4), "absolute_ci95": [round(float(x), 4) for x in absolute],
            "relative_change": round(a / b - 1, 4) if b else math.nan,
            "relative_ci95": [round(float(x), 4) for x in relative]}


def _docs_per_second(model: str, texts: list[str]) -> float:
    from ..embedder import Embedder

    embedder = Embedder.from_spec(model, cache=None, show_progress=False)
    best = math.inf
    for _ in range(2):  # the best of two: the first also pays for warming up
        started = time.perf_counter()
        embedder.embed_documents(texts)
        best = min(best, time.perf_counter() - started)
    return round(len(texts) / best, 1)


def finetune(source: str | os.PathLike[str], output_dir: str | os.PathLike[str], *, base: str = "minilm",
             settings: FinetuneSettings | None = None, llm: LLMQueryWriter | None = None,
             eval_dims: Sequence[int] | None = None, reference: str | None = None,
             cache: str | None = "sqlite", device: str | None = None, show_progress: bool = True,
             log: Callable[[str], None] | None = None) -> FinetuneReport:
    """Split ``source`` by document, make pairs from the training side, train ``base`` into ``output_dir``, and
    score both models on the held-out side at ``eval_dims`` (default: the model's dim and 256, 128, 64 below it).

    ``base`` is a model spec (``minilm``, ``st:NAME``, a folder, ``static:distill``, ``static:FOLDER``).
    ``reference`` names a second model spec scored at the same dims and timed beside both (the transformer,
    when training a static model). The report is also written to ``output_dir/finetune-report.json``.
    """
    from ..embedder import Embedder

    say = log or (lambda _m: None)
    s = settings or TRANSFORMER
    docs = load_documents(source)
    train_docs, test_docs = split_documents(docs, test_fraction=s.test_fraction, seed=s.seed)
    if llm is not None:
        pairs, pair_source = llm.pairs(train_docs, show_progress=show_progress), f"llm:{llm.model}"
    else:
        pairs, pair_source = heuristic_pairs(train_docs, per_doc=s.per_doc, seed=s.seed), "heuristic"
    say(f"{len(train_docs)} training documents -> {len(pairs)} {pair_source} pairs; {len(test_docs)} held out")
    kind = "static" if parse_model(base).prefix == "static" else "sentence-transformers"
    native = Embedder.from_spec(base, cache=None, show_progress=False).native_dim
    dims = sorted({d for d in (eval_dims or [native, 256, 128, 64]) if d <= native}, reverse=True)
    ds = held_out(source, test_docs, seed=s.seed)
    say(f"held-out set: {len(ds.queries)} queries over {len(ds.corpus)} documents")
    warnings: list[str] = []
    if len(ds.queries) < MIN_QUERIES:
        warnings.append(f"only {len(ds.queries)} held-out queries qualify (fewer than {MIN_QUERIES}): changes of a "
                        "few percent are within noise; read the 95% intervals, and give more documents or "
                        "queries")
        logger.warning(warnings[-1])
        say(f"warning: {warnings[-1]}")
    before_q = _per_query_ndcg(base, ds, dims, cache)
    out = train(pairs, base, output_dir, settings=s, device=device, show_progress=show_progress)
    meta = json.loads((out / META).read_text())
    after_q = _per_query_ndcg(str(out), ds, dims, cache)
    rows: list[dict[str, Any]] = [
        {"dim": d, "before": round(float(before_q[d].mean()), 4), "after": round(float(after_q[d].mean()), 4),
         **_change(before_q[d], after_q[d])} for d in dims]
    speed: dict[str, float] = {}
    if reference is not None:
        scored = _ndcg_by_dim(reference, ds, dims, cache)  # a dim above the reference's own is left out
        for row in rows:
            if row["dim"] in scored:
                row["reference"] = scored[row["dim"]]
        texts = ds.doc_texts()
        for label, spec in (("before", base), ("after", str(out)), (reference, reference)):
            speed[label] = _docs_per_second(spec, texts)
    report = FinetuneReport(base, str(out), kind, meta["pairs"],
                            pair_source, len(train_docs), len(test_docs), len(ds.queries),
                            "synthetic" if ds.name.endswith("-synthetic") else "qrels", meta["seconds"],
                            meta["device"], rows, reference, speed, warnings, dict(BOOTSTRAP),
                            [round(x, 2) for x in os.getloadavg()])
    report.to_json(out / REPORT)
    return report


def with_overrides(settings: FinetuneSettings, **changes: Any) -> FinetuneSettings:
    """``settings`` with the given fields changed; ``None`` values leave a field as it is."""
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})
