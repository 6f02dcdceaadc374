"""Train a cross-encoder from bi-encoder weights, offline: no trained cross-encoder ships in any package.

The recipe: (query, relevant document) pairs from a BEIR-format dataset labelled 1, each with ``negatives`` hard
negatives labelled 0 (the nearest wrong documents under a fast static model), a fresh one-logit classification
head on the packaged all-MiniLM-L6-v2 encoder, binary cross-entropy, AdamW with linear warm-up and decay. The
result is a plain Hugging Face folder that :class:`~embedopt.rerank.CrossEncoderReranker` loads. It is cached
under ``$EMBEDOPT_HOME/rerankers``, keyed by the data and settings, so ``make reranker`` trains it once.

Train on a dataset other than the one you evaluate on (the Makefile trains on debian-packages, the study
evaluates on manpages).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._extras import require
from .._files import atomic_folder, cache_dir
from ..errors import ConfigError
from ..eval.beir import BeirDataset, load_beir
from ..providers._local import DEFAULT_MODEL, resolve_model

__all__ = ["TrainSettings", "beir_pairs", "cached_cross_encoder", "train_cross_encoder"]

logger = logging.getLogger(__name__)
_META = "embedopt-reranker.json"
Pair = tuple[str, str, float]


@dataclass(frozen=True)
class TrainSettings:
    """The defaults are what ``make reranker`` trains (about 30 minutes on 2 CPU cores, once)."""

    max_queries: int = 2000
    negatives: int = 3
    epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 7e-5
    max_length: int = 96
    seed: int = 0


def beir_pairs(data: BeirDataset, *, max_queries: int, negatives: int, seed: int = 0) -> list[Pair]:
    """Labelled pairs from a BEIR dataset: each sampled query with its relevant documents (1.0) and the
    ``negatives`` nearest non-relevant documents under the distilled static model (0.0)."""
    from ..embedder import Embedder
    from ..providers import StaticProvider
    from ..providers._distill import cached_distill

    rng = random.Random(seed)
    qids = [q for q in data.query_ids if any(s > 0 for s in data.qrels[q].values())]
    rng.shuffle(qids)
    qids = qids[:max_queries]
    doc_ids = data.doc_ids
    static = Embedder(StaticProvider(cached_distill()), show_progress=False)
    texts = data.doc_texts()
    row_of = {d: i for i, d in enumerate(doc_ids)}
    docs = static.embed_documents(texts)
    queries = static.embed([data.queries[q] for q in qids], "query")
    pairs: list[Pair] = []
    sims = queries @ docs.T
    for row, qid in enumerate(qids):
        rel = {d for d, s in data.qrels[qid].items() if s > 0}
        for d in rel:
            pairs.append((data.queries[qid], texts[row_of[d]], 1.0))
        hard = [i for i in np.argsort(-sims[row])[: negatives + len(rel) + 5] if doc_ids[i] not in rel][:negatives]
        pairs.extend((data.queries[qid], texts[i], 0.0) for i in hard)
    rng.shuffle(pairs)
    return pairs


def train_cross_encoder(pairs: Sequence[Pair], output_dir: str | os.PathLike[str], *,
                        base: str | os.PathLike[str] = DEFAULT_MODEL, settings: TrainSettings | None = None,
                        show_progress: bool = True) -> Path:
    """Fine-tune ``base``'s encoder with a one-logit head on labelled pairs; write a cross-encoder folder."""
    s = settings or TrainSettings()
    if not pairs:
        raise ConfigError("no training pairs: give (query, document, label) triples")
    torch = require("torch", extra="local", feature="train_cross_encoder")
    transformers = require("transformers", extra="local", feature="train_cross_encoder")
    tqdm = require("tqdm", extra="local", feature="train_cross_encoder").tqdm
    torch.manual_seed(s.seed)
    resolved = resolve_model(base)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolved.location)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(resolved.location, num_labels=1)
    model.to(device).train()
    steps = s.epochs * ((len(pairs) + s.batch_size - 1) // s.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    started = time.perf_counter()
    order = list(range(len(pairs)))
    bar = tqdm(total=steps, desc="train reranker", disable=not show_progress, unit="step")
    for epoch in range(s.epochs):
        random.Random(s.seed + epoch).shuffle(order)
        for at in range(0, len(order), s.batch_size):
            batch = [pairs[i] for i in order[at: at + s.batch_size]]
            enc = tokenizer([b[0] for b in batch], [b[1] for b in batch], truncation="only_second",
                            max_length=s.max_length, padding=True, return_tensors="pt").to(device)
            logits = model(**enc).logits.view(-1)
            loss = loss_fn(logits, torch.tensor([b[2] for b in batch], dtype=torch.float32, device=device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    out = Path(output_dir)
    with atomic_folder(out) as tmp:
        model.config.sentence_transformers = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
        model.save_pretrained(tmp)
        tokenizer.model_max_length = s.max_length  # what CrossEncoder truncates pairs to by default
        tokenizer.save_pretrained(tmp)
        meta = {"base": resolved.name, "pairs": len(pairs), "settings": asdict(s), "device": device,
                "seconds": round(time.perf_counter() - started, 1)}
        (tmp / _META).write_text(json.dumps(meta, indent=2) + "\n")
    logger.info("trained a cross-encoder on %d pairs in %.0fs: %s", len(pairs), time.perf_counter() - started, out)
    return out


def cached_cross_encoder(dataset: str | os.PathLike[str], *, base: str | os.PathLike[str] = DEFAULT_MODEL,
                         settings: TrainSettings | None = None, show_progress: bool = True) -> Path:
    """The cross-encoder trained on ``dataset`` with ``settings``, training it first when not cached."""
    s = settings or TrainSettings()
    root = Path(dataset)
    stamp = [resolve_model(base).name, root.resolve().name, json.dumps(asdict(s), sort_keys=True)]
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        st = (root / name).stat()
        stamp.append(f"{name}:{st.st_size}:{int(st.st_mtime)}")
    key = hashlib.sha256("|".join(stamp).encode()).hexdigest()[:12]
    folder = cache_dir() / "rerankers" / f"minilm-ce-{root.resolve().name}-{key}"
    if (folder / _META).is_file():
        return folder
    pairs = beir_pairs(load_beir(root), max_queries=s.max_queries, negatives=s.negatives, seed=s.seed)
    return train_cross_encoder(pairs, folder, base=base, settings=s, show_progress=show_progress)
