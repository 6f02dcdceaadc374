"""Dynamic batching across concurrent requests: one queue per served model.

Requests put the texts their cache lookup missed into the model's queue and wait for each text's future. The
queue holds each (input type, text) once: a text asked for by several requests, waiting or already being
computed, is computed once and handed to all of them. Workers take batches out of the queue:

* a batch always contains the oldest waiting text (no text starves), plus texts of similar length around it
  from a window of the oldest waiting texts, sorted by length, under a budget of padded tokens (texts x the
  longest) and a cap on texts;
* while the model is idle a worker lingers up to ``max_wait`` for a fuller batch; while a batch is computing,
  a second worker takes a batch only when a full one is waiting, so batches never shrink under load;
* a text whose requests have all gone (client disconnected, deadline passed) is dropped before it is computed;
* a full queue refuses new texts (the caller answers 429 with a Retry-After from the measured rate).

Computing a batch goes through the core: ``Embedder.aembed_full`` (cache write-back, fingerprint, checks).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..fingerprint import InputType

__all__ = ["BatchQueue", "BatchStats", "QueueFull"]

logger = logging.getLogger("embedopt.serve")

Compute = Callable[[list[str], InputType], Awaitable[np.ndarray]]
#: How many of the oldest waiting texts a batch is chosen from.
_WINDOW_BATCHES = 4


class QueueFull(Exception):
    """The model's queue holds ``max_queue_texts`` texts already; ``retry_after`` estimates when it drains."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Item:
    text: str
    input_type: InputType
    length: int
    enqueued: float
    future: asyncio.Future[np.ndarray]
    waiters: int = 1
    started: bool = False


@dataclass
class BatchStats:
    """Running counters, read by the metrics endpoint."""

    batches: int = 0
    texts: int = 0
    padded_tokens: int = 0
    dropped: int = 0
    """Texts removed before compute because no request waited for them any more."""
    shared: int = 0
    """Texts a request found already queued or computing for another request."""
    failures: int = 0
    observers: list[Callable[[int, int, float], None]] = field(default_factory=list)
    """Called with (texts, padded tokens, seconds) after each batch."""


