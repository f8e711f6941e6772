"""hftransfer: transfer learning on Hugging Face checkpoints.

Research code can use the pieces without the runner: `hftransfer.strategies.build_strategy`,
`hftransfer.data.prepare_text_data`, `hftransfer.evaluation.metrics.classification_metrics`.
"""

__version__ = "0.1.0"
