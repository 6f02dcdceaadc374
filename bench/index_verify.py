"""What checking an index folder costs: QuantizedIndex.save (which writes the manifest: sha256 of every file) and
QuantizedIndex.load with verify=True (sizes and sha256 of every file) against verify=False (sizes only, the
cost of loading before manifests existed), interleaved in one run so machine load hits each alike.

    .venv/bin/python bench/index_verify.py [--n 200000] [--dim 384] [--repeats 5]

Random unit vectors (the figure is about bytes on disk, not retrieval), binary shortlist, int8 vectors and,
with --keep-float, float16 copies. The folder is read from the page cache after the first pass (a cold disk adds
its read time to both). Writes bench/results/index_verify.json with os.getloadavg() before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, machine, write_results

from embedopt import Fingerprint
from embedopt.stores import QuantizedIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep-float", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    fp = Fingerprint("bench", "random", "r1", "document", "", args.dim, True)
    v = np.random.default_rng(0).standard_normal((args.n, args.dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    index = QuantizedIndex(fp, keep_float=args.keep_float)
    index.add([f"d{i}" for i in range(args.n)], v)
    times: dict[str, list[float]] = {"save": [], "load_verify": [], "load_sizes_only": []}
    with tempfile.TemporaryDirectory(prefix="embedopt-verify-") as tmp:
        folder = Path(tmp) / "idx"
        for _ in range(args.repeats):
            started = time.perf_counter()
            index.save(folder)
            times["save"].append(time.perf_counter() - started)
            for verify, key in ((True, "load_verify"), (False, "load_sizes_only")):
                started = time.perf_counter()
                QuantizedIndex.load(folder, verify=verify)
                times[key].append(time.perf_counter() - started)
        folder_bytes = sum(p.stat().st_size for p in folder.iterdir())
    med = {k: round(statistics.median(t) * 1e3, 1) for k, t in times.items()}
    result = {
        "what": "QuantizedIndex save / load(verify=True) / load(verify=False), median ms",
        "n": args.n, "dim": args.dim, "keep_float": args.keep_float, "repeats": args.repeats,
        "folder_mb": round(folder_bytes / 1e6, 1), "median_ms": med,
        "all_ms": {k: [round(x * 1e3, 1) for x in t] for k, t in times.items()},
        "verify_over_sizes_only": round(med["load_verify"] / med["load_sizes_only"], 2),
        "checksum_mb_per_s": round(folder_bytes / 1e6 / max(1e-9, (med["load_verify"] - med["load_sizes_only"]) / 1e3)),
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "machine": machine(),
    }
    out = write_results(RESULTS / "index_verify.json", result)
    print(f"{args.n:,} x {args.dim} ({result['folder_mb']} MB): save {med['save']} ms, load verify "
          f"{med['load_verify']} ms, sizes only {med['load_sizes_only']} ms "
          f"(x{result['verify_over_sizes_only']}); load avg {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}; {out}")


if __name__ == "__main__":
    main()
