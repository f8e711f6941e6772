"""K-fold cross-validated evaluation of one recipe (`hftransfer cv`): for small data, a spread instead of one number.

The pool is the recipe's labelled train split (after `data.max_train_samples`); the recipe's validation split (a
validation file, or the `data.validation_size` share held out of train) is not used. `folds(labels, k, seed)` cuts
the pool into k stratified folds (seeded by `train.seed`); fold i trains on the other k - 1 through the normal
pipeline (any strategy, in-memory splits) and is evaluated on fold i, its held-out rows. A test split
(`data.test_file`, a test folder or Hub split), when the recipe has one, is scored by every fold's model and by the
mean of their class probabilities (the k models as one ensemble).

Mean ± sd over folds uses the sample standard deviation (ddof = 1). The folds' training sets overlap, so the sd
understates how much a fresh sample of the same size would move the score (no unbiased estimator of that variance
exists, Bengio & Grandvalet 2004): read it as a lower bound. A fold's model trained on (k - 1)/k of the pool, so the
mean is slightly pessimistic for a model trained on all of it.

Fold models are not kept by default (each trains into a temporary folder, deleted once scored); `keep_models`
keeps them as ordinary output folders `OUT/fold-<i>` (evaluate, predict, export work on them).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from accelerate import PartialState
from datasets import Dataset, DatasetDict

from hftransfer.artifacts.layout import write_json
from hftransfer.config.recipe import RunConfig
from hftransfer.data.labels import LabelMap, require_two_classes
from hftransfer.errors import UserError
from hftransfer.evaluation.metrics import classification_metrics, softmax
from hftransfer.models.locate import check_run_locations
from hftransfer.models.tasks import get_task, resolve_task
from hftransfer.training.pipeline import Given, run_pipeline

logger = logging.getLogger("hftransfer")

CV_FILE = "cv.json"
SUMMARY_METRICS = ("accuracy", "f1", "precision", "recall", "roc_auc", "f1_macro", "precision_macro", "recall_macro")
"""The per-fold metrics that get a mean and sd (the flat scalar ones; confusion matrices stay per fold)."""
TABLE_METRICS = ("accuracy", "f1", "roc_auc")


def check_k(k: int) -> None:
    if k < 2:
        raise UserError(f"--folds must be at least 2 (each fold is held out once while the others train), got {k}.")


def folds(labels: Sequence, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """k stratified folds of rows with these labels: `[(train_rows, held_out_rows), ...]`, index arrays, sorted.

    Every row is held out exactly once; within each class the folds' counts differ by at most one. Rows are
    shuffled within each class with `seed` (same seed, same folds). Labels may be ints or strings.
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    check_k(k)
    values, counts = np.unique(labels, return_counts=True)
    smallest = int(np.argmin(counts)) if len(counts) else None
    if smallest is None or counts[smallest] < k:
        have = f"class '{values[smallest]}' has only {counts[smallest]} rows" if smallest is not None else "no rows"
        raise UserError(
            f"--folds {k} needs at least {k} rows of every class, but {have}; use --folds "
            f"{max(2, int(counts[smallest]) if smallest is not None else 2)} or fewer, or add rows of that class."
        )
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(train), np.sort(held)) for train, held in splitter.split(np.zeros(len(labels)), labels)]


@dataclass
class FoldResult:
    """One fold: what trained, and its metrics on its held-out rows (and on the test split, if any)."""

    fold: int
    """1-based."""
    train_rows: int
    held_out_rows: int
    eval: dict
    """Metrics on the fold's held-out rows (classification_metrics: accuracy, f1, ..., confusion matrix)."""
    test: dict | None = None
    train_runtime_s: float | None = None
    output_dir: str | None = None
    """The fold's output folder when models are kept, else None (it was deleted)."""


