"""Evaluation: forward passes without gradients, offline classification metrics, latency, and scoring of
finished runs (`evaluate`, `predict`)."""
