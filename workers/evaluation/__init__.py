"""Offline evaluation: splits, the replayed candidate stage, baselines, metrics and the harness."""