class BatchQueue:
    """The queue of one model; see the module docstring.

    Args:
        compute: embeds a list of texts of one input type, returning an (n, dim) float32 array.
        length: a text's length in tokens for sorting and the batch budget (an estimate is fine).
    """

    def __init__(self, name: str, compute: Compute, *, length: Callable[[str], int], max_batch_tokens: int = 8192,
                 max_batch_texts: int = 64, max_wait: float = 0.002, max_queue_texts: int = 20000,
                 workers: int = 2) -> None:
        self.name = name
        self._compute = compute
        self._length = length
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_texts = max_batch_texts
        self.max_wait = max_wait
        self.max_queue_texts = max_queue_texts
        self.workers = workers
        self._pending: dict[tuple[InputType, str], _Item] = {}
        """Waiting texts, oldest first (dicts keep insertion order)."""
        self._running: dict[tuple[InputType, str], _Item] = {}
        self._pending_tokens = 0
        self._busy = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.stats = BatchStats()
        self._rate = 0.0
        """Moving average of texts computed per second of batch time."""

    # ------------------------------------------------------------------------------------------ requests
    @property
    def depth(self) -> int:
        """Texts waiting to be computed."""
        return len(self._pending)

    def submit(self, texts: Sequence[str], input_type: InputType) -> list[asyncio.Future[np.ndarray]]:
        """Queue ``texts`` (unique within the call) and return one future per text. Raises :class:`QueueFull`."""
        if self._closing:
            raise QueueFull(f"model {self.name!r} is shutting down", retry_after=1.0)
        new = [t for t in texts if (input_type, t) not in self._pending and (input_type, t) not in self._running]
        if new and len(self._pending) + len(new) > self.max_queue_texts:
            rate = self._rate or 1.0
            raise QueueFull(f"model {self.name!r} has {len(self._pending)} texts waiting (the limit is "
                            f"{self.max_queue_texts}); retry later", retry_after=max(1.0, len(self._pending) / rate))
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        out: list[asyncio.Future[np.ndarray]] = []
        for t in texts:
            key = (input_type, t)
            item = self._pending.get(key) or self._running.get(key)
            if item is not None and not item.future.done():
                item.waiters += 1
                self.stats.shared += 1
            else:
                length = self._length(t)
                item = _Item(t, input_type, length, now, loop.create_future())
                self._pending[key] = item
                self._pending_tokens += length
            out.append(item.future)
        self._wake.set()
        return out

    def release(self, texts: Sequence[str], input_type: InputType) -> None:
        """The request that submitted ``texts`` no longer waits (answered, failed, timed out or disconnected):
        texts nobody else waits for are dropped before compute."""
        for t in texts:
            key = (input_type, t)
            item = self._pending.get(key)
            if item is None:
                running = self._running.get(key)
                if running is not None:
                    running.waiters -= 1
                continue
            item.waiters -= 1
            if item.waiters <= 0:
                del self._pending[key]
                self._pending_tokens -= item.length
                self.stats.dropped += 1
                if not item.future.done():
                    item.future.cancel()

    # ------------------------------------------------------------------------------------------- workers
    def start(self) -> None:
        for i in range(self.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"embedopt-batch-{self.name}-{i}"))

    async def drain(self, timeout: float) -> None:
        """Stop taking new texts, let what is queued finish (up to ``timeout`` s), then stop the workers."""
        self._closing = True
        deadline = time.monotonic() + timeout
        while (self._pending or self._running) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for item in [*self._pending.values(), *self._running.values()]:
            if not item.future.done():
                item.future.set_exception(QueueFull(f"model {self.name!r} shut down", retry_after=1.0))
        self._pending.clear()
        self._running.clear()

    def _full_batch_waiting(self) -> bool:
        return len(self._pending) >= self.max_batch_texts or self._pending_tokens >= self.max_batch_tokens

    async def _worker(self) -> None:
        while True:
            if not self._pending or (self._busy and not self._full_batch_waiting()):
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._busy and self.max_wait > 0 and not self._full_batch_waiting():
                oldest = next(iter(self._pending.values()))
                linger = oldest.enqueued + self.max_wait - time.monotonic()
                if linger > 0:
                    await asyncio.sleep(linger)
                    continue
            batch = self._take()
            if not batch:
                continue
            self._busy += 1
            try:
                await self._run(batch)
            finally:
                self._busy -= 1
                self._wake.set()

    def _take(self) -> list[_Item]:
        """Remove one batch from the queue: the oldest text and its neighbours in length (see module doc)."""
        items = iter(self._pending.values())
        oldest = next(items)
        kind = oldest.input_type
        window = [oldest]
        limit = self.max_batch_texts * _WINDOW_BATCHES
        for it in items:
            if len(window) >= limit:
                break
            if it.input_type == kind:
                window.append(it)
        window.sort(key=lambda it: it.length)
        p = window.index(oldest)
        lo, hi = p, p + 1  # batch = window[lo:hi]; lengths ascend, so window[hi-1] is the longest
        budget, cap = self.max_batch_tokens, self.max_batch_texts
        while lo > 0 and hi - lo < cap and (hi - lo + 1) * window[hi - 1].length <= budget:
            lo -= 1
        while hi < len(window) and hi - lo < cap and (hi - lo + 1) * window[hi].length <= budget:
            hi += 1
        batch = window[lo:hi]
        for it in batch:
            key = (it.input_type, it.text)
            del self._pending[key]
            self._pending_tokens -= it.length
            it.started = True
            self._running[key] = it
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        kind = batch[0].input_type
        started = time.monotonic()
        todo = batch
        try:
            for _ in range(3):  # a text the model refuses fails alone; the rest of the batch is computed again
                try:
                    vectors = await self._compute([it.text for it in todo], kind)
                except InputError as exc:
                    if exc.index is None or not 0 <= exc.index < len(todo) or len(todo) == 1:
                        raise
                    bad = todo[exc.index]
                    if not bad.future.done():
                        bad.future.set_exception(exc)
                    todo = todo[:exc.index] + todo[exc.index + 1:]
                    continue
                for it, vec in zip(todo, vectors, strict=True):
                    if not it.future.done():
                        it.future.set_result(vec)
                break
        except asyncio.CancelledError:
            for it in todo:
                if not it.future.done():
                    it.future.cancel()
            raise
        except Exception as exc:
            self.stats.failures += 1
            logger.warning("batch of %d texts for model %r failed: %s: %s", len(todo), self.name,
                           type(exc).__name__, exc)
            for it in todo:
                if not it.future.done():
                    it.future.set_exception(exc)
                    it.future.exception()  # retrieved: a request that left never sees it, and that is fine
        finally:
            for it in batch:
                key = (it.input_type, it.text)
                if self._running.get(key) is it:
                    del self._running[key]
            seconds = time.monotonic() - started
            padded = len(batch) * max(it.length for it in batch)
            self.stats.batches += 1
            self.stats.texts += len(batch)
            self.stats.padded_tokens += padded
            if seconds > 0:
                rate = len(batch) / seconds
                self._rate = rate if not self._rate else 0.8 * self._rate + 0.2 * rate
            for observe in self.stats.observers:
                observe(len(batch), padded, seconds)
