"""Encode throughput on the manpages corpus: torch (raw sentence-transformers and embedopt's Embedder), ONNX fp32
and int8 (embedopt's OnnxProvider), and a static model; plus the RSS of a fresh process per backend.

    .venv/bin/python bench/embed.py [--dataset ../shared/datasets/manpages] [--repeats 2] [--bs1 300]

Writes bench/results/embed.json. Peers are measured in the same run, interleaved (the order alternates per
repeat), on the same texts, and every figure is reported with its ratio against torch (SentenceTransformerProvider
through the Embedder, no cache): the Embedder vs raw ``SentenceTransformer.encode`` (the overhead embedopt adds),
ONNX fp32 and int8 vs torch, and the static model vs torch. Three workloads: the documents (DESCRIPTION sections,
up to 300 words, truncated by MiniLM at 256 tokens) in one call, the queries (one-line sentences) in one call, and
single queries one call each (``--bs1`` of them). The ONNX exports are made with embedopt's exporter on first use
and kept in ``--onnx-dir`` (the int8 one with the default scheme).

RSS: each backend is loaded in a fresh Python process that embeds 32 documents; the JSON has its RSS after load,
after the embedding, and the time to import and load. The ONNX process must not import torch (checked).

Goals (issue 18, this 2-core CPU): ONNX fp32 >= 1.3x torch on documents, >= 2x on queries, >= 3x at batch size 1;
int8 >= 2x on documents; ONNX RSS <= half of torch's. The JSON's ``goals`` says which are met. Runtime: about 12
minutes quiet at --repeats 2 (the torch document passes dominate), plus about 2 minutes for the two exports the
first time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from embedopt import Embedder
from embedopt.eval import load_beir
from embedopt.providers import SentenceTransformerProvider, StaticProvider
from embedopt.providers.onnx import MANIFEST, OnnxProvider
from embedopt.providers.static import cached_distill

ROOT = Path(__file__).resolve().parent.parent
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TORCH = "torch"  # the reference every ratio is against: SentenceTransformerProvider through the Embedder


def timed(fn: Callable[[list[str]], object], texts: list[str], *, one_by_one: bool = False) -> float:
    started = time.perf_counter()
    if one_by_one:
        for t in texts:
            fn([t])
    else:
        fn(texts)
    return len(texts) / (time.perf_counter() - started)


def measure(texts: list[str], backends: dict[str, Callable[[list[str]], object]], repeats: int, *,
            one_by_one: bool = False, static_runs: int = 5) -> dict:
    """Texts/s per backend: median of ``repeats`` passes, interleaved, the order reversed every other pass."""
    runs: dict[str, list[float]] = {name: [] for name in backends}
    for fn in backends.values():
        fn(texts[:32])  # warm-up
    for r in range(repeats):
        names = list(backends) if r % 2 == 0 else list(backends)[::-1]
        for name in names:
            # the static model is 100x faster: more passes so its median is not one noisy sample
            for _ in range(static_runs if name == "static" else 1):
                runs[name].append(timed(backends[name], texts, one_by_one=one_by_one))
    rate = {name: statistics.median(v) for name, v in runs.items()}
    out: dict = {"texts": len(texts), "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
                 "one_call_per_text": one_by_one}
    for name, value in rate.items():
        out[f"{name}_per_s"] = round(value, 2)
        if name != TORCH:
            out[f"{name}_vs_torch_x"] = round(value / rate[TORCH], 2)
    out["runs"] = {name: [round(x, 2) for x in v] for name, v in runs.items()}
    return out


def ensure_export(source: SentenceTransformerProvider, folder: Path, quantize: str | None) -> Path:
    from embedopt.tools.export_onnx import DEFAULT_SCHEME, export_onnx

    manifest = folder / MANIFEST
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        scheme = (data.get("quantization") or {}).get("scheme")
        if data["source"]["revision"] == source.info.revision and scheme == (DEFAULT_SCHEME if quantize else None):
            return folder

    print(f"exporting {folder.name} ...", flush=True)
    export_onnx(source, folder, quantize=quantize)  # type: ignore[arg-type]
    return folder


_RSS_CODE = """
import json, os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
def rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}
started = time.perf_counter()
kind, where, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if kind == "torch":
    from embedopt.providers import SentenceTransformerProvider
    provider = SentenceTransformerProvider(where, device="cpu")
