"""`hftransfer shift`: how far apart two data sets are in a checkpoint's feature space, and what that suggests.

Two views of the same features (numpy functions, usable on any [rows, dims] arrays):

- Proxy A-distance (Ben-David et al. 2007/2010): a domain classifier (standardised features -> logistic
  regression, class-balanced) is scored by k-fold cross-validated predictions; with its balanced held-out error
  e, PAD = 2 (1 - 2 min(e, 0.5)): 0 when nothing tells the sets apart, 2 when they are separable. The interval
  is a percentile bootstrap over the held-out predictions (each domain resampled separately; the classifiers
  are not refitted, so it covers the evaluation noise, not the training noise).
- MMD: the unbiased squared maximum mean discrepancy with an RBF kernel whose width is the median pairwise
  distance (median heuristic), and a permutation-test p-value for "both samples come from one distribution".

Interpretation thresholds (on PAD, whose scale does not depend on the model): below `CLOSE` (0.5) the
sets are close, so freeze more (head-only, frozen blocks, LoRA); from `FAR` (1.5) up they are far, so fine-tune
more (more unfrozen blocks or full fine-tuning); in between, partial freezing or LoRA, checked against full.
Contextual encoders separate most pairs of different sources almost perfectly, so PAD near 2 is common for
"another domain"; the value is most useful to compare candidate source sets for one target.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hftransfer.errors import UserError

CLOSE = 0.5
FAR = 1.5


def _pair(source: np.ndarray, target: np.ndarray, minimum: int) -> tuple[np.ndarray, np.ndarray]:
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
        raise UserError(f"Need two [rows, dims] feature arrays of one width, got {source.shape} and {target.shape}.")
    for name, array in (("source", source), ("target", target)):
        if len(array) < minimum:
            raise UserError(f"The {name} set has {len(array)} rows; measuring shift needs at least {minimum}.")
        if not np.isfinite(array).all():
            raise UserError(f"The {name} features contain NaN or infinite values.")
    return source, target


@dataclass(frozen=True)
class ProxyADistance:
    pad: float
    error: float
    """Balanced held-out error of the domain classifier (mean of its error on each set)."""
    ci_low: float
    ci_high: float
    confidence: float
    folds: int


def _pad(error: np.ndarray | float) -> np.ndarray | float:
    return 2.0 * (1.0 - 2.0 * np.minimum(error, 0.5))


def proxy_a_distance(
    source: np.ndarray,
    target: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    bootstrap: int = 2000,
    confidence: float = 0.95,
) -> ProxyADistance:
    """PAD from a cross-validated linear domain classifier, with a bootstrap interval."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}.")
    source, target = _pair(source, target, minimum=folds)
    features = np.vstack([source, target])
    domain = np.r_[np.zeros(len(source), dtype=int), np.ones(len(target), dtype=int)]
    classifier = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    wrong = cross_val_predict(classifier, features, domain, cv=splits) != domain
    wrong_source, wrong_target = wrong[domain == 0], wrong[domain == 1]
    error = 0.5 * (wrong_source.mean() + wrong_target.mean())
    rng = np.random.default_rng(seed)
    resampled = 0.5 * (
        wrong_source[rng.integers(0, len(wrong_source), (bootstrap, len(wrong_source)))].mean(axis=1)
        + wrong_target[rng.integers(0, len(wrong_target), (bootstrap, len(wrong_target)))].mean(axis=1)
    )
    tail = (1.0 - confidence) / 2
    low_error, high_error = np.quantile(resampled, [tail, 1.0 - tail])
    return ProxyADistance(
        pad=float(_pad(error)),
        error=float(error),
        ci_low=float(_pad(high_error)),
        ci_high=float(_pad(low_error)),
        confidence=confidence,
        folds=folds,
    )


@dataclass(frozen=True)
class MMDTest:
    mmd2: float
    """Unbiased estimate of the squared MMD (can be slightly negative when the sets match)."""
    p_value: float
    bandwidth: float
    """RBF kernel width sigma: k(a, b) = exp(-|a - b|^2 / (2 sigma^2))."""
    permutations: int


