"""The naive peer of bench/serve.py: FastAPI, one request -> one ``model.encode`` call.

No batching across requests, no cache, no queue: what a team writes in an afternoon. The endpoint is a plain
``def``, so FastAPI runs each request in its thread pool and concurrent requests encode side by side.

    python bench/peers/naive.py --model FOLDER --port 8091
"""

from __future__ import annotations

import argparse
import base64
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer


class Body(BaseModel):
    input: str | list[str]
    model: str | None = None
    encoding_format: str = "float"


def build(folder: str) -> FastAPI:
    model = SentenceTransformer(folder, device="cpu")
    app = FastAPI()

    @app.post("/v1/embeddings")
    def embeddings(body: Body) -> dict:
        texts = [body.input] if isinstance(body.input, str) else body.input
        vectors = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
        if body.encoding_format == "base64":
            rows: list = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors]
        else:
            rows = vectors.tolist()
        return {"object": "list", "model": body.model,
                "data": [{"object": "embedding", "index": i, "embedding": r} for i, r in enumerate(rows)],
                "usage": {"prompt_tokens": 0, "total_tokens": 0}}

    @app.get("/readyz")
    def ready() -> dict:
        return {"ready": True}

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="a sentence-transformers folder")
    p.add_argument("--port", type=int, default=8091)
    args = p.parse_args()
    uvicorn.run(build(args.model), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
