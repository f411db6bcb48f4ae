"""Evaluation: metrics aggregation, comparison tables and reports."""
