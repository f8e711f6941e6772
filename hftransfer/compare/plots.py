"""PNG plots of a comparison (matplotlib is optional: `pip install matplotlib`)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

ACCURACY_PLOT = "accuracy_vs_params.png"
CURVES_PLOT = "learning_curves.png"
MISSING_NOTE = "Plots skipped: matplotlib is not installed. `pip install matplotlib` and run compare again."


def plots_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def curve_gaps(logging_steps: dict[str, int], rows: list) -> list[str]:
    """Why a run has no line on the learning curves: it logged no train loss (fewer optimizer steps than
    `train.logging_steps`) or no validation loss. One sentence per run, for the plot and report.md."""
    gaps = []
    for row in rows:
        history = row.results.get("log_history") or []
        steps, every = row.results.get("global_steps"), logging_steps.get(row.name)
        if not any("loss" in e and "step" in e for e in history):
            why = f"{steps} optimizer steps < train.logging_steps={every}" if steps is not None and every else "none"
            gaps.append(f"{row.name}: no train loss logged ({why}); lower train.logging_steps for a curve.")
        if not any("eval_loss" in e and "step" in e for e in history):
            gaps.append(f"{row.name}: no validation loss logged.")
    return gaps


def write_plots(
    folder: Path, runs: list[dict], histories: dict[str, list[dict]], gaps: list[str] | None = None
) -> list[str]:
    """Accuracy vs trainable parameters (log x) and train/eval loss per step (with `gaps`, the reasons a run has
    no line, written on the plot); returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    _accuracy_plot(plt, folder / ACCURACY_PLOT, runs)
    _curves_plot(plt, folder / CURVES_PLOT, histories, gaps or [])
    return [ACCURACY_PLOT, CURVES_PLOT]


def _accuracy_plot(plt, path: Path, runs: list[dict]) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    seen: dict[tuple, int] = {}  # runs on (almost) the same spot get their labels stacked, not overprinted
    for run in runs:
        x, y = run["trainable_params"], run["accuracy"]
        if x and y is not None:
            ax.scatter(x, y, s=40)
            spot = (round(math.log10(x), 1), round(y, 3))
            seen[spot] = seen.get(spot, -1) + 1
            ax.annotate(
                run.get("name", run["strategy"]), (x, y), textcoords="offset points", xytext=(6, 4 + 11 * seen[spot])
            )
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Accuracy vs trainable parameters")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _curves_plot(plt, path: Path, histories: dict[str, list[dict]], gaps: list[str]) -> None:
    fig, (train_ax, eval_ax) = plt.subplots(1, 2, figsize=(10, 4 + 0.25 * len(gaps)))
    for name, history in histories.items():
        train = [(e["step"], e["loss"]) for e in history if "loss" in e and "step" in e]
        evals = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e and "step" in e]
        if train:
            dot = "o" if len(train) == 1 else None  # one logged point: a dot, not an invisible line
            train_ax.plot(*zip(*train, strict=True), marker=dot, label=name)
        if evals:
            eval_ax.plot(*zip(*evals, strict=True), marker="o", label=name)
    for ax, title in ((train_ax, "train loss"), (eval_ax, "validation loss")):
        ax.set_xlabel("optimizer step")
        ax.set_title(title + (" (distill: KD + CE objective)" if "distill" in histories else ""))
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if gaps:  # say on the plot why a run has no line, instead of leaving an empty panel
        fig.text(0.01, 0.01, "\n".join(gaps), fontsize=8, va="bottom", ha="left", wrap=True)
        fig.tight_layout(rect=(0, 0.03 + 0.04 * len(gaps), 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
