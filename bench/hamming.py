"""Exact Hamming top-k over packed binary codes: which SIMD library the embedded store uses, by measurement.

    .venv/bin/python bench/hamming.py [--n 1000000] [--dim 384] [--k 40] [--repeats 5]

Same random codes, same queries, one run. For each library: milliseconds per query for a single query and per
query in a batch of 100, with 1 and 2 threads where the library takes a thread count. Every library must return
the same distances as numpy's ``bitwise_count`` (checked here). Writes bench/results/hamming.json.

Libraries: faiss ``IndexBinaryFlat`` (faiss-cpu), usearch's exact ``search(..., metric=Hamming, exact=True)``,
numkong's ``hammings_packed`` + ``argpartition``, and numpy ``bitwise_count`` + ``argpartition``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
from _common import ROOT, machine, write_results


def topk_from_distances(d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.argpartition(d, k - 1, axis=1)[:, :k]
    dist = np.take_along_axis(d, rows, axis=1)
    order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(dist, order, axis=1).astype(np.int32), np.take_along_axis(rows, order, axis=1)


def ms_per_query(fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], queries: np.ndarray,
                 batch: int, repeats: int) -> float:
    fn(queries[:batch])  # warm
    runs = []
    for r in range(repeats):
        q = queries[(r * batch) % len(queries):][:batch]
        started = time.perf_counter()
        fn(q)
        runs.append((time.perf_counter() - started) * 1e3 / len(q))
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "hamming.json"))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, size=(args.n, args.dim // 8), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(500, args.dim // 8), dtype=np.uint8)
    k = args.k

    def numpy_scan(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = np.empty((len(q), len(codes)), dtype=np.int32)
        for j, row in enumerate(q):
            d[j] = np.bitwise_count(np.bitwise_xor(codes, row)).sum(axis=1, dtype=np.int32)
        return topk_from_distances(d, k)

    candidates: dict[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = {"numpy": numpy_scan}
    threads: dict[str, Callable[[int], None]] = {}
    import faiss

    index = faiss.IndexBinaryFlat(args.dim)
    index.add(codes)
    candidates["faiss IndexBinaryFlat"] = lambda q: index.search(q, k)
    threads["faiss IndexBinaryFlat"] = faiss.omp_set_num_threads

    from usearch.index import MetricKind
    from usearch.index import search as usearch_search

    usearch_threads = {"n": 1}

    def usearch_scan(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = usearch_search(codes, q, k, MetricKind.Hamming, exact=True, threads=usearch_threads["n"])
        return np.atleast_2d(m.distances), np.atleast_2d(m.keys)

    candidates["usearch exact"] = usearch_scan
    threads["usearch exact"] = lambda n: usearch_threads.__setitem__("n", n)

    import numkong as nk

    packed = nk.hammings_pack(codes)

    def numkong_scan(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return topk_from_distances(np.asarray(nk.hammings_packed(q, packed)), k)

    candidates["numkong hammings_packed"] = numkong_scan

    # Every library must find the same distances as numpy.
    want, _ = numpy_scan(queries[:3])
    for name, fn in candidates.items():
        got, _ = fn(queries[:3])
        if not np.array_equal(np.asarray(got, dtype=np.int64), want.astype(np.int64)):
            raise SystemExit(f"{name} disagrees with numpy on the top-{k} distances")

    results = []
    for name, fn in candidates.items():
        for t in ([1, 2] if name in threads else [None]):
            if t is not None:
                threads[name](t)
            row = {"library": name, "threads": t,
                   "ms_single": round(ms_per_query(fn, queries, 1, args.repeats * 4), 3),
                   "ms_per_query_batch100": round(ms_per_query(fn, queries, 100, args.repeats), 3)}
            results.append(row)
            print(row, flush=True)
    faiss.omp_set_num_threads(1)
    best_single = min(results, key=lambda r: r["ms_single"])
    best_batch = min(results, key=lambda r: r["ms_per_query_batch100"])
    numpy_single = next(r["ms_single"] for r in results if r["library"] == "numpy")
    out = {"n": args.n, "dim": args.dim, "k": k, "machine": machine(),
           "results": results, "fastest_single": best_single, "fastest_batch100": best_batch,
           "speedup_vs_numpy_single": round(numpy_single / best_single["ms_single"], 1)}
    write_results(args.output, out)
    print(json.dumps({"fastest_single": best_single, "fastest_batch100": best_batch}, indent=2))


if __name__ == "__main__":
    main()
