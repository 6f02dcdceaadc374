"""Rebuild examples/data/manpages-sample from the full manpages set (../shared/datasets/manpages).

    python examples/data/make_sample.py ../shared/datasets/manpages examples/data/manpages-sample

Takes 400 pages at random (seed 0) and keeps every query whose relevant pages are all in the sample.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

N_DOCS = 400


def main(src: Path, dst: Path) -> None:
    docs = [json.loads(line) for line in (src / "corpus.jsonl").open(encoding="utf-8")]
    keep = {d["_id"] for d in random.Random(0).sample(docs, N_DOCS)}
    qrels: dict[str, dict[str, str]] = {}
    with (src / "qrels" / "test.tsv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = row["score"]
    qrels = {q: r for q, r in qrels.items() if set(r) <= keep}
    (dst / "qrels").mkdir(parents=True, exist_ok=True)
    with (dst / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for d in docs:
            if d["_id"] in keep:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
    with (dst / "queries.jsonl").open("w", encoding="utf-8") as f:
        for line in (src / "queries.jsonl").open(encoding="utf-8"):
            q = json.loads(line)
            if q["_id"] in qrels:
                f.write(json.dumps(q, ensure_ascii=False) + "\n")
    with (dst / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, r in qrels.items():
            for d, s in r.items():
                f.write(f"{q}\t{d}\t{s}\n")
    print(f"{len(keep)} documents, {len(qrels)} queries -> {dst}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
