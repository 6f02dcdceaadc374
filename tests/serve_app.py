"""``python -m tests.serve_app CONFIG --port P``: the gateway in its own process through ``embedopt.serve.run``
(uvicorn, its SIGTERM handling, the lifespan), with test models for names whose spec is
``test:hash[:DIM[:DELAY_SECONDS]]`` (hash vectors from a FunctionProvider, optionally slow). Every other model
is loaded from its spec as in production."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    from embedopt.serve import load_config, run

    from .serve_helpers import SlowHash, hash_embedder

    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    cfg = replace(load_config(args.config), port=args.port)
    embedders = {}
    for m in cfg.models:
        if m.spec and m.spec.startswith("test:hash"):
            parts = m.spec.split(":")[2:]
            fn = SlowHash(dim=int(parts[0]) if parts else 32, delay=float(parts[1]) if len(parts) > 1 else 0.0)
            embedders[m.name] = hash_embedder(fn, cache=cfg.cache, price=m.price_per_1m_tokens or 0.0)
    return run(cfg, embedders=embedders)


if __name__ == "__main__":
    sys.exit(main())
