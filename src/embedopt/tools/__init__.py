"""Offline tooling, above the runtime: evaluation grids and their reports, fine-tuning, reranker training and
model export. Nothing in the runtime packages imports from here."""
