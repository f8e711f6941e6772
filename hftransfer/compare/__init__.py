"""Compare transfer strategies on one recipe: same data and seed, one report (`hftransfer compare`)."""

from hftransfer.compare.plan import DEFAULT_STRATEGIES, CompareError, parse_strategies
from hftransfer.compare.runner import run_comparison

__all__ = ["DEFAULT_STRATEGIES", "CompareError", "parse_strategies", "run_comparison"]
