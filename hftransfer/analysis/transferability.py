"""Transferability estimators: how well frozen features of a checkpoint suit a labelled task, without fine-tuning.

Plain functions of numpy arrays (features [N, D], integer labels [N]), so research code can use them without
the rest of hftransfer:

- `logme`: LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
  ICML 2021): the maximum marginal likelihood (evidence) of a Bayesian linear model from features to each
  one-hot label column, averaged over classes and divided by N. Higher is better; comparable across
  checkpoints on the same data.
- `h_score`: H-score (Bao et al., "An Information-theoretic Approach to Transferability in Task Transfer
  Learning", ICIP 2019): tr(cov(f)^-1 cov(E[f | y])), by default with the Ledoit-Wolf shrinkage of Ibrahim et
  al. (ICLR 2022) that keeps it meaningful when dims approach rows. Higher is better, at most (classes - 1).
- `linear_probe`: cross-validated accuracy of a logistic regression on the frozen features: the honest
  baseline (slower, but what a frozen-backbone classifier would actually reach).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hftransfer.errors import UserError

_EPS = 1e-5  # the reference implementation's guard against a zero denominator
# The reference stops after 11 steps ("should converge after at most 10 steps"), true when rows >> dims; with
# fewer rows than dims the fixed point moves slowly and 11 steps can leave the evidence well below its maximum.
_MAX_ITERATIONS = 100


def _check(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2:
        raise UserError(f"Features must be a 2-D array [rows, dims], got shape {features.shape}.")
    if labels.shape != (features.shape[0],):
        raise UserError(f"Need one label per feature row: {features.shape[0]} rows but labels of shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"Labels must be integer class ids, got {labels.dtype}.")
    if not np.isfinite(features).all():
        raise UserError("Features contain NaN or infinite values; the checkpoint's forward pass is broken.")
    if len(np.unique(labels)) < 2:
        raise UserError("Labels hold a single class; transferability needs at least two.")
    return features, labels


@dataclass(frozen=True)
class Evidence:
    """Maximum evidence of one target column, at the prior precision `alpha` and noise precision `beta`."""

    log_evidence: float
    """Log marginal likelihood divided by N."""
    alpha: float
    beta: float


def class_evidence(u: np.ndarray, s: np.ndarray, num_dims: int, target: np.ndarray) -> Evidence:
    """Fixed-point maximisation of the evidence of y = F w + noise, w ~ N(0, I/alpha), noise ~ N(0, 1/beta).

    `u`, `s` are the thin SVD of the features F [N, D] (F = u diag(s) v^T); MacKay's updates alternate
    gamma = sum sigma/(sigma + alpha/beta), alpha = gamma / |m|^2, beta = (N - gamma) / |y - F m|^2 with the
    posterior mean m, as in LogME's reference implementation; stops when alpha/beta moves by < 0.1%.
    """
    n = target.shape[0]
    sigma = s**2  # eigenvalues of F^T F; the other num_dims - len(s) are zero
    x2 = (u.T @ target) ** 2  # squared projections of y on the left singular vectors
    outside = max(float(target @ target - x2.sum()), 0.0)  # part of |y|^2 no feature direction can explain
    alpha, beta = 1.0, 1.0
    for _ in range(_MAX_ITERATIONS):
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())
        m2 = float((sigma * x2 / (t + sigma) ** 2).sum())  # |m|^2
        residual2 = float((x2 / (1.0 + sigma / t) ** 2).sum()) + outside  # |y - F m|^2
        alpha = gamma / (m2 + _EPS)
        beta = (n - gamma) / (residual2 + _EPS)
        if abs(alpha / beta - t) / t <= 1e-3:
            break
    # With the final (alpha, beta): recompute m and the residual, then the closed-form log evidence
    # D/2 log a + N/2 log b - 1/2 log|a I + b F^T F| - b/2 |y - F m|^2 - a/2 |m|^2 - N/2 log 2pi.
    t = alpha / beta
    m2 = float((sigma * x2 / (t + sigma) ** 2).sum())
    residual2 = float((x2 / (1.0 + sigma / t) ** 2).sum()) + outside
    log_det = float(np.log(alpha + beta * sigma).sum()) + (num_dims - len(sigma)) * np.log(alpha)
    evidence = (
        num_dims / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - 0.5 * log_det
        - beta / 2 * residual2
        - alpha / 2 * m2
        - n / 2 * np.log(2 * np.pi)
    )
    return Evidence(float(evidence) / n, alpha, beta)


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME: the per-sample maximum log evidence, averaged over the one-hot columns of every class."""
    features, labels = _check(features, labels)
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    evidences = [
        class_evidence(u, s, features.shape[1], (labels == k).astype(np.float64)).log_evidence
        for k in np.unique(labels)
    ]
    return float(np.mean(evidences))


def h_score(features: np.ndarray, labels: np.ndarray, shrinkage: float | None = None) -> float:
    """H-score tr(cov(f)^-1 (1 - a) cov(g)), g = each row's class-mean feature, with cov(f) shrunk to
    (1 - a) cov(f) + a (tr cov(f) / D) I. In [0, classes - 1].

    `shrinkage=None` estimates a by Ledoit-Wolf: the regularised H-score of Ibrahim et al. ("Newer is not
    always better: Rethinking transferability metrics", ICLR 2022). Bao et al.'s original is `shrinkage=0`
    (a pseudo-inverse); it saturates at classes - 1 once dims approach the number of rows, since any labels are
    then separable in-sample, so it cannot rank 384-dim features on a few hundred rows.
    """
    features, labels = _check(features, labels)
    centred = features - features.mean(axis=0)
    class_means = np.zeros_like(centred)
    for k in np.unique(labels):
        class_means[labels == k] = centred[labels == k].mean(axis=0)
    cov_f = centred.T @ centred / len(centred)
    cov_g = class_means.T @ class_means / len(centred)
    if shrinkage is None:
        from sklearn.covariance import ledoit_wolf_shrinkage

        shrinkage = float(ledoit_wolf_shrinkage(centred, assume_centered=True))
    if not 0.0 <= shrinkage <= 1.0:
        raise UserError(f"H-score shrinkage must be in [0, 1], got {shrinkage}.")
    if shrinkage == 0.0:
        return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-10, hermitian=True) @ cov_g))
    scale = np.trace(cov_f) / cov_f.shape[0]
    shrunk = (1.0 - shrinkage) * cov_f + shrinkage * scale * np.eye(cov_f.shape[0])
    return float(np.trace(np.linalg.solve(shrunk, (1.0 - shrinkage) * cov_g)))


@dataclass(frozen=True)
class ProbeScore:
    accuracy: float
    """Mean held-out accuracy over the folds."""
    std: float
    folds: int


def linear_probe(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0, c: float = 1.0) -> ProbeScore:
    """Stratified k-fold accuracy of standardised features -> L2 logistic regression (C = `c`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = _check(features, labels)
    smallest = int(np.bincount(np.unique(labels, return_inverse=True)[1]).min())
    if smallest < folds:
        raise UserError(
            f"The rarest class has {smallest} rows, fewer than the {folds} cross-validation folds; "
            "give more labelled rows or fewer folds."
        )
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(probe, features, labels, cv=splits, scoring="accuracy")
    return ProbeScore(float(scores.mean()), float(scores.std()), folds)