def _unbiased_mmd2(kernel: np.ndarray, members: np.ndarray) -> np.ndarray:
    """MMD^2 for each column of `members` ([N, P], 1 = row in the first set); `kernel` has a zero diagonal."""
    others = 1.0 - members
    m, n = members.sum(axis=0), others.sum(axis=0)
    within_first = (members * (kernel @ members)).sum(axis=0)
    within_second = (others * (kernel @ others)).sum(axis=0)
    across = (members * (kernel @ others)).sum(axis=0)
    return within_first / (m * (m - 1)) + within_second / (n * (n - 1)) - 2 * across / (m * n)


def mmd_test(source: np.ndarray, target: np.ndarray, permutations: int = 500, seed: int = 0) -> MMDTest:
    """Unbiased RBF-kernel MMD^2 (median-heuristic width) and its permutation-test p-value."""
    if permutations < 1:
        raise UserError(f"--permutations must be at least 1, got {permutations}.")
    source, target = _pair(source, target, minimum=2)
    pooled = np.vstack([source, target])
    norms = (pooled**2).sum(axis=1)
    squared = np.maximum(norms[:, None] + norms[None, :] - 2.0 * pooled @ pooled.T, 0.0)
    off_diagonal = squared[~np.eye(len(pooled), dtype=bool)]
    bandwidth = float(np.sqrt(np.median(off_diagonal))) or 1.0  # all rows identical: any width gives 0
    kernel = np.exp(-squared / (2.0 * bandwidth**2))
    np.fill_diagonal(kernel, 0.0)
    first = np.r_[np.ones(len(source)), np.zeros(len(target))]
    observed = float(_unbiased_mmd2(kernel, first[:, None])[0])
    rng = np.random.default_rng(seed)
    exceed, done = 0, 0
    while done < permutations:  # chunks keep the [N, chunk] products small
        chunk = min(100, permutations - done)
        shuffled = np.stack([rng.permutation(first) for _ in range(chunk)], axis=1)
        exceed += int((_unbiased_mmd2(kernel, shuffled) >= observed).sum())
        done += chunk
    return MMDTest(observed, (1 + exceed) / (1 + permutations), bandwidth, permutations)


def interpret(pad: ProxyADistance, mmd: MMDTest | None = None) -> str:
    """One line: close / moderate / far, and what it suggests for freezing."""
    interval = f"PAD {pad.pad:.2f} [{pad.ci_low:.2f}, {pad.ci_high:.2f}]"
    if pad.pad < CLOSE:
        verdict = f"close ({interval} < {CLOSE}): the features barely tell the sets apart; freeze more "
        verdict += "(head-only, frozen blocks or LoRA) and keep what the source taught."
    elif pad.pad < FAR:
        verdict = f"moderate ({CLOSE} <= {interval} < {FAR}): freeze the lower blocks or use LoRA; "
        verdict += "check against full fine-tuning."
    else:
        verdict = f"far ({interval} >= {FAR}): the sets are nearly separable in this feature space; "
        verdict += "fine-tune more (more unfrozen blocks, or full fine-tuning)."
    if mmd is not None:
        verdict += f" MMD p = {mmd.p_value:.3g}"
        verdict += " (no significant difference)." if mmd.p_value >= 0.05 else " (the sets differ)."
    return verdict


def models_to_measure(models: list[str], with_bases: bool = True) -> list[tuple[str, str]]:
    """`(model, role)` pairs in order: each hftransfer output folder is preceded by its base checkpoint (the recipe's
    `model.name_or_path`, what training started from) unless `with_bases` is off or the base is named already."""
    from hftransfer.artifacts.saved import is_run_folder, read_recipe
    from hftransfer.config.locations import resolve_location

    out: list[tuple[str, str]] = []
    for model in models:
        if is_run_folder(resolve_location(model)):
            base = read_recipe(resolve_location(model)).model.name_or_path
            if with_bases and base not in models and base not in [m for m, _ in out]:
                out.append((base, f"base of {model}: before training"))
            out.append((model, f"trained output folder (from {base}): after training"))
        elif model not in [m for m, _ in out]:
            out.append((model, "checkpoint"))
    return out


def describe_data(spec, data) -> str:
    """What a DataSpec reads, in words: the file, or the recipe's split and the source behind it."""
    from hftransfer.config.locations import resolve_location

    if not spec.is_recipe:
        return f"{spec.location} (whole {'folder' if Path(resolve_location(spec.location)).is_dir() else 'file'})"
    split = spec.split
    behind = getattr(data, f"{split}_file", None) or getattr(data, f"{split}_dir", None)
    if data.dataset:
        behind = f"Hub {data.dataset} split '{getattr(data, f'{split}_split', split)}'"
    elif behind:
        behind = f"data.{split}_{'file' if getattr(data, f'{split}_file', None) else 'dir'}={resolve_location(behind)}"
    elif split == "validation":
        behind = f"data.validation_size={data.validation_size} held out of train"
    return f"{spec.location}, split '{split}' ({behind or 'not set'})"


