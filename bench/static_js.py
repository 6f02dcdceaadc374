"""The static model exported to ONNX, run in Python, Node and headless Chromium, against Python's StaticProvider.

    .venv/bin/python bench/static_js.py [--dataset ../shared/datasets/manpages] [--repeats 3] [--limit N]
                                        [--no-browser]

Writes bench/results/static-js.json: texts/s per runtime on the dataset's documents and queries and on the fixed
parity set (js/test/parity-texts.json), each with its ratio to StaticProvider (model2vec, the peer) measured in
the same run; the size of the float and int8 exports; and how far each runtime's vectors are from
StaticProvider's (max abs diff for the float export, cosine for int8). Needs `npm ci` in js/ and, for the
browser rows, Debian's chromium. About 3 minutes on 2 cores.

Runtimes: Python StaticProvider (model2vec: Rust tokenizer + numpy); Python onnxruntime on the export
(`ExportedStatic`); Node (onnxruntime-node, native); Chromium (onnxruntime-web, WebAssembly, one thread: the
harness page is not cross-origin isolated). Every runtime embeds the whole set once to warm up, then `--repeats`
times; the median run counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from embedopt.eval import load_beir
from embedopt.specs import shared_provider
from embedopt.tools.export_static import ExportedStatic, export_static

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "js"


def timed_python(fn, texts: list[str], repeats: int) -> list[float]:
    fn(texts)  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(texts)
        seconds.append(time.perf_counter() - started)
    return seconds


def run_js(script: str, model: Path, texts_file: Path, repeats: int, out: Path, extra: list[str]) -> dict:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not installed: the Makefile installs Debian's nodejs")
    cmd = [node, f"harness/{script}", "--model", str(model), "--texts", str(texts_file), "--repeat", str(repeats),
           "--out", str(out), *extra]
    done = subprocess.run(cmd, cwd=JS, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    report: dict = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def closeness(got: np.ndarray, ref: np.ndarray) -> dict:
    keep = np.linalg.norm(ref, axis=1) > 0
    cos = (got[keep] * ref[keep]).sum(axis=1) / np.maximum(
        np.linalg.norm(got[keep], axis=1) * np.linalg.norm(ref[keep], axis=1), 1e-30)
    return {"max_abs_diff": float(np.abs(got - ref).max()), "differing_values": int((got != ref).sum()),
            "min_cosine": round(float(cos.min()), 6), "mean_cosine": round(float(cos.mean()), 6)}


def measure(name: str, texts: list[str], provider, exports: dict[str, Path], work: Path, repeats: int,
            browser: str | None) -> dict:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    texts_file = folder / "texts.json"
    texts_file.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    ref = np.asarray(provider.embed(texts, "document").vectors, dtype=np.float32)
    python_s = statistics.median(timed_python(lambda t: provider.embed(t, "document"), texts, repeats))
    row: dict = {"texts": len(texts), "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
                 "python_static_per_s": round(len(texts) / python_s, 1), "runtimes": {}}
    for kind, model in exports.items():
        onnx = ExportedStatic(model)
        onnx_s = statistics.median(timed_python(onnx.encode, texts, repeats))
        runs = {"python_onnxruntime": {"texts_per_s": len(texts) / onnx_s, **closeness(onnx.encode(texts), ref)}}
        out = folder / f"node-{kind}.f32"
        report = run_js("node-run.mjs", model, texts_file, repeats, out, [])
        runs["node"] = {**report, **closeness(np.fromfile(out, dtype="<f4").reshape(ref.shape), ref)}
        if browser:
            out = folder / f"chromium-{kind}.f32"
            report = run_js("browser-run.mjs", model, texts_file, repeats, out,
                            ["--chromium", browser, "--timeout", "600"])
            runs["chromium"] = {**report, **closeness(np.fromfile(out, dtype="<f4").reshape(ref.shape), ref)}
        for runtime, r in runs.items():
            r["texts_per_s"] = round(r["texts_per_s"], 1)
            r["vs_python_static_x"] = round(r["texts_per_s"] * python_s / len(texts), 3)
            row["runtimes"][f"{runtime}_{kind}"] = r
    return row


def folder_bytes(folder: Path) -> dict:
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
    return {"files": files, "total": sum(files.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "manpages"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N documents and queries")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium rows")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "static-js.json"))
    args = parser.parse_args()

    browser = None if args.no_browser else (shutil.which("chromium") or "/usr/bin/chromium")
    if browser and not os.path.exists(browser):
        raise SystemExit("chromium is not installed (apt-get install chromium), or pass --no-browser")
    if not (JS / "node_modules" / "onnxruntime-node").is_dir():
        raise SystemExit("js/node_modules is missing: run `npm ci` in js/")
    import onnxruntime

    provider = shared_provider("static:distill")
    ds = load_beir(args.dataset)
    sets = {
        "documents": ds.doc_texts()[: args.limit],
        "queries": ds.query_texts()[: args.limit],
        "parity_set": json.loads((JS / "test" / "parity-texts.json").read_text(encoding="utf-8")),
    }
    with tempfile.TemporaryDirectory(prefix="static-js-") as tmp:
        work = Path(tmp)
        exports = {"float": work / "export-float", "int8": work / "export-int8"}
        manifests = {kind: export_static(provider, folder, int8=kind == "int8") for kind, folder in exports.items()}
        sizes = {kind: folder_bytes(folder) for kind, folder in exports.items()}
        results = {
            "benchmark": "static-js",
            "dataset": ds.name,
            "static_model": provider.info.model,
            "peer": "StaticProvider (model2vec StaticModel.encode) in Python, same run",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "processor": platform.processor() or platform.machine(),
                        "onnxruntime_python": onnxruntime.__version__},
            "repeats": args.repeats,
            "sizes": {**sizes, "int8_vs_float_model_onnx": round(
                sizes["int8"]["files"]["model.onnx"] / sizes["float"]["files"]["model.onnx"], 3)},
            "export_check": {kind: m["verification"] for kind, m in manifests.items()},
            "sets": {name: measure(name, texts, provider, exports, work, args.repeats, browser)
                     for name, texts in sets.items()},
        }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for name, row in results["sets"].items():
        print(f"{name:11} ({row['texts']} texts, {row['mean_chars']} chars)  python static {row['python_static_per_s']:>9,.0f}/s")
        for runtime, r in row["runtimes"].items():
            print(f"    {runtime:26} {r['texts_per_s']:>9,.0f}/s  x{r['vs_python_static_x']:<6}  "
                  f"max|diff| {r['max_abs_diff']:.2g}  min cos {r['min_cosine']}")
    print(f"model.onnx: float {sizes['float']['files']['model.onnx']:,} B, int8 {sizes['int8']['files']['model.onnx']:,} B")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