@dataclass
class CVReport:
    """What `cv.json` holds: the setting, every fold, and mean ± sd per metric (`to_json`)."""

    recipe: str | None
    strategy: str
    model: str
    k: int
    seed: int
    pool: dict
    """Where the rows came from (`source`, `split`), how many (`rows`), and per class (`class_counts`)."""
    labels: list[str]
    keep_models: bool
    fold_results: list[FoldResult] = field(default_factory=list)
    test_source: str | None = None
    ensemble_test: dict | None = None
    """Test metrics of the mean of the k models' class probabilities."""

    def summary(self, split: str = "eval") -> dict[str, dict]:
        """`{metric: {mean, sd, values}}` over folds (sd: sample sd, ddof = 1); a metric a fold lacks is left out."""
        out = {}
        for name in SUMMARY_METRICS:
            values = [(getattr(f, split) or {}).get(name) for f in self.fold_results]
            if not values or any(v is None for v in values):
                continue
            array = np.asarray(values, dtype=np.float64)
            sd = float(array.std(ddof=1)) if len(array) > 1 else None
            out[name] = {"mean": float(array.mean()), "sd": sd, "values": [float(v) for v in array]}
        return out

    def to_json(self) -> dict:
        tested = any(f.test is not None for f in self.fold_results)
        return {
            "recipe": self.recipe,
            "strategy": self.strategy,
            "model": self.model,
            "folds": self.k,
            "seed": self.seed,
            "pool": self.pool,
            "labels": self.labels,
            "keep_models": self.keep_models,
            "sd": "sample standard deviation over folds (ddof=1); folds share training rows, so it understates "
            "the spread over fresh samples",
            "per_fold": [dataclasses.asdict(f) for f in self.fold_results],
            "mean": self.summary("eval"),
            "test": {
                "source": self.test_source,
                "per_fold_mean": self.summary("test"),
                "averaged_predictions": self.ensemble_test,
            }
            if tested
            else None,
        }


def cross_validate(
    config: RunConfig, k: int, out: str | Path, *, keep_models: bool = False, recipe: str | None = None
) -> CVReport:
    """Train and score the recipe on k stratified folds of its train split; write `out/cv.json`, return the report.

    Bad input (k < 2, k above the rows of the smallest class, an existing non-empty `out`) fails before any model
    loads. The recipe's `train.seed` seeds the folds and every fold's training.
    """
    check_k(k)
    if PartialState().num_processes > 1:
        raise UserError(
            "hftransfer cv trains its folds one after another in one process; run it without "
            "`accelerate launch` (or with one process)."
        )
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not config.train.overwrite_output_dir:
        raise UserError(
            f"--out {out} exists and is not empty; choose another --out, or set "
            "train.overwrite_output_dir=true to replace what it holds."
        )
    check_run_locations(config)
    config = resolve_task(config)
    pool, test, labels, where = _pool(config)
    label_names = np.asarray(labels.names)[np.asarray(labels.encode(pool, config.data.label_column, "train")["labels"])]
    cuts = folds(label_names, k, config.train.seed)  # a class too small for k fails here, before any model loads
    test_labels = labels.encode(test, config.data.label_column, "test")["labels"] if test is not None else None
    if config.train.early_stopping_patience or config.train.load_best_at_end:
        logger.warning(
            "cv: early stopping / best-model selection picks on each fold's held-out rows, which are "
            "also what it reports: the fold metrics are optimistic."
        )
    names, counts = np.unique(label_names, return_counts=True)
    report = CVReport(
        recipe=recipe,
        strategy=config.strategy.name,
        model=config.model.name_or_path,
        k=k,
        seed=config.train.seed,
        pool={**where, "rows": len(pool), "class_counts": {str(n): int(c) for n, c in zip(names, counts, strict=True)}},
        labels=list(labels.names),
        keep_models=keep_models,
        test_source=_test_source(config) if test is not None else None,
    )
    out.mkdir(parents=True, exist_ok=True)
    probabilities = []
    for number, (train_rows, held_rows) in enumerate(cuts, start=1):
        splits = {"train": pool.select(train_rows), "validation": pool.select(held_rows)}
        if test is not None:
            splits["test"] = test
        result, probs = _run_fold(config, number, DatasetDict(splits), out, keep_models, labels)
        report.fold_results.append(result)
        if probs is not None:
            probabilities.append(probs)
    if probabilities:
        report.ensemble_test = classification_metrics(
            test_labels, np.mean(probabilities, axis=0), label_names=labels.names
        )
    write_json(out / CV_FILE, report.to_json())
    return report


def _pool(config: RunConfig) -> tuple[Dataset, Dataset | None, LabelMap, dict]:
    """The train split as the recipe loads it (its validation source is read as train's twin, so none is held out
    of train), the test split if any, the label map, and a description of where the pool came from."""
    data = config.data
    if data.dataset:
        twin = {"validation_split": data.train_split}
    elif data.train_file:
        twin = {"validation_file": data.train_file}
    else:
        twin = {"validation_dir": data.train_dir}
    loaded = dataclasses.replace(data, **twin)
    splits = get_task(config.task).load_splits(loaded)
    pool = splits["train"]
    labels = require_two_classes(LabelMap.discover(pool, data.label_column, data.label_names), "The training pool")
    source = data.dataset or data.train_file or data.train_dir
    where = {
        "source": source,
        "split": data.train_split if data.dataset else "train",
        "max_train_samples": data.max_train_samples,
    }
    return pool, splits.get("test"), labels, where