elif kind == "static":
    from embedopt.providers import StaticProvider
    provider = StaticProvider(where)
else:
    from embedopt.providers.onnx import OnnxProvider
    provider = OnnxProvider(where)
loaded = time.perf_counter() - started
after_load = rss()["VmRSS"]
provider.embed(texts, "document")
after = rss()
print(json.dumps({"rss_mib_after_load": round(after_load, 1), "rss_mib_after_embed": round(after["VmRSS"], 1),
                  "peak_rss_mib": round(after["VmHWM"], 1), "import_and_load_s": round(loaded, 2),
                  "torch_imported": "torch" in sys.modules}))
"""


def process_rss(kind: str, where: str, texts: list[str]) -> dict:
    """Load one backend in a fresh interpreter, embed ``texts``, report its memory and load time."""
    done = subprocess.run([sys.executable, "-c", _RSS_CODE, kind, where, json.dumps(texts)], check=True,
                          capture_output=True, text=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


def goals(results: dict) -> dict:
    d, q, one, rss = results["documents"], results["queries"], results["single_queries"], results["rss"]

    def goal(value: float, target: float, *, at_most: bool = False) -> dict:
        return {"measured": value, "target": target, "met": value <= target if at_most else value >= target}

    return {
        "onnx_fp32_documents_x": goal(d["onnx_fp32_vs_torch_x"], 1.3),
        "onnx_fp32_queries_x": goal(q["onnx_fp32_vs_torch_x"], 2.0),
        "onnx_fp32_bs1_x": goal(one["onnx_fp32_vs_torch_x"], 3.0),
        "onnx_int8_documents_x": goal(d["onnx_int8_vs_torch_x"], 2.0),
        "onnx_fp32_rss_vs_torch": goal(round(rss["onnx_fp32"]["rss_mib_after_embed"]
                                             / rss["torch"]["rss_mib_after_embed"], 3), 0.5, at_most=True),
        "onnx_int8_rss_vs_torch": goal(round(rss["onnx_int8"]["rss_mib_after_embed"]
                                             / rss["torch"]["rss_mib_after_embed"], 3), 0.5, at_most=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "manpages"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--bs1", type=int, default=300, help="single queries timed one call each")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N documents and queries")
    parser.add_argument("--onnx-dir", default=str(Path.home() / ".cache" / "embedopt" / "bench-onnx"))
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "embed.json"))
    args = parser.parse_args()

    import onnxruntime
    import torch

    began = time.perf_counter()
    ds = load_beir(args.dataset)
    docs, queries = ds.doc_texts()[: args.limit], ds.query_texts()[: args.limit]
    provider = SentenceTransformerProvider(MODEL, device="cpu")
    onnx_dir = Path(args.onnx_dir)
    fp32_dir = ensure_export(provider, onnx_dir / "minilm-fp32", None)
    int8_dir = ensure_export(provider, onnx_dir / "minilm-int8", "int8")
    static_dir = cached_distill(MODEL)
    embedders = {
        TORCH: Embedder(provider, show_progress=False),
        "onnx_fp32": Embedder(OnnxProvider(fp32_dir), show_progress=False),
        "onnx_int8": Embedder(OnnxProvider(int8_dir), show_progress=False),
        "static": Embedder(StaticProvider(static_dir), show_progress=False),
    }
    st_model = provider.model

    def raw_encode(texts: list[str]) -> object:
        return st_model.encode(texts, batch_size=32)

    def batched(kind: str) -> dict[str, Callable[[list[str]], object]]:
        fns: dict[str, Callable[[list[str]], object]] = {"sentence_transformers_encode": raw_encode}
        for name, e in embedders.items():
            fns[name] = e.embed_documents if kind == "document" else (lambda t, e=e: e.embed(t, "query"))
        return fns

    int8_manifest = embedders["onnx_int8"].provider.manifest  # type: ignore[attr-defined]
    results: dict = {
        "benchmark": "embed",
        "dataset": ds.name,
        "model": provider.info.model,
        "static_model": embedders["static"].provider.info.model,
        "onnx": {"fp32": str(fp32_dir), "int8": str(int8_dir), "int8_scheme": int8_manifest["quantization"]["scheme"],
                 "int8_space": int8_manifest["space"]},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                    "processor": platform.processor() or platform.machine(), "load_at_start": os.getloadavg()},
        "repeats": args.repeats,
        "reference": "torch = SentenceTransformerProvider through the Embedder (no cache); *_vs_torch_x = rate / torch",
    }
    print("documents ...", flush=True)
    results["documents"] = measure(docs, batched("document"), args.repeats)
    print("queries ...", flush=True)
    results["queries"] = measure(queries, batched("query"), args.repeats)
    print("single queries ...", flush=True)
    single = {"sentence_transformers_encode": raw_encode,
              **{name: (lambda t, e=e: e.embed(t, "query")) for name, e in embedders.items()}}
    results["single_queries"] = measure(queries[: args.bs1], single, args.repeats, one_by_one=True, static_runs=2)
    for part in ("documents", "queries"):  # the names bench/summary.py reads
        r = results[part]
        r["embedder_no_cache_per_s"] = r[f"{TORCH}_per_s"]
        r["embedder_overhead_pct"] = round(100 * (r["sentence_transformers_encode_per_s"] / r[f"{TORCH}_per_s"] - 1), 2)
        r["static_vs_transformer_x"] = round(r["static_vs_torch_x"], 1)
    print("process RSS ...", flush=True)
    sample = docs[:32]
    results["rss"] = {
        "torch": process_rss("torch", MODEL, sample),
        "onnx_fp32": process_rss("onnx", str(fp32_dir), sample),
        "onnx_int8": process_rss("onnx", str(int8_dir), sample),
        "static": process_rss("static", str(static_dir), sample),
    }
    for name in ("onnx_fp32", "onnx_int8", "static"):
        r = results["rss"][name]
        r["rss_vs_torch"] = round(r["rss_mib_after_embed"] / results["rss"]["torch"]["rss_mib_after_embed"], 3)
    if results["rss"]["onnx_fp32"]["torch_imported"] or results["rss"]["onnx_int8"]["torch_imported"]:
        sys.exit("the ONNX process imported torch: its RSS figure would be meaningless")
    results["goals"] = goals(results)
    results["seconds"] = round(time.perf_counter() - began, 1)
    results["machine"]["load_at_end"] = os.getloadavg()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    names = ["sentence_transformers_encode", TORCH, "onnx_fp32", "onnx_int8", "static"]
    print(f"{'':16}" + "".join(f"{n[:20]:>22}" for n in names))
    for part in ("documents", "queries", "single_queries"):
        r = results[part]
        cells = "".join(f"{r[f'{n}_per_s']:>12,.1f}/s " + (f"{r[f'{n}_vs_torch_x']:>6.2f}x" if n != TORCH else " " * 7)
                        for n in names)
        print(f"{part:16}{cells}")
    print("RSS MiB after load/embed: " + ", ".join(
        f"{n} {v['rss_mib_after_load']:.0f}/{v['rss_mib_after_embed']:.0f}" for n, v in results["rss"].items()))
    print("goals: " + ", ".join(f"{k} {v['measured']} ({'met' if v['met'] else 'NOT met'})"
                                for k, v in results["goals"].items()))
    print(f"-> {out} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
