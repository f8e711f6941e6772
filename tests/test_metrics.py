"""Metrics against hand-computed values, offline, as a function and as an `evaluate` module."""

from __future__ import annotations

import numpy as np
import pytest

from hftransfer.evaluation.metrics import ClassificationMetrics, classification_metrics


def test_binary_metrics_match_hand_computation():
    references = [1, 1, 1, 0, 0, 0]
    # positive-class probabilities; predictions at 0.5: [1, 1, 0, 1, 0, 0]
    positive = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1])
    metrics = classification_metrics(references, np.stack([1 - positive, positive], axis=1))
    # TP=2 FP=1 FN=1 TN=2
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 / 3)
    # ranking pairs (pos, neg): 9 pairs, positive ranked higher in 8 (0.3 < 0.6 is the miss)
    assert metrics["roc_auc"] == pytest.approx(8 / 9)
    assert metrics["confusion_matrix"] == [[2, 1], [1, 2]]


def test_multiclass_macro_and_per_class():
    references = [0, 1, 2, 2]
    predictions = [0, 2, 2, 2]
    metrics = classification_metrics(references, predictions=predictions, label_names=["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics["per_class"]["c"]["precision"] == pytest.approx(2 / 3)
    # macro F1 = (1 + 0 + 0.8) / 3
    assert metrics["f1"] == pytest.approx(1.8 / 3)
    assert metrics["roc_auc"] is None  # needs scores


def test_multiclass_roc_auc_is_one_vs_rest_mean():
    references = np.array([0, 1, 2, 0, 1, 2])
    scores = np.eye(3)[references] * 0.7 + 0.1  # perfect ranking for each class
    assert classification_metrics(references, scores)["roc_auc"] == pytest.approx(1.0)


def test_logits_and_probabilities_give_the_same_metrics():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    references = rng.integers(0, 3, size=50)
    a, b = classification_metrics(references, logits), classification_metrics(references, probabilities)
    assert a["roc_auc"] == pytest.approx(b["roc_auc"])
    assert a["accuracy"] == b["accuracy"]


def test_evaluate_module_accumulates_batches_offline():
    metric = ClassificationMetrics()
    metric.add_batch(predictions=[[0.1, 0.9], [0.8, 0.2]], references=[1, 0])
    metric.add_batch(predictions=[[0.3, 0.7]], references=[0])
    result = metric.compute()
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["num_samples"] == 3


def test_evaluate_module_takes_class_ids():
    assert ClassificationMetrics().compute(predictions=[0, 1, 1], references=[0, 1, 0])["accuracy"] == pytest.approx(
        2 / 3
    )
