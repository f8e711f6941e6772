"""`hftransfer rank`: score candidate checkpoints on the user's labelled data from frozen features, best first.

LogME orders the table (it needs no hyperparameters and was the best-validated estimator in its paper);
H-score and a cross-validated linear probe are printed beside it as second opinions. None of them
fine-tunes: each candidate costs one forward pass over the rows. That is also their blind spot: they score the
features as they stand, not what training makes of them. Text candidates are therefore scored on the mean of
every layer's pooled states by default, not the last layer alone: fine-tuning trains every block, and on SST-2
last-layer scores rated truncated or lightly corrupted MiniLMs above the intact one, which fine-tunes best,
while layer-mean scores ranked it first (README, "Choose before you train"). The report still warns when the
candidates differ in depth or width.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from hftransfer.analysis.features import (
    DataSpec,
    check_layers_choice,
    common_task,
    data_config,
    extract_features,
    label_rows,
    read_rows,
)
from hftransfer.analysis.transferability import h_score, linear_probe, logme
from hftransfer.errors import UserError
from hftransfer.models.loading import checkpoint_config
from hftransfer.models.tasks import get_task

SIZE_CAVEAT = (
    "Caveat: these candidates differ in depth or width (blocks x width: {sizes}). Frozen-feature scores do not "
    "account for what a deeper model gains from fine-tuning; compare such candidates with care."
)


def depth_and_width(name: str) -> tuple[int | None, int | None]:
    """(blocks, width of the last hidden state) from the checkpoint's config; None where the config has no such key.

    Staged CNNs (ResNet, ConvNeXt) count the blocks of all stages and report the last stage's width.
    """
    config = checkpoint_config(name)
    depths = getattr(config, "depths", None)
    layers = sum(depths) if depths else getattr(config, "num_hidden_layers", None)
    widths = getattr(config, "hidden_sizes", None)
    width = widths[-1] if widths else getattr(config, "hidden_size", None)
    return layers, width


def size_caveat(candidates: Sequence[dict]) -> str | None:
    """The warning for candidates of unequal depth or width, else None (unknown sizes are not compared)."""
    sizes = {(c["layers"], c["hidden_size"]) for c in candidates if None not in (c["layers"], c["hidden_size"])}
    if len(sizes) < 2:
        return None
    return SIZE_CAVEAT.format(sizes=", ".join(f"{layers}x{width}" for layers, width in sorted(sizes)))


def feature_layers(layers: str, task: str) -> str:
    """`auto`: the layer mean for text (checked against fine-tuning on SST-2 and a held-out topic task), else last."""
    if layers == "auto":
        layers = "mean" if get_task(task).averages_layers else "last"
    check_layers_choice(layers, task)
    return layers


def rank_models(
    spec: DataSpec, models: Sequence[str], *, folds: int = 5, batch_size: int = 64, layers: str = "auto"
) -> dict:
    """A JSON-ready report: the data, and per candidate its scores, sorted by LogME (highest first)."""
    repeated = sorted({m for m in models if list(models).count(m) > 1})
    if repeated:
        raise UserError(f"Models {repeated} are listed more than once.")
    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}.")
    data, declared = data_config(spec)
    task = common_task(models, declared)
    chosen_layers = feature_layers(layers, task)
    rows, labels = label_rows(read_rows(spec, data, task), data, spec)
    y = np.asarray(rows["labels"])
    candidates = []
    for name in models:
        started = time.perf_counter()
        features = extract_features(name, rows, data, task, batch_size=batch_size, layers=chosen_layers)
        extracted = time.perf_counter() - started
        probe = linear_probe(features, y, folds=folds)
        blocks, width = depth_and_width(name)
        candidates.append(
            {
                "model": name,
                "layers": blocks,
                "hidden_size": width,
                "logme": logme(features, y),
                "h_score": h_score(features, y),
                "probe_accuracy": probe.accuracy,
                "probe_accuracy_std": probe.std,
                "dims": int(features.shape[1]),
                "features_seconds": extracted,
            }
        )
    candidates.sort(key=lambda c: c["logme"], reverse=True)
    for position, candidate in enumerate(candidates, start=1):
        candidate["rank"] = position
    return {
        "data": spec.location,
        "split": spec.split if spec.is_recipe else None,
        "task": task,
        "rows": len(y),
        "classes": list(labels.names),
        "majority_accuracy": float(np.bincount(y).max() / len(y)),
        "feature_layers": chosen_layers,
        "probe_folds": folds,
        "candidates": candidates,
        "caveat": size_caveat(candidates),
    }


def format_ranking(report: dict) -> str:
    """The report as a Markdown table, best candidate first."""
    features = {"mean": "mean over all layers", "last": "last layer"}[report["feature_layers"]]
    lines = [
        f"Ranked {len(report['candidates'])} checkpoints on {report['rows']} rows of {report['data']} "
        f"({len(report['classes'])} classes; majority class = {report['majority_accuracy']:.3f} accuracy; "
        f"features: {features}).",
        "",
        f"| rank | model | LogME | H-score | linear probe acc ({report['probe_folds']}-fold) | dims | features s |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c in report["candidates"]:
        lines.append(
            f"| {c['rank']} | {c['model']} | {c['logme']:.4f} | {c['h_score']:.4f} | "
            f"{c['probe_accuracy']:.3f} ± {c['probe_accuracy_std']:.3f} | {c['dims']} | {c['features_seconds']:.1f} |"
        )
    lines += ["", "Higher is better in every score column; LogME orders the table."]
    if report.get("caveat"):
        lines += ["", report["caveat"]]
    return "\n".join(lines)
