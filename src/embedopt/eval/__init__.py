"""Evaluation: BEIR-format datasets and ranking metrics."""

from .beir import BeirDataset, load_beir
from .metrics import average_precision_at_k, evaluate, mrr_at_k, ndcg_at_k, recall_at_k, top_k

__all__ = ["BeirDataset", "average_precision_at_k", "evaluate", "load_beir", "mrr_at_k", "ndcg_at_k", "recall_at_k",
           "top_k"]
