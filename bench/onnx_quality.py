"""int8 quality study: NDCG@10 of MiniLM via torch, ONNX fp32 and every int8 scheme, on both shared datasets.

    .venv/bin/python bench/onnx_quality.py [--cache DIR] [--schemes a,b] [--datasets d1,d2] [--speed-docs 256]

Writes bench/results/onnx-quality.json. Each variant is exported once with embedopt's own exporter
(``embedopt.tools.export_onnx``) into ``--cache``/exports, and its document and query vectors are cached there
per dataset and revision, so a rerun only computes what is new. Search is exact float dot product over all
documents (normalized vectors); metrics come from ``embedopt.eval.metrics.evaluate``. The peers are in the same
file as ratios: every variant against ONNX fp32 (the goal: int8 keeps >= 99% of fp32's NDCG@10 on both sets) and
against torch.

Also per variant: the probe result the export wrote (cosine to torch on fixed texts), the cosine of its document
vectors to fp32's (mean, 1st percentile, min), batch consistency (a text embedded alone vs inside a batch: dynamic
quantization scales activations per batch, so a vector can depend on its neighbours), model size, and throughput
(documents/s and one-line queries/s at batch 32, interleaved over variants, median of ``--repeats`` rounds). The
throughput figures mean something only on a quiet machine.

The static schemes calibrate on 128 documents of each corpus (a fixed seeded sample of documents: no query is
used). Runtime on the 2-core CPU, quiet: about 10 minutes per variant for the embeddings of both corpora (debian-
packages has 20,000 documents), a few minutes per static export; 2-3 hours for all variants from scratch, under a
minute when everything is cached (only the throughput rounds run again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np

from embedopt import Embedder
from embedopt.eval import load_beir
from embedopt.eval.metrics import evaluate, top_k
from embedopt.providers import SentenceTransformerProvider
from embedopt.providers.onnx import MANIFEST, OnnxProvider
from embedopt.tools.export_onnx import DEFAULT_SCHEME, SCHEMES, export_onnx

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def variants(schemes: list[str], *, with_torch: bool, optimized: bool) -> list[dict]:
    """fp32, every int8 scheme (the default first, the static ones, slow to export, last), fp32 and the default
    scheme on the optimized graph (``optimized``), torch (last: the slowest, and equal to fp32 to 1e-6 in cosine)."""
    out = [{"name": "onnx-fp32"}]
    out += [{"name": f"int8-{s}", "quantize": "int8", "scheme": s}
            for s in sorted(schemes, key=lambda s: (s != DEFAULT_SCHEME, SCHEMES[s].static))]
    if optimized:
        out.append({"name": "onnx-fp32-optimized", "optimize": True})
    if optimized and DEFAULT_SCHEME in schemes:
        out.append({"name": f"int8-{DEFAULT_SCHEME}-optimized", "quantize": "int8", "scheme": DEFAULT_SCHEME,
                    "optimize": True})
    return [*out, {"name": "torch"}] if with_torch else out


def calibration_texts(datasets: list, per_dataset: int) -> list[str]:
    texts: list[str] = []
    for ds in datasets:
        docs = ds.doc_texts()
        texts += random.Random(13).sample(docs, min(per_dataset, len(docs)))
    return texts


def subsample(ds, queries: int | None, docs: int | None) -> None:
    """Keep ``queries`` queries (a seeded sample) and a corpus of ``docs`` documents: every document relevant to a
    kept query, the rest a seeded sample of the others (distractors). Every variant sees the same subset, so the
    NDCG ratios between variants stay paired; the absolute NDCG is higher than on the whole corpus."""
    rng = random.Random(11)
    if queries and queries < len(ds.queries):
        keep = set(rng.sample(sorted(ds.queries), queries))
        ds.queries = {q: t for q, t in ds.queries.items() if q in keep}
        ds.qrels = {q: r for q, r in ds.qrels.items() if q in keep}
    if docs and docs < len(ds.corpus):
        relevant = {d for r in ds.qrels.values() for d in r if d in ds.corpus}
        others = sorted(d for d in ds.corpus if d not in relevant)
        keep = relevant | set(rng.sample(others, max(0, min(len(others), docs - len(relevant)))))
        ds.corpus = {d: row for d, row in ds.corpus.items() if d in keep}


def ensure_export(variant: dict, source: SentenceTransformerProvider, exports: Path, calib: list[str]) -> Path:
    folder = exports / variant["name"]
    manifest = folder / MANIFEST
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        if data["source"]["revision"] == source.info.revision:
            return folder
    print(f"  exporting {variant['name']} ...", flush=True)
    export_onnx(source, folder, quantize=variant.get("quantize"), scheme=variant.get("scheme"),
                optimize=variant.get("optimize", False),
                calibration_texts=calib if SCHEMES.get(variant.get("scheme", ""), None) and
                SCHEMES[variant["scheme"]].static else None)
    return folder


def cached_vectors(cache: Path, key: str, texts: list[str], embed) -> tuple[np.ndarray, float | None]:
    """Vectors from the cache, or computed (and timed) and cached; the key names the revision and the texts."""
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:12]
    path = cache / f"{key}-{digest}.npy"
    if path.is_file():
        return np.load(path), None
    started = time.perf_counter()
    vectors = embed(texts)
    rate = len(texts) / (time.perf_counter() - started)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)
    return vectors, rate


def search(queries: np.ndarray, docs: np.ndarray, doc_ids: list[str], k: int = 100) -> list[list[str]]:
    runs = []
    for start in range(0, len(queries), 256):
        best = top_k(queries[start:start + 256] @ docs.T, k)
        runs += [[doc_ids[j] for j in row] for row in best]
    return runs


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def throughput(embedders: dict[str, Embedder], docs: list[str], queries: list[str], repeats: int) -> dict:
    rates: dict[str, dict[str, list[float]]] = {n: {"documents": [], "queries": []} for n in embedders}
    for e in embedders.values():
        e.provider.embed(docs[:8], "document")  # warm-up
    for r in range(repeats):
        names = list(embedders) if r % 2 == 0 else list(embedders)[::-1]
        for name in names:
            provider = embedders[name].provider
            for part, texts, kind in (("documents", docs, "document"), ("queries", queries, "query")):
                started = time.perf_counter()
                for s in range(0, len(texts), 32):
                    provider.embed(texts[s:s + 32], kind)
                rates[name][part].append(len(texts) / (time.perf_counter() - started))
    return {n: {f"{p}_per_s": round(statistics.median(v), 1) for p, v in parts.items()} for n, parts in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "embedopt" / "onnx-quality"))
    parser.add_argument("--datasets", default="manpages,debian-packages")
    parser.add_argument("--schemes", default=",".join(SCHEMES), help=f"int8 schemes (default all: {','.join(SCHEMES)})")
    parser.add_argument("--speed-docs", type=int, default=256, help="documents per throughput round (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and onnxruntime threads (default: their own); 1 wastes less on a busy machine")
    parser.add_argument("--no-torch", action="store_true", help="leave the torch row out (ratios vs torch too)")
    parser.add_argument("--no-optimized", action="store_true",
                        help="leave out the variants on the graph rewritten by onnxruntime's transformer optimizer")
    parser.add_argument("--limit", type=int, default=None, help="first N documents and queries (a smoke test)")
    parser.add_argument("--queries", type=int, default=None,
                        help="a seeded sample of N queries per dataset (default: all)")
    parser.add_argument("--docs", type=int, default=None,
                        help="a corpus of N documents per dataset: those relevant to the kept queries, plus a seeded "
                             "sample of distractors (default: all)")
    parser.add_argument("--calibration", type=int, default=128,
                        help="documents per dataset that calibrate the static schemes (from the whole corpus)")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "onnx-quality.json"))
    args = parser.parse_args()
    schemes = [s for s in args.schemes.split(",") if s]
    unknown = [s for s in schemes if s not in SCHEMES]
    if unknown:
        sys.exit(f"unknown schemes {unknown}; known: {list(SCHEMES)}")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    cache = Path(args.cache)
    datasets = [load_beir(DATASETS / name) for name in args.datasets.split(",")]
    source = SentenceTransformerProvider(MODEL, device="cpu")
    calib = calibration_texts(datasets, args.calibration)
    for ds in datasets:
        subsample(ds, args.queries, args.docs)
    embedders: dict[str, Embedder] = {}
    manifests: dict[str, dict] = {}

    results: dict = {
        "benchmark": "onnx-quality",
        "model": MODEL,
        "source_revision": source.info.revision,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "onnxruntime": __import__("onnxruntime").__version__,
                    "processor": platform.processor() or platform.machine(), "load_at_start": os.getloadavg()},
        "goal": "int8 NDCG@10 >= 99% of ONNX fp32's on both datasets",
        "default_scheme": DEFAULT_SCHEME,
        "subset": {"queries_per_dataset": args.queries, "docs_per_dataset": args.docs, "limit": args.limit,
                   "calibration_docs_per_dataset": args.calibration},
        "variants": {},
        "datasets": {},
    }
    if args.limit:
        for ds in datasets:
            ds.corpus = dict(list(ds.corpus.items())[: args.limit])
            ds.queries = dict(list(ds.queries.items())[: args.limit])
            ds.qrels = {q: ds.qrels[q] for q in ds.queries}
    per: dict[str, dict[str, dict]] = {ds.name: {} for ds in datasets}
    doc_vectors: dict[str, dict[str, np.ndarray]] = {ds.name: {} for ds in datasets}
    for v in variants(schemes, with_torch=not args.no_torch, optimized=not args.no_optimized):  # one by one: a stopped run keeps whole variants
        name = v["name"]
        if name == "torch":
            embedder = Embedder(source, show_progress=True)
        else:
            provider = OnnxProvider(ensure_export(v, source, cache / "exports", calib), threads=args.threads,
                                    device="cpu")
            embedder, manifests[name] = Embedder(provider, show_progress=True), provider.manifest
        embedders[name] = embedder
        revision = embedder.provider.info.revision
        key = hashlib.sha256(f"{name}|{revision}".encode()).hexdigest()[:10]
        for ds in datasets:
            print(f"{ds.name}: {name}", flush=True)
            docs, doc_rate = cached_vectors(cache / ds.name, f"{name}-{key}-docs", ds.doc_texts(),
                                            embedder.embed_documents)
            queries, _ = cached_vectors(cache / ds.name, f"{name}-{key}-queries", ds.query_texts(),
                                        lambda t, e=embedder: e.embed(t, "query"))
            run = dict(zip(ds.query_ids, search(queries, docs, ds.doc_ids), strict=True))
            row = {k: round(v, 4) for k, v in evaluate(run, ds.qrels).items()}
            if doc_rate is not None:
                row["docs_per_s_full_pass"] = round(doc_rate, 1)
            doc_vectors[ds.name][name] = docs
            per[ds.name][name] = row
    for ds in datasets:
        rows, vectors = per[ds.name], doc_vectors[ds.name]
        for name, docs in vectors.items():
            c = cosines(docs, vectors["onnx-fp32"])
            rows[name]["doc_cosine_to_fp32"] = {"mean": round(float(c.mean()), 6),
                                                "p01": round(float(np.percentile(c, 1)), 6),
                                                "min": round(float(c.min()), 6)}
        for row in rows.values():
            row["ndcg@10_vs_fp32"] = round(row["ndcg@10"] / rows["onnx-fp32"]["ndcg@10"], 4)
            if "torch" in rows:
                row["ndcg@10_vs_torch"] = round(row["ndcg@10"] / rows["torch"]["ndcg@10"], 4)
        results["datasets"][ds.name] = {"documents": len(ds.corpus), "queries": len(ds.queries), "variants": rows}

    pool = datasets[0].doc_texts()
    sample = random.Random(7).sample(pool, min(max(args.speed_docs, 32), len(pool)))
    queries = datasets[0].query_texts()[: 4 * len(sample)]
    speed = throughput(embedders, sample, queries, args.repeats) if args.speed_docs else {}
    for name in embedders:
        m = manifests.get(name)
        meets = [results["datasets"][d]["variants"][name]["ndcg@10_vs_fp32"] >= 0.99 for d in results["datasets"]]
        results["variants"][name] = {
            "precision": m["precision"] if m else "fp32 (torch)",
            "scheme": (m.get("quantization") or {}).get("scheme") if m else None,
            "summary": (m.get("quantization") or {}).get("summary") if m else "sentence-transformers on torch",
            "optimize": m.get("optimize") if m else None,
            "space": m.get("space") if m else "source",
            "model_mb": round(m["files"]["model"]["bytes"] / 2**20, 1) if m else None,
            "probe_min_cosine_vs_torch": round(m["probe"]["min_cosine"], 6) if m else None,
            "probe_mean_cosine_vs_torch": round(m["probe"]["mean_cosine"], 6) if m else None,
            "batch_consistency_min_cosine": batch_consistency(embedders[name], sample[:32]),
            **speed.get(name, {}),
            "docs_per_s_vs_torch": (round(speed[name]["documents_per_s"] / speed["torch"]["documents_per_s"], 2)
                                    if "torch" in speed else None),
            "keeps_99pct_of_fp32_on_all_datasets": all(meets),
        }
    results["seconds"] = round(time.perf_counter() - began, 1)
    results["machine"]["load_at_end"] = os.getloadavg()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    names = list(embedders)
    print(f"{'variant':36} " + " ".join(f"{d[:16]:>16}" for d in results["datasets"]) + "   docs/s  vs torch")
    for name in names:
        cells = " ".join(f"{results['datasets'][d]['variants'][name]['ndcg@10']:.4f} ({results['datasets'][d]['variants'][name]['ndcg@10_vs_fp32']:.3f})"
                         for d in results["datasets"])
        v = results["variants"][name]
        print(f"{name:36} {cells}   {v.get('documents_per_s', float('nan')):6.1f}  {v.get('docs_per_s_vs_torch') or 0:.2f}x")
    print(f"-> {out} ({results['seconds']:.0f} s)")


def batch_consistency(embedder: Embedder, texts: list[str]) -> float:
    """Minimum cosine between a text's vector embedded inside a batch and embedded alone."""
    provider = embedder.provider
    batched = provider.embed(texts, "document").vectors
    alone = np.concatenate([provider.embed([t], "document").vectors for t in texts])
    return round(float(cosines(batched, alone).min()), 6)


if __name__ == "__main__":
    main()
