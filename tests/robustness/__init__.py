"""Robustness: hypothesis over inputs, specs and options; faulty servers; damaged files. Bounded in time."""
