"""Classification metrics that need no network.

`evaluate.load("accuracy")` downloads metric code from the Hub, which fails offline, so the
metrics live here: `classification_metrics()` as a plain function, and `ClassificationMetrics`
as an `evaluate.Metric` module (`add_batch`/`compute`) built on it, for research code that
already speaks `evaluate`.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _roc_auc(references: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Binary ROC-AUC on the positive class, or one-vs-rest macro over the classes present."""
    num_classes = probabilities.shape[1]
    present = np.unique(references)
    if len(present) < 2:
        return None  # undefined with one class in the references
    if num_classes == 2:
        return float(roc_auc_score(references, probabilities[:, 1]))
    scores = [roc_auc_score(references == c, probabilities[:, c]) for c in present]
    return float(np.mean(scores))


def classification_metrics(
    references: Sequence[int] | np.ndarray,
    logits: np.ndarray | None = None,
    *,
    predictions: Sequence[int] | np.ndarray | None = None,
    label_names: Sequence[str] | None = None,
) -> dict:
    """Accuracy, F1, precision, recall, ROC-AUC, confusion matrix and a per-class report.

    Give `logits` (or probabilities, shape [N, C]) to get ROC-AUC; `predictions` alone gives the rest.
    Flat `f1`/`precision`/`recall` are for the positive class (id 1) in binary tasks and macro averages
    otherwise; `*_macro` are always macro averages.
    """
    references = np.asarray(references, dtype=np.int64)
    probabilities = None
    if logits is not None:
        logits = np.asarray(logits, dtype=np.float64)
        rows_sum_to_one = np.all(logits >= 0) and np.allclose(logits.sum(axis=-1), 1.0)
        probabilities = logits if rows_sum_to_one else softmax(logits)
        predictions = probabilities.argmax(axis=-1)
    if predictions is None:
        raise ValueError("classification_metrics needs logits or predictions.")
    predictions = np.asarray(predictions, dtype=np.int64)
    num_classes = max(
        probabilities.shape[1] if probabilities is not None else 0,
        len(label_names or ()),
        int(max(references.max(initial=0), predictions.max(initial=0))) + 1,
    )
    ids = list(range(num_classes))
    names = list(label_names) if label_names else [str(i) for i in ids]
    precision, recall, f1, support = precision_recall_fscore_support(
        references, predictions, labels=ids, zero_division=0
    )
    binary = num_classes == 2
    result = {
        "accuracy": float((references == predictions).mean()),
        "f1": float(f1[1] if binary else f1.mean()),
        "precision": float(precision[1] if binary else precision.mean()),
        "recall": float(recall[1] if binary else recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "roc_auc": _roc_auc(references, probabilities) if probabilities is not None else None,
        "num_samples": len(references),
        "confusion_matrix": confusion_matrix(references, predictions, labels=ids).tolist(),
        "per_class": {
            names[i]: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in ids
        },
    }
    return result


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """The numeric, flat subset (what loggers and early stopping can use)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


_SCORE_FEATURES = datasets.Features(
    {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
)
_LABEL_FEATURES = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})


class ClassificationMetrics(evaluate.Metric):
    """`evaluate` module for all of the above; predictions are per-class scores or class ids.

    >>> metric = ClassificationMetrics()
    >>> metric.add_batch(predictions=[[0.2, 0.8]], references=[1])
    >>> metric.compute()["accuracy"]
    1.0
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Accuracy, F1, precision, recall, ROC-AUC and confusion matrix, offline.",
            citation="",
            inputs_description="predictions: per-class scores [N, C] or class ids [N]; references: class ids [N].",
            features=[_SCORE_FEATURES, _LABEL_FEATURES],
        )

    def _compute(self, predictions, references, label_names: Sequence[str] | None = None) -> dict:
        predictions = np.asarray(predictions)
        if predictions.ndim == 2:
            return classification_metrics(references, predictions, label_names=label_names)
        return classification_metrics(references, predictions=predictions, label_names=label_names)
