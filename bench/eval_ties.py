"""How much a tie-break by storage order flatters binary search, on manpages (issue 23).

The same MiniLM vectors (from the cache that `embedopt eval` fills), the corpus stored twice: sorted with the
relevant documents first, and reversed. Binary top-10 by Hamming distance, ties broken three ways: by row (what
faiss's IndexBinaryFlat does), by the float score (an upper bound that uses more than the bits), and by a seeded
hash of the doc id (what embedopt does now). Also: the share of queries whose 10th and 11th distances tie.

    python bench/eval_ties.py [--model minilm] [--dims 384,256,128,64]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from _common import DATASETS, RESULTS, machine, write_results

from embedopt import Embedder
from embedopt.codec import Codec
from embedopt.eval import evaluate, load_beir, tie_keys
from embedopt.quantization import hamming_distances, quantize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--dims", default="384,256,128,64")
    parser.add_argument("--dataset", default=str(DATASETS / "manpages"))
    parser.add_argument("--output", default=str(RESULTS / "eval-ties.json"))
    args = parser.parse_args()
    ds = load_beir(args.dataset)
    embedder = Embedder.from_spec(args.model, cache="sqlite", show_progress=False)
    full_docs = embedder.embed_full(ds.doc_texts(), "document")
    full_queries = embedder.embed_full(ds.query_texts(), "query")
    relevant = {d for rels in ds.qrels.values() for d, r in rels.items() if r > 0}
    ids = ds.doc_ids
    first = np.array(sorted(range(len(ids)), key=lambda i: (ids[i] not in relevant, ids[i])))
    orders = {"relevant first": first, "reversed": first[::-1]}
    keys = tie_keys(ids)
    rows = []
    for dim in [int(d) for d in args.dims.split(",")]:
        codec = Codec(dim)
        docs, queries = codec.derive_float(full_docs), codec.derive_float(full_queries)
        dist = hamming_distances(quantize(queries, "ubinary"), quantize(docs, "ubinary"))
        floats = queries @ docs.T
        part = np.sort(dist, axis=1)
        row = {"dim": dim, "queries_tied_at_10_11": round(float((part[:, 9] == part[:, 10]).mean()), 4)}
        for name, order in orders.items():
            d = dist[:, order]
            by = {"row": np.lexsort((np.broadcast_to(np.arange(len(order)), d.shape), d), axis=1),
                  "float score": np.lexsort((-floats[:, order], d), axis=1),
                  "id hash": np.lexsort((np.broadcast_to(keys[order], d.shape), d), axis=1)}
            for how, ranked in by.items():
                run = {q: [ids[order[j]] for j in r[:10]] for q, r in zip(ds.query_ids, ranked, strict=True)}
                row[f"ndcg@10 {name}, ties by {how}"] = round(evaluate(run, ds.qrels)["ndcg@10"], 4)
        rows.append(row)
        print(row)
    write_results(args.output, {"dataset": ds.name, "model": args.model, "documents": len(ids),
                                "queries": len(ds.queries), "rows": rows, "loadavg": list(os.getloadavg()),
                                "machine": machine()})


if __name__ == "__main__":
    main()