def _test_source(config: RunConfig) -> str:
    data = config.data
    if data.dataset:
        return f"{data.dataset} [{data.test_split}]"
    return str(data.test_file or data.test_dir)


def _fold_config(config: RunConfig, folder: Path) -> RunConfig:
    """The recipe for one fold: its own output folder, no push, in-memory splits taken as they are."""
    train = dataclasses.replace(config.train, output_dir=str(folder), overwrite_output_dir=True, resume_from=None)
    data = dataclasses.replace(config.data, max_train_samples=None, max_eval_samples=None)
    hub = dataclasses.replace(config.hub, push=False)
    return dataclasses.replace(config, train=train, data=data, hub=hub)


def _run_fold(
    config: RunConfig, number: int, splits: DatasetDict, out: Path, keep: bool, labels: LabelMap
) -> tuple[FoldResult, np.ndarray | None]:
    """Train fold `number`; its result and its class probabilities on the test split (None without one)."""
    scratch = None if keep else Path(tempfile.mkdtemp(prefix=f"hftransfer-cv-fold{number}-"))
    folder = out / f"fold-{number}" if keep else scratch / "run"
    logger.info(
        "cv: fold %d: training on %d rows, holding out %d", number, len(splits["train"]), len(splits["validation"])
    )
    try:
        finished = run_pipeline(_fold_config(config, folder), Given(splits=splits))
        run = finished.run
        if run.data.labels.names != labels.names:  # stratified folds keep every class in every training part
            raise UserError(f"Fold {number} trained on classes {run.data.labels.names}, not {labels.names}.")
        # the pipeline scored the test split once; its logits give this fold's share of the ensemble
        logits = finished.test_logits
        probs = softmax(np.asarray(logits, dtype=np.float64)) if logits is not None else None
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    results = finished.results
    result = FoldResult(
        fold=number,
        train_rows=len(splits["train"]),
        held_out_rows=len(splits["validation"]),
        eval=results["eval"],
        test=results.get("test"),
        train_runtime_s=results.get("train_runtime_s"),
        output_dir=str(folder) if keep else None,
    )
    return result, probs


def format_cv(report: CVReport) -> str:
    """The console table: one line per fold, mean ± sd, and the averaged-prediction test score."""
    tested = any(f.test is not None for f in report.fold_results)
    pool = report.pool
    counts = ", ".join(f"{name} {count}" for name, count in pool["class_counts"].items())
    lines = [
        f"{report.k}-fold cross-validation ({report.strategy}, {report.model}, seed {report.seed}): pool = "
        f"{pool['source']} [{pool['split']}], {pool['rows']} rows ({counts}); each fold scored on its held-out rows.",
        "",
    ]
    header = [
        "fold",
        "train rows",
        "held-out rows",
        *TABLE_METRICS,
        *([f"test {m}" for m in TABLE_METRICS] if tested else []),
    ]
    lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for fold in report.fold_results:
        cells = [str(fold.fold), str(fold.train_rows), str(fold.held_out_rows), *_cells(fold.eval)]
        if tested:
            cells += _cells(fold.test or {})
        lines.append("| " + " | ".join(cells) + " |")
    means = [_mean_sd(report.summary("eval").get(m)) for m in TABLE_METRICS]
    if tested:
        means += [_mean_sd(report.summary("test").get(m)) for m in TABLE_METRICS]
    lines.append("| mean ± sd | | | " + " | ".join(means) + " |")
    lines.append("")
    lines.append(
        f"sd: sample standard deviation over the {report.k} folds; they share training rows, so it "
        "understates the spread over fresh samples."
    )
    if report.ensemble_test is not None:
        scores = "  ".join(
            f"{m}={report.ensemble_test[m]:.4f}" for m in TABLE_METRICS if report.ensemble_test.get(m) is not None
        )
        lines.append(f"test ({report.test_source}), mean of the {report.k} models' probabilities: {scores}")
    return "\n".join(lines)


def _cells(metrics: dict) -> list[str]:
    return ["n/a" if metrics.get(m) is None else f"{metrics[m]:.4f}" for m in TABLE_METRICS]


def _mean_sd(summary: dict | None) -> str:
    if not summary:
        return "n/a"
    return f"{summary['mean']:.4f} ± {summary['sd']:.4f}" if summary["sd"] is not None else f"{summary['mean']:.4f}"