def measure_shift(
    source,
    target,
    model: str | list[str],
    *,
    folds: int = 5,
    permutations: int = 500,
    seed: int = 0,
    batch_size: int = 64,
    with_bases: bool = True,
) -> dict:
    """Features of each model on two `features.DataSpec`s, their PAD and MMD: a JSON-ready report.

    `model` is one checkpoint or several; an hftransfer output folder also gets its base checkpoint measured first
    (`models_to_measure`), so the report shows the distance before and after training. `models` holds one entry per
    model measured; the top-level `model`, `proxy_a_distance`, `mmd` and `interpretation` are the first named one's.
    """
    from hftransfer.analysis.features import common_task, data_config, extract_features, read_rows

    named = [model] if isinstance(model, str) else list(model)
    measured = models_to_measure(named, with_bases)
    configs = {name: data_config(spec) for name, spec in (("source", source), ("target", target))}
    declared = {task for _, task in configs.values() if task}
    if len(declared) > 1:
        raise UserError(f"The source and target recipes name different tasks: {sorted(declared)}.")
    task = common_task([m for m, _ in measured], next(iter(declared), None))
    specs = {"source": source, "target": target}
    rows = {name: read_rows(spec, configs[name][0], task) for name, spec in specs.items()}
    entries = []
    for name, role in measured:
        features = {
            side: extract_features(name, rows[side], configs[side][0], task, batch_size=batch_size) for side in specs
        }
        pad = proxy_a_distance(features["source"], features["target"], folds=folds, seed=seed)
        mmd = mmd_test(features["source"], features["target"], permutations=permutations, seed=seed)
        entries.append({"model": name, "role": role, "proxy_a_distance": asdict(pad), "mmd": asdict(mmd),
                        "interpretation": interpret(pad, mmd)})  # fmt: skip
    first = next(e for e in entries if e["model"] == named[0])
    return {
        "model": first["model"],
        "task": task,
        "source": _side(source, configs["source"][0]),
        "target": _side(target, configs["target"][0]),
        "rows": {name: len(split) for name, split in rows.items()},
        "proxy_a_distance": first["proxy_a_distance"],
        "mmd": first["mmd"],
        "thresholds": {"close_below": CLOSE, "far_from": FAR},
        "interpretation": first["interpretation"],
        "models": entries,
    }


def _side(spec, data) -> dict:
    return {
        "data": spec.location,
        "split": spec.split if spec.is_recipe else None,
        "reads": describe_data(spec, data),
    }


def format_shift(report: dict) -> str:
    rows = report["rows"]
    lines = [
        f"source: {report['source'].get('reads', report['source']['data'])}, {rows['source']} rows",
        f"target: {report['target'].get('reads', report['target']['data'])}, {rows['target']} rows",
    ]
    for entry in report.get("models") or [report]:
        pad, mmd = entry["proxy_a_distance"], entry["mmd"]
        role = f" ({entry['role']})" if entry.get("role") else ""
        lines += [
            f"features of {entry['model']}{role}:",
            f"  proxy A-distance: {pad['pad']:.3f}  ({100 * pad['confidence']:.0f}% CI {pad['ci_low']:.3f} to "
            f"{pad['ci_high']:.3f}; domain classifier balanced error {pad['error']:.3f}, {pad['folds']}-fold)",
            f"  MMD^2 (RBF, sigma {mmd['bandwidth']:.3g}): {mmd['mmd2']:.4g}  "
            f"(permutation p = {mmd['p_value']:.3g}, {mmd['permutations']} permutations)",
            f"  -> {entry['interpretation']}",
        ]
    entries = report.get("models") or []
    for before, after in itertools.pairwise(entries):
        if before["role"].startswith(f"base of {after['model']}"):
            lines.append(
                f"training moved PAD {before['proxy_a_distance']['pad']:.3f} -> {after['proxy_a_distance']['pad']:.3f}"
                f" ({after['model']} vs its base {before['model']})"
            )
    return "\n".join(lines)
