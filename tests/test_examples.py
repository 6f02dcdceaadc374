"""The framework examples run offline and print what they promise."""

import os
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


def run_example(name: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run = subprocess.run([sys.executable, f"examples/{name}"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_langchain_rag_example(trained_reranker_dir):
    out = run_example("langchain_rag.py")
    assert "indexed 400 man pages three ways" in out
    for title in ("InMemoryVectorStore", "QdrantVectorStore (local mode)", "EmbedOptReranker (cross-encoder)",
                  "EmbedOptRetriever (binary + int8 rescore)"):
        assert out.count(title) == 3, title  # one block per query
    assert "chown.1" in out  # "change the owner of a file" finds chown
    assert "cache:" in out and "sqlite: hits=" in out


def test_llamaindex_rag_example(trained_reranker_dir):
    out = run_example("llamaindex_rag.py")
    assert "indexed 400 man pages three ways" in out
    for title in ("VectorStoreIndex (SimpleVectorStore)", "VectorStoreIndex (Qdrant, local mode)",
                  "EmbedOptRerank (cross-encoder)", "EmbedOptRetriever (binary + int8 rescore)"):
        assert out.count(title) == 3, title
    assert "chown.1" in out and "cache:" in out
