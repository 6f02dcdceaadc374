"""Chaos: Redis killed and frozen mid-job, 30% of API calls failing under a Router, four processes on one SQLite
file. Not a timed test: real components (a redis-server this script starts on a free port, the loopback fault
server of the tests, SQLite in WAL mode, the distilled static model), and a count of what went wrong.

Per scenario it prints and writes to bench/results/chaos.json:

    requests   embedding requests made (each a few texts)
    failed     requests that raised (a cache outage must never fail a request; API faults are retried or routed)
    wrong      vectors that differ from the model's own (atol 1e-5), returned or left in a cache
    lost       vectors missing: rows short in an answer, or entries a process wrote that the SQLite file lacks
    p99_ms     99th percentile of a request's wall time

Run: ``.venv/bin/python bench/chaos.py`` (about 2 minutes on 2 cores; ``--quick``: about 40 s). The first run
distils the static model (about 90 s, cached afterwards).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, ROOT, machine, write_results

from embedopt import Embedder, EmbedOptError, Router
from embedopt.cache import RedisTier, SQLiteTier, TieredCache, cache_key
from embedopt.providers import StaticProvider
from embedopt.providers.openai import OpenAIProvider
from embedopt.providers.static import cached_distill
from embedopt.retry import RetryPolicy

sys.path.insert(0, str(ROOT))  # the tests' redis-server launcher and fault server

ATOL = 1e-5
PER_REQUEST = 8
VERBS = ["copy", "move", "list", "remove", "find", "compress", "print", "sort", "count", "compare"]
NOUNS = ["files", "directories", "processes", "lines", "archives", "users", "packages", "sockets", "logs"]


def _pool(n: int) -> list[str]:
    return [f"how do I {VERBS[i % 10]} {NOUNS[(i // 10) % 9]} number {i} on a debian machine" for i in range(n)]


class Tally:
    """What a scenario's requests did: thread-safe counts and latencies."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = self.failed = self.wrong = self.lost = 0
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}

    def one(self, embed: Callable[[list[str]], np.ndarray], texts: list[str], want: np.ndarray) -> None:
        started = time.perf_counter()
        try:
            got = embed(texts)
        except EmbedOptError as exc:  # a typed error: counted; anything else would end the run (a raw exception)
            with self.lock:
                self.requests += 1
                self.failed += 1
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
            return
        seconds = time.perf_counter() - started
        lost = max(0, len(texts) - len(got))
        rows = min(len(texts), len(got))
        wrong = int((~np.isclose(got[:rows], want[:rows], atol=ATOL).all(axis=1)).sum())
        with self.lock:
            self.requests += 1
            self.lost += lost
            self.wrong += wrong
            self.latencies.append(seconds)

    def result(self, **extra: Any) -> dict[str, Any]:
        p99 = float(np.percentile(self.latencies, 99) * 1e3) if self.latencies else None
        return {"requests": self.requests, "failed": self.failed, "wrong_vectors": self.wrong,
                "lost_vectors": self.lost, "p99_ms": p99, "errors": self.errors, **extra}


def _run_threads(tally: Tally, embed: Callable[[list[str]], np.ndarray], pool: list[str], reference: np.ndarray,
                 threads: int, until: float, rng_seed: int) -> None:
    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while time.monotonic() < until:
            idx = rng.choice(len(pool), PER_REQUEST, replace=False)
            tally.one(embed, [pool[i] for i in idx], reference[idx])

    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(worker, range(rng_seed, rng_seed + threads)))


# ----------------------------------------------------------------------------------------------------- redis
def redis_chaos(static: StaticProvider, pool: list[str], reference: np.ndarray, seconds: float) -> dict[str, Any]:
    """Four threads embed through a Redis tier while the server is SIGKILLed (and restarted on its port), then
    SIGSTOPped (frozen, its socket open) and SIGCONTed, twice each."""
    from tests.redis_server import RedisServer

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        cache = TieredCache([RedisTier(server.url, timeout=0.2)], cooldown=0.5, max_cooldown=1.0)
        e = Embedder(static, cache=cache)
        tally = Tally()
        events: list[str] = []
        start = time.monotonic()
        until = start + seconds

        def chaos() -> None:
            step = seconds / 10
            for _ in range(2):
                time.sleep(step)
                server.kill()
                events.append(f"{time.monotonic() - start:.1f}s SIGKILL")
                time.sleep(step)
                server.start()
                events.append(f"{time.monotonic() - start:.1f}s restarted")
                time.sleep(step)
                assert server.proc is not None
                os.kill(server.proc.pid, signal.SIGSTOP)
                events.append(f"{time.monotonic() - start:.1f}s SIGSTOP")
                time.sleep(step)
                os.kill(server.proc.pid, signal.SIGCONT)
                events.append(f"{time.monotonic() - start:.1f}s SIGCONT")

        agent = threading.Thread(target=chaos)
        agent.start()
        try:
            _run_threads(tally, e.embed, pool, reference, 4, until, 1)
        finally:
            agent.join()
            server.kill()
        tiers = cache.tier_stats()
    return tally.result(threads=4, texts_per_request=PER_REQUEST, seconds=seconds, events=events,
                        cache_errors=e.stats.cache_errors, cache_hits=e.stats.cache_hits, tiers=tiers)


