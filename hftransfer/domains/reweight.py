"""Instance reweighting: training rows weighted by a domain classifier's odds that they come from the target.

Before training, a logistic regression is fitted on the model's own pooled features (the pretrained encoder, in
eval mode) of the training rows against the unlabelled target rows; each training row's weight is its odds of
being a target row (corrected for the two pools' sizes), clipped at `domain.reweight_clip` and normalised to
mean 1. The weights are a column the objective's weighted cross-entropy reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from datasets import Dataset
from torch import nn

from hftransfer.config.recipe import DomainConfig, TrainConfig
from hftransfer.data.prepared import AUGMENT_COLUMN
from hftransfer.domains.data import ROW_WEIGHT
from hftransfer.domains.layers import FeatureTap, classifier_head
from hftransfer.evaluation.inference import dataset_outputs

if TYPE_CHECKING:
    from hftransfer.data import PreparedData


def pooled_features(model: nn.Module, rows: Dataset, collator: Callable, batch_size: int) -> np.ndarray:
    """The pooled representation the model's head reads, for every row (eval mode, no augmentation)."""
    if AUGMENT_COLUMN in rows.column_names:
        rows = rows.remove_columns(AUGMENT_COLUMN)
    tap = FeatureTap(classifier_head(model))
    try:
        return dataset_outputs(model, rows, collator, lambda _output, _inputs: tap.take(), batch_size)
    finally:
        tap.handle.remove()


def odds_weights(train: np.ndarray, target: np.ndarray, clip: float, seed: int = 0) -> np.ndarray:
    """Weights of the `train` rows: p(target|x)/p(train|x) from a logistic regression, times |train|/|target|
    (the density ratio), clipped to [0, clip], normalised to mean 1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    features = StandardScaler().fit_transform(np.concatenate([train, target]))
    is_target = np.concatenate([np.zeros(len(train)), np.ones(len(target))])
    classifier = LogisticRegression(max_iter=1000, random_state=seed).fit(features, is_target)
    p = classifier.predict_proba(features[: len(train)])[:, 1]
    odds = p / np.clip(1.0 - p, 1e-12, None) * (len(train) / len(target))
    weights = np.clip(odds, 0.0, clip)
    return weights / weights.mean() if weights.mean() > 0 else np.ones(len(train))


def reweight_rows(
    model: nn.Module,
    data: PreparedData,
    unlabelled: Dataset | None,
    collator: Callable | None,
    domain: DomainConfig,
    train: TrainConfig,
) -> PreparedData:
    """`data` with a per-row loss weight column on its training rows (the source's, in a joint run)."""
    if unlabelled is None or collator is None:
        raise ValueError("Reweighting needs the unlabelled target rows and the task's collator.")
    batch = train.eval_batch_size
    source = pooled_features(model, data.train, collator, batch)
    target = pooled_features(model, unlabelled, collator, batch)
    weights = odds_weights(source, target, domain.reweight_clip, train.seed)
    data.train = data.train.add_column(ROW_WEIGHT, weights.astype(np.float32).tolist())
    ess = float(weights.sum() ** 2 / (weights**2).sum())  # Kish's effective sample size
    data.notes["reweight"] = {"min": float(weights.min()), "max": float(weights.max()), "effective_rows": ess}
    return data
