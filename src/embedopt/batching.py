"""Batching: deduplicate, sort by length, cut into batches within count and token budgets, restore order.

Sorting by length puts texts of similar length in one batch, so padding is small (1.2–1.4x faster on mixed
text); the caller still gets results in its own order. Identical texts in one call are embedded once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._extras import available
from .errors import ConfigError

__all__ = ["Batch", "dedupe", "plan_batches", "progress_bar"]

#: Show a progress bar by default when one call embeds at least this many texts.
PROGRESS_THRESHOLD = 1000


def dedupe(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Unique texts in first-seen order, and for every input position the index of its unique text."""
    first: dict[str, int] = {}
    inverse = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        inverse[i] = first.setdefault(t, len(first))
    return list(first), inverse


@dataclass(frozen=True)
class Batch:
    indices: list[int]
    """Positions in the sequence handed to :func:`plan_batches`."""
    tokens: int
    """Token count (exact or estimated) of the batch, for budgets and the cost ledger."""


def plan_batches(
    texts: Sequence[str],
    *,
    max_batch: int,
    max_batch_tokens: int | None = None,
    token_counts: Sequence[int] | None = None,
) -> list[Batch]:
    """Cut ``texts`` into batches, longest first, each within ``max_batch`` texts and ``max_batch_tokens`` tokens.

    A text longer than the token budget on its own gets a batch of its own (the provider truncates or refuses
    it according to its policy); no text is ever dropped.
    """
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    counts = list(token_counts) if token_counts is not None else [len(t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
    batches: list[Batch] = []
    current: list[int] = []
    tokens = 0
    for i in order:
        t = counts[i]
        over_budget = max_batch_tokens is not None and current and tokens + t > max_batch_tokens
        if len(current) >= max_batch or over_budget:
            batches.append(Batch(current, tokens))
            current, tokens = [], 0
        current.append(i)
        tokens += t
    if current:
        batches.append(Batch(current, tokens))
    return batches


@contextmanager
def progress_bar(total: int, *, enabled: bool | None, desc: str,
                 threshold: int = PROGRESS_THRESHOLD) -> Iterator[Callable[[int], Any]]:
    """Yield an ``update(n)`` callable that drives a tqdm bar when enabled (``None``: only above ``threshold``)."""
    show = (total >= threshold) if enabled is None else enabled
    if not show or total == 0 or not available("tqdm"):
        yield lambda n: None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="text") as bar:
        yield bar.update


async def run_async(batches: Sequence[Batch], call: Callable[[Batch], Awaitable[Any]],
                    *, max_concurrency: int) -> AsyncIterator[tuple[Batch, Any]]:
    """Run ``call`` over ``batches`` with at most ``max_concurrency`` in flight, yielding each as it finishes."""
    sem = asyncio.Semaphore(max(1, max_concurrency))

    async def one(b: Batch) -> tuple[Batch, Any]:
        async with sem:
            return b, await call(b)

    tasks = [asyncio.ensure_future(one(b)) for b in batches]
    try:
        for fut in asyncio.as_completed(tasks):
            yield await fut
    finally:
        for t in tasks:
            t.cancel()
