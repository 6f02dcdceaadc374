"""Evaluation: BEIR-format datasets and ranking metrics."""

from .beir import JOINS, BeirDataset, join_text, load_beir
from .metrics import average_precision_at_k, evaluate, mrr_at_k, ndcg_at_k, recall_at_k, tie_keys, top_k

__all__ = ["JOINS", "BeirDataset", "average_precision_at_k", "evaluate", "join_text", "load_beir", "mrr_at_k",
           "ndcg_at_k", "recall_at_k", "tie_keys", "top_k"]