# ------------------------------------------------------------------------------------------------------- api
def api_chaos(static: StaticProvider, pool: list[str], reference: np.ndarray, seconds: float) -> dict[str, Any]:
    """Four threads embed through a Router (the static model behind the fault server first, the same model here
    second) while 30% of API calls fail: every fault the server knows, hangs and slow answers included."""
    from tests.api_server import BILLED_FAULTS, FAULTS, FakeEmbeddingAPI

    server = FakeEmbeddingAPI(lambda texts, model, input_type: static.embed(texts, "document").vectors,
                              slow_seconds=0.5, hang_seconds=1.0).start()
    server.fail_rate, server.fail_kinds = 0.3, FAULTS
    try:
        api = OpenAIProvider(static.info.model, api_key=server.api_key, base_url=server.url, dim=static.info.dim,
                             revision=static.info.revision, kind="api", price_per_1m_tokens=0.02, timeout=0.3)
        router = Router([api, static], policy="prefer_api", cooldown=0.05, max_cooldown=0.2,
                        retry=RetryPolicy(max_attempts=3, base_delay=0.005, max_delay=0.02, max_total=2))
        e = Embedder(router)  # no cache: every request goes to the routes
        tally = Tally()
        _run_threads(tally, e.embed, pool, reference, 4, time.monotonic() + seconds, 11)
        api_name, local_name = (r.name for r in router.routes)
        totals = router.ledger.routes
        model = static.info.model
        books = {"ledger_tokens": totals[api_name].tokens, "server_billed_tokens": server.billed_tokens[model],
                 "ledger_rejected": totals[api_name].rejected,
                 "server_billed_faults": sum(n for f, n in server.faults.items() if f in BILLED_FAULTS)}
        return tally.result(threads=4, texts_per_request=PER_REQUEST, seconds=seconds, fail_rate=0.3,
                            api_requests=server.requests, api_faults=dict(server.faults),
                            served_by={name: totals[name].requests if name in totals else 0
                                       for name in (api_name, local_name)},
                            books=books)
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------- sqlite
def _sqlite_worker(args: tuple[str, str, int, list[str], float]) -> dict[str, Any]:
    model_dir, path, seed, pool, seconds = args
    static = StaticProvider(model_dir)
    reference = Embedder(static, show_progress=False).embed(pool)
    e = Embedder(static, cache=SQLiteTier(path))
    tally = Tally()
    written: set[int] = set()
    rng = np.random.default_rng(seed)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        idx = rng.choice(len(pool), PER_REQUEST, replace=False)
        tally.one(e.embed, [pool[i] for i in idx], reference[idx])
        written.update(int(i) for i in idx)
    return {**tally.result(), "latencies": tally.latencies, "written": sorted(written)}


def sqlite_chaos(model_dir: Path, static: StaticProvider, pool: list[str], reference: np.ndarray,
                 seconds: float) -> dict[str, Any]:
    """Four processes embed overlapping texts through one SQLite file at once; then every entry any of them
    wrote is read back and checked."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "vectors.sqlite3")
        # spawned workers re-import this script, which needs bench/_common; _common took bench/ off the path (so
        # bench/qdrant_edge.py never shadows the package), and the workers inherit that path: put it back, last
        here = str(Path(__file__).resolve().parent)
        if here not in sys.path:
            sys.path.append(here)
        with mp.get_context("spawn").Pool(4) as workers:
            parts = workers.map(_sqlite_worker, [(str(model_dir), path, s, pool, seconds) for s in range(4)])
        written = sorted(set().union(*(p["written"] for p in parts)))
        fp = Embedder(static).fingerprint("document")
        found = SQLiteTier(path).get_many([cache_key(fp, pool[i]) for i in written])
        lost = sum(v is None for v in found)
        wrong = sum(1 for i, v in zip(written, found, strict=True)
                    if v is not None and not np.allclose(v, reference[i], atol=ATOL))
    latencies = [x for p in parts for x in p["latencies"]]
    return {"requests": sum(p["requests"] for p in parts), "failed": sum(p["failed"] for p in parts),
            "wrong_vectors": sum(p["wrong_vectors"] for p in parts) + wrong,
            "lost_vectors": sum(p["lost_vectors"] for p in parts) + lost,
            "p99_ms": float(np.percentile(latencies, 99) * 1e3) if latencies else None,
            "processes": 4, "texts_per_request": PER_REQUEST, "seconds": seconds, "entries_checked": len(written),
            "errors": {k: v for p in parts for k, v in p["errors"].items()}}


# ------------------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (about 40 s in all)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per scenario (default 30; quick 10)")
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    model_dir = cached_distill()
    static = StaticProvider(model_dir)
    pool = _pool(4000)
    reference = Embedder(static, show_progress=False).embed(pool)
    load_before = os.getloadavg()
    results = {
        "redis_kill_and_stop": redis_chaos(static, pool, reference, seconds),
        "api_30_percent_faults_router": api_chaos(static, pool, reference, seconds),
        "sqlite_four_processes": sqlite_chaos(model_dir, static, pool, reference, seconds),
    }
    print(f"{'scenario':32s} {'requests':>8s} {'failed':>6s} {'wrong':>6s} {'lost':>5s} {'p99 ms':>8s}")
    for name, r in results.items():
        p99 = f"{r['p99_ms']:.1f}" if r["p99_ms"] is not None else "-"
        print(f"{name:32s} {r['requests']:8d} {r['failed']:6d} {r['wrong_vectors']:6d} {r['lost_vectors']:5d} "
              f"{p99:>8s}")
    books = results["api_30_percent_faults_router"]["books"]
    print(f"API books: ledger {books['ledger_tokens']} tokens, server billed {books['server_billed_tokens']}; "
          f"rejected {books['ledger_rejected']} of {books['server_billed_faults']} billed faulty answers")
    out = write_results(RESULTS / "chaos.json", {
        "model": static.info.model, "texts_per_request": PER_REQUEST, "seconds_per_scenario": seconds,
        "load_average_before_after": [load_before, os.getloadavg()],
        "machine": machine(), "results": results})
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
