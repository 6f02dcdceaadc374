"""One table from bench/results/*.json: each figure beside the peer its issue names, as a ratio.

    .venv/bin/python bench/summary.py          # the last step of `make bench`; writes bench/results/summary.md

A result file that is missing (its bench was not run) is listed as missing, never filled in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def rows() -> list[tuple[str, str, str, str]]:
    """(what, ours, peer, ratio) for every headline figure."""
    out: list[tuple[str, str, str, str]] = []

    def add(source: str, fn: Callable[[dict[str, Any]], list[tuple[str, str, str, str]]]) -> None:
        data = load(source)
        if data is None:
            out.append((f"bench/results/{source}.json", "not run", "", ""))
        else:
            out.extend(fn(data))

    add("embed", lambda d: [
        ("documents/s, Embedder vs sentence-transformers encode (MiniLM)",
         f"{d['documents']['embedder_no_cache_per_s']:.1f}", f"{d['documents']['sentence_transformers_encode_per_s']:.1f}",
         f"{d['documents']['embedder_no_cache_per_s'] / d['documents']['sentence_transformers_encode_per_s']:.2f}x"),
        ("documents/s, static (distilled) vs MiniLM", f"{d['documents']['static_per_s']:.0f}",
         f"{d['documents']['embedder_no_cache_per_s']:.1f}", f"{d['documents']['static_vs_transformer_x']:.0f}x"),
    ])
    add("cache", lambda d: [
        ("µs per memory hit vs LangChain CacheBackedEmbeddings (in memory)",
         f"{d['us_per_vector']['embedopt_memory']:.1f}", f"{d['us_per_vector']['langchain_cachebacked_inmemory']:.1f}",
         f"{d['ratios']['memory_vs_langchain_inmemory_x']}x"),
        ("µs per Redis hit vs CacheBackedEmbeddings (RedisStore)", f"{d['us_per_vector']['embedopt_redis']:.1f}",
         f"{d['us_per_vector']['langchain_cachebacked_redis']:.1f}", f"{d['ratios']['redis_vs_langchain_redis_x']}x"),
        ("µs per SQLite hit vs recomputing a document", f"{d['us_per_vector']['embedopt_sqlite']:.1f}",
         f"{d['us_per_vector']['recompute_minilm_documents']:.0f}",
         f"{d['ratios']['embedopt_sqlite_vs_recompute_documents_x']}x"),
    ])
    add("semantic_cache", lambda d: [
        ("semantic cache hit rate on held-out paraphrases (threshold "
         f"{d['chosen_threshold']})", f"{d['held_out']['hit_rate']:.1%}", "no cache: 0%",
         f"false hits {d['held_out']['false_hit_rate_unrelated']:.1%} unrelated, "
         f"{d['held_out']['false_hit_rate_near_miss']:.1%} near-miss"),
    ])
    add("hamming", lambda d: [
        (f"ms per Hamming top-{d['k']} query over {d['n']:,} codes: {d['fastest_single']['library']} vs numpy",
         f"{d['fastest_single']['ms_single']}",
         f"{next(r['ms_single'] for r in d['results'] if r['library'] == 'numpy')}",
         f"{d['speedup_vs_numpy_single']}x"),
    ])

    def search(d: dict[str, Any]) -> list[tuple[str, str, str, str]]:
        res = []
        for corpus in ("random", "real"):
            if corpus not in d:
                continue
            r = d[corpus]["results"]
            ours, base = r["embedopt binary + int8 rescore"], r["float32 exact (numpy)"]
            st = r["sentence-transformers semantic_search_faiss (ubinary + rescore)"]
            n = f"{d[corpus]['n']:,}"
            res += [
                (f"queries/s, single, {corpus} {n}: binary+int8 vs float32 numpy", f"{ours['qps_single']:.0f}",
                 f"{base['qps_single']:.1f}", f"{ours['throughput_vs_float32_single_x']}x"),
                (f"queries/s, batches of 100, {corpus} {n}: vs float32 numpy", f"{ours['qps_batch100']:.0f}",
                 f"{base['qps_batch100']:.1f}", f"{ours['throughput_vs_float32_batch100_x']}x"),
                (f"RAM bytes/vector, {corpus}: vs float32", f"{ours['ram_bytes_per_vector']:.0f}",
                 f"{base['ram_bytes_per_vector']:.0f}", f"{ours['ram_vs_float32_x']}x less"),
                (f"retention ({d[corpus]['retention']}), {corpus}: vs sentence-transformers faiss",
                 f"{ours['retention']:.3f}", f"{st['retention']:.3f}", f"{ours['retention'] / st['retention']:.2f}x"),
            ]
        return res

    add("search", search)
    add("retrieval_quality", lambda d: [
        ("NDCG@10 manpages, binary + int8 rescore (40 candidates) vs float32",
         f"{d['results']['binary+int8']['ndcg@10_k10']:.4f}", f"{d['results']['float32']['ndcg@10']:.4f}",
         f"{d['results']['binary+int8']['ndcg@10_k10_retention']:.1%} kept"),
    ])

    def tuned(label: str) -> Callable[[dict[str, Any]], list[tuple[str, str, str, str]]]:
        return lambda d: [(f"NDCG@10 held-out manpages, {label} fine-tuned vs not, {r['dim']} dims (make finetune)",
                           f"{r['after']:.4f}", f"{r['before']:.4f}",
                           f"{r.get('relative_change', r.get('change', 0.0)):+.1%}") for r in d["rows"]]

    add("finetune-minilm-manpages", tuned("MiniLM"))
    def tuned_static(d: dict[str, Any]) -> list[tuple[str, str, str, str]]:
        ours, st = d["speed"]["after"], d["speed"]["st:sentence-transformers/all-MiniLM-L6-v2"]
        return [*tuned("static")(d), ("documents/s, tuned static vs MiniLM (same run, make finetune)",
                                      f"{ours:.0f}", f"{st:.1f}", f"{ours / st:.0f}x")]

    add("finetune-static-manpages", tuned_static)
    return out


def main() -> None:
    table = ["| figure | ours | peer | ratio |", "|---|---:|---:|---:|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows()]
    text = "\n".join(table) + "\n"
    (RESULTS / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
