"""hftransfer: transfer learning on Hugging Face checkpoints.

`hftransfer.finetune(model, train, eval, strategy=..., **options)` runs the whole pipeline from Python and returns
a `Run`; the pieces work on their own too: `hftransfer.strategies.build_strategy(...).prepare(model)`,
`hftransfer.StrategyTrainer` (a strategy's loss and hooks inside your own `Trainer` setup),
`hftransfer.data.prepare_text_data`, `hftransfer.evaluation.metrics.classification_metrics`.
Attributes load lazily, so `import hftransfer` (and `hftransfer --help`) does not import torch.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "finetune": "hftransfer.api",
    "Run": "hftransfer.api",
    "StrategyTrainer": "hftransfer.training.loops.trainer",
    "build_strategy": "hftransfer.strategies",
}

__all__ = ["Run", "StrategyTrainer", "__version__", "build_strategy", "finetune"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hftransfer' has no attribute {name!r}")
