"""Bulk embedding on Ray (embedopt.distributed) against the single-process path, and a model of re-embedding
100M documents on N CPU or GPU workers versus an API at catalog prices.

    PYTHONPATH=src .venv/bin/python bench/distributed.py [--static-docs 20000] [--minilm-docs 1000]

Writes bench/results/distributed.json and prints the model's table (docs/distributed.md shows it).

Measured here, on one machine (a local Ray node with 2 logical CPUs, so "workers" are actors on the same two
cores; Ray is given 3 logical CPUs so that two 1-CPU actors leave one to the reader): documents/s of the single-process path (``Embedder.embed`` over the whole list, no cache, the model
already loaded), and of ``embed_files`` with 1 and 2 workers (no cache; wall time from submission to the last
shard committed, so it includes starting the actors and loading the model in each, and the time the actors were
busy embedding and writing shards, from which the per-worker throughput comes). For the static model (debian-
packages corpus) and MiniLM (manpages corpus). Then the shared cache: a Redis cache cold, then warm into a new
output (hit rate 1): the throughput of a worker whose texts are all cache hits.

Each actor takes 1 CPU and Ray sets its thread count to 1; the single-process path uses the library's defaults
(torch: 2 threads here). The machine is shared: every figure carries the load average before and after it.
Peers run interleaved per model: single, 1 worker, 2 workers.

The 100M model: time = N_docs x ((1 - h) / r_model + h / r_hit) / workers; cost = time x workers x price per
worker-hour. r_model and r_hit are the per-worker rates measured here (CPU); GPU throughput is an assumption
with its source, not a measurement (no GPU here). API cost = N_docs x (1 - h) x tokens/doc x catalog price; API
time is bounded by the provider's rate limit (an assumption, stated). h is the cache hit rate: 0 for a move to a
new model (a new embedding space shares nothing with the old one's cache), higher for re-embedding texts already
embedded with this model (re-chunking, a rebuilt index, a rerun after a failure).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import DATASETS, RESULTS, machine, write_results

from embedopt import Embedder
from embedopt.catalog import card
from embedopt.distributed import ShardInfo, connect, embed_files

N_DOCS = 100_000_000
#: Assumptions, each with its source. Prices are on-demand list prices, us-east-1, as published in 2025.
ASSUMPTIONS: dict[str, Any] = {
    "cpu_worker_usd_per_hour": {
        "value": 0.0446, "source": "AWS EC2 c7i.large (2 vCPU) on-demand $0.0893/h, us-east-1, 2025: half of it "
        "for one vCPU, the worker measured here"},
    "gpu_worker_usd_per_hour": {
        "value": 3.06, "source": "AWS EC2 p3.2xlarge (1x V100) on-demand $3.06/h, us-east-1, 2025"},
    "gpu_minilm_docs_per_second": {
        "value": 14_200, "source": "sbert.net pretrained-models table, 'Speed' of all-MiniLM-L6-v2: 14,200 "
        "sentences/s encoded on a V100 GPU (short sentences; long documents are slower, so this is optimistic)"},
    "api_tokens_per_minute": {
        "value": 10_000_000, "source": "OpenAI rate limits, usage tier 5, text-embedding-3-small: 10M tokens/min "
        "(2025); other tiers and vendors are lower or higher: the API time scales inversely"},
}
API_MODELS = ("text-embedding-3-small", "voyage-3", "text-embedding-3-large")


def load(dataset: Path, limit: int) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in (dataset / "corpus.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if str(r.get("text", "")).strip()][:limit]
    return [str(r["_id"]) for r in rows], [r["text"] for r in rows]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def single(spec: str, texts: list[str]) -> dict[str, Any]:
    embedder = Embedder.from_spec(spec, cache=None, show_progress=False)
    embedder.embed(texts[:64])  # the model loaded and warm: this path's load time is not in its rate
    before = loadavg()
    started = time.perf_counter()
    embedder.embed(texts)
    seconds = time.perf_counter() - started
    return {"docs": len(texts), "seconds": round(seconds, 3), "docs_per_second": round(len(texts) / seconds, 1),
            "loadavg_before": before, "loadavg_after": loadavg()}


def on_ray(spec: str, source: Path, out: Path, *, workers: int, cache: str | None,
           batch_size: int) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    infos: list[ShardInfo] = []
    before = loadavg()
    started = time.perf_counter()
    report = embed_files(source, out, model=spec, cache=cache, workers=workers, batch_size=batch_size,
                         progress=False, on_shard=lambda info, ids, vectors: infos.append(info))
    wall = time.perf_counter() - started
    busy = sum(i.seconds for i in infos)
    return {"workers": workers, "docs": report.rows, "wall_seconds": round(wall, 3),
            "docs_per_second": round(report.rows / wall, 1),
            "busy_seconds": round(busy, 3), "per_worker_docs_per_second": round(report.rows / busy, 1),
            "computed": report.computed, "cache_hits": report.cache_hits,
            "cache_hit_rate": round(report.cache_hit_rate, 4), "actors_seen": len(report.workers),
            "loadavg_before": before, "loadavg_after": loadavg()}


def tokens_per_doc(texts: list[str]) -> float:
    try:
        import bpe_openai

        enc = bpe_openai.get_encoding("cl100k_base")
        return sum(len(enc.encode(t)) for t in texts) / len(texts)
    except ImportError:
        from embedopt.providers.base import estimate_tokens

        return sum(estimate_tokens(t) for t in texts) / len(texts)


def reference_rates() -> dict[str, dict[str, Any]]:
    """Per-core rates from bench/results/embed.json (issue 18's encode benchmark, the manpages corpus, both cores of
    this machine, the process alone): a second measured input, since this run's own share of a loaded machine
    can be a small fraction of a core."""
    path = RESULTS / "embed.json"
    if not path.is_file():
        return {}
    d = json.loads(path.read_text())
    threads = d.get("machine", {}).get("torch_threads") or d.get("machine", {}).get("cpus") or 2
    docs = d["documents"]
    return {"minilm": {"per_core_docs_per_second": round(docs["embedder_no_cache_per_s"] / threads, 1),
                       "source": f"bench/results/embed.json: {docs['embedder_no_cache_per_s']} docs/s on {threads} "
                                 "threads (Embedder, no cache, manpages)"},
            "static": {"per_core_docs_per_second": round(docs["static_per_s"] / threads, 1),
                       "source": f"bench/results/embed.json: {docs['static_per_s']} docs/s in one process on "
                                 f"{threads} cores, divided by {threads} (manpages)"}}


def model_100m(rates: dict[str, float], r_hit: float, tokens: float,
               reference: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Time and cost to embed N_DOCS, per setup, workers and hit rate."""
    cpu_price = ASSUMPTIONS["cpu_worker_usd_per_hour"]["value"]
    gpu_price = ASSUMPTIONS["gpu_worker_usd_per_hour"]["value"]
    rows: list[dict[str, Any]] = []
    setups = [(f"{m} on CPU workers (this run: {r:,.1f} docs/s/worker)", r, cpu_price, (8, 64, 256))
              for m, r in rates.items()]
    setups += [(f"{m} on CPU workers (embed.json: {ref['per_core_docs_per_second']:,.1f} docs/s/core)",
                ref["per_core_docs_per_second"], cpu_price, (8, 64, 256)) for m, ref in (reference or {}).items()]
    setups.append((f"minilm on V100 GPU workers (assumed {ASSUMPTIONS['gpu_minilm_docs_per_second']['value']:,} "
                   "docs/s/GPU)", ASSUMPTIONS["gpu_minilm_docs_per_second"]["value"], gpu_price, (1, 8)))
    for hit in (0.0, 0.5):
        for name, rate, price, counts in setups:
            for n in counts:
                seconds = N_DOCS * ((1 - hit) / rate + hit / r_hit) / n
                rows.append({"setup": name, "workers": n, "hit_rate": hit, "hours": round(seconds / 3600, 2),
                             "usd": round(seconds / 3600 * n * price, 2)})
        tpm = ASSUMPTIONS["api_tokens_per_minute"]["value"]
        for api in API_MODELS:
            c = card(api)
            assert c is not None
            billed = N_DOCS * (1 - hit) * tokens
            rows.append({"setup": f"API {api} (${c.price_per_1m_tokens}/1M tokens)", "workers": None,
                         "hit_rate": hit, "hours": round(billed / tpm / 60, 2),
                         "usd": round(billed / 1e6 * c.price_per_1m_tokens, 2)})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| setup | workers | cache hit rate | hours | USD |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['setup']} | {r['workers'] or '-'} | {r['hit_rate']:.0%} | {r['hours']:,.2f} | "
                   f"{r['usd']:,.2f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--static-docs", type=int, default=20_000)
    ap.add_argument("--minilm-docs", type=int, default=1_000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--output", default=str(RESULTS / "distributed.json"))
    ap.add_argument("--model-only", action="store_true",
                    help="recompute the 100M model from the measurements already in --output, measuring nothing")
    args = ap.parse_args()
    if args.model_only:
        data = json.loads(Path(args.output).read_text())
        m = data["model_100m"]
        m["reference_rates"] = reference_rates()
        m["rows"] = model_100m(m["per_worker_docs_per_second"], m["cache_hit_docs_per_second_per_worker"],
                               m["cl100k_tokens_per_doc"], m["reference_rates"])
        m["assumptions"] = ASSUMPTIONS
        write_results(args.output, data)
        print(table(m["rows"]))
        return

    import ray

    from embedopt.providers.static import cached_distill

    ray.init(num_cpus=3, include_dashboard=False, object_store_memory=200 * 2**20, logging_level="WARNING",
             log_to_driver=False)
    connect()
    work = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    redis_proc = None
    try:
        models = {"static": (f"static:{cached_distill('sentence-transformers/all-MiniLM-L6-v2')}",
                             DATASETS / "debian-packages", args.static_docs),
                  "minilm": ("minilm", DATASETS / "manpages", args.minilm_docs)}
        results: dict[str, Any] = {}
        for name, (spec, dataset, limit) in models.items():
            ids, texts = load(dataset, limit)
            source = work / f"{name}.jsonl"
            source.write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in zip(ids, texts, strict=True)))
            print(f"{name}: {len(texts)} docs from {dataset.name}", file=sys.stderr)
            entry: dict[str, Any] = {"spec": spec if name != "static" else "static:distill", "dataset": dataset.name,
                                     "docs": len(texts), "single_process": single(spec, texts)}
            for w in (1, 2):
                entry[f"ray_{w}_workers"] = on_ray(spec, source, work / f"{name}-w{w}", workers=w, cache=None,
                                                   batch_size=args.batch_size)
            base = entry["single_process"]["docs_per_second"]
            entry["ratios_vs_single_process"] = {
                f"ray_{w}_workers": round(entry[f"ray_{w}_workers"]["docs_per_second"] / base, 3) for w in (1, 2)}
            entry["ratios_busy_vs_single_process"] = {
                f"ray_{w}_workers": round(w * entry[f"ray_{w}_workers"]["per_worker_docs_per_second"] / base, 3)
                for w in (1, 2)}
            results[name] = entry
            print(json.dumps(entry, indent=1), file=sys.stderr)

        # The shared cache: a cold pass fills a Redis of this run's own, a warm pass into a new output reads it.
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        redis_proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no"], stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        cache = f"memory,redis://127.0.0.1:{port}/0"
        spec, dataset, limit = models["static"]
        source = work / "static.jsonl"
        cold = on_ray(spec, source, work / "cold", workers=2, cache=cache, batch_size=args.batch_size)
        warm = on_ray(spec, source, work / "warm", workers=2, cache=cache, batch_size=args.batch_size)
        results["shared_cache_static"] = {"cold": cold, "warm": warm}
        print(json.dumps(results["shared_cache_static"], indent=1), file=sys.stderr)

        tokens = tokens_per_doc(load(DATASETS / "manpages", 2_000)[1])
        rates = {name: results[name]["ray_2_workers"]["per_worker_docs_per_second"] for name in ("static", "minilm")}
        r_hit = warm["per_worker_docs_per_second"]
        reference = reference_rates()
        rows = model_100m(rates, r_hit, tokens, reference)
        data = {
            "machine": machine(ray=ray.__version__, ray_logical_cpus=3, note="3 logical CPUs on 2 cores: two "
                               "1-CPU actors and the reader; a worker is an actor, not a second machine"),
            "loadavg_start_end": [results["static"]["single_process"]["loadavg_before"], loadavg()],
            "results": results,
            "model_100m": {"documents": N_DOCS, "per_worker_docs_per_second": rates,
                           "cache_hit_docs_per_second_per_worker": r_hit,
                           "cl100k_tokens_per_doc": round(tokens, 1), "token_source": "manpages corpus, 2,000 docs",
                           "reference_rates": reference, "assumptions": ASSUMPTIONS, "rows": rows},
        }
        print(f"wrote {write_results(args.output, data)}", file=sys.stderr)
        print(table(rows))
    finally:
        if redis_proc is not None:
            redis_proc.kill()
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
