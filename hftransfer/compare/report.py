"""The comparison's rows (from each run's results.json plus compare's own measurements) as JSON and Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

COLUMNS = (
    "strategy",
    "accuracy",
    "F1",
    "trainable params",
    "train time",
    "train samples/s",
    "peak memory",
    "checkpoint",
    "latency b1",
    "latency b64",
    "learning rate",
)

SHARED = {False: "Same data and seed for every run", True: "Shared by every run unless its variant overrides it"}


@dataclass
class RunRow:
    """One run's line of the report (a strategy's, a variant's, or a variant's run of one strategy)."""

    strategy: str
    output_dir: str
    reused: bool
    results: dict
    name: str = ""
    """The run's name: its strategy, its variant, or `<variant>/<strategy>`."""
    variant: str | None = None
    overrides: list[str] = field(default_factory=list)
    """A variant run's own overrides (its variant's and its strategy's)."""
    starts_from: str | None = None
    """The checkpoint it trained from (`model.name_or_path`): another run's folder for a dependent variant."""
    peak_rss_bytes: int | None = None
    learning_rate: float | None = None
    train_load_average: list[float | None] | None = None
    """1-minute load average before and after training (a shared machine slows every timing)."""
    latency_ms: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = self.name or self.strategy

    def as_json(self) -> dict:
        r = self.results
        return {
            "name": self.name,
            "strategy": self.strategy,
            "variant": self.variant,
            "overrides": self.overrides,
            "starts_from": self.starts_from,
            "output_dir": self.output_dir,
            "reused": self.reused,
            "model": r.get("model"),
            "accuracy": r["eval"].get("accuracy"),
            "f1": r["eval"].get("f1"),
            "trainable_params": r.get("trainable_params"),
            "total_params": r.get("total_params"),
            "trainable_share": r.get("trainable_share"),
            "train_runtime_s": r.get("train_runtime_s"),
            "train_samples_per_second": r.get("train_samples_per_second"),
            "peak_rss_bytes": self.peak_rss_bytes,
            "train_load_average": self.train_load_average,
            "peak_gpu_memory_bytes": r.get("peak_gpu_memory_bytes"),
            "checkpoint_size_bytes": r.get("checkpoint_size_bytes"),
            "latency_ms": self.latency_ms,
            "learning_rate": self.learning_rate,
            "global_steps": r.get("global_steps"),
            "finished_at": r.get("finished_at"),
            "notes": self.notes,
        }


def build_report(rows: list[RunRow], meta: dict) -> dict:
    """report.json: what ran, under which conditions, and one entry per strategy."""
    first = rows[0].results if rows else {}
    conditions = {
        "model": first.get("model"),
        "dataset": first.get("dataset"),
        "train_samples": first.get("num_train_samples"),
        "eval_samples": first.get("num_eval_samples"),
        "epochs": first.get("epochs"),
        "loop": first.get("loop"),
        "precision": first.get("precision"),
        "hardware": first.get("hardware"),
    }
    return {**meta, "conditions": conditions, "runs": [row.as_json() for row in rows]}


def markdown(report: dict, plots: list[str], plot_note: str | None, plot_gaps: list[str] | None = None) -> str:
    """report.md: the table, what each column means, and the plots (or how to get them)."""
    c, variants = report["conditions"], bool(report.get("variants"))
    lines = [
        f"# {'Comparison' if variants else 'Strategy comparison'}: {report.get('recipe') or 'default recipe'}",
        "",
        f"{SHARED[variants]}: {c['dataset']} ({c['train_samples']} train / {c['eval_samples']} "
        f"validation rows), seed {report['seed']}, epochs {_num(c['epochs'])}, {c['loop']} loop, {c['precision']}, "
        f"{c['hardware']}. Overrides: {' '.join(report['overrides']) or 'none'}.",
        "",
        table(report["runs"]),
        "",
        "- accuracy, F1: on the validation rows (F1 of the positive class for two classes, else macro).",
        "- train time, samples/s: the training loop only (no loading, no final evaluation)"
        + _train_loads(report["runs"])
        + ".",
        "- peak memory: max resident memory (RSS) of the run's own training process (Python, libraries, data, "
        "model, optimizer); n/a for runs trained with --in-process. Peak GPU memory (GPU runs): torch's max allocated.",
        "- checkpoint: safetensors on disk in the run's folder (an adapter for LoRA).",
        "- latency: median ms per forward pass on validation rows at batch 1 and 64 on "
        f"{report.get('latency_device') or 'n/a'}{_load(report.get('latency_load_average'))}, all runs timed "
        "interleaved in one process, models as saved (LoRA with its unmerged adapter).",
    ]
    lines += [_variant_line(row) for row in report["runs"] if row.get("variant")]
    lines += [f"- {note}" for row in report["runs"] for note in row["notes"]]
    reused = [row.get("name", row["strategy"]) for row in report["runs"] if row["reused"]]
    if reused:
        lines.append(f"- reused from an earlier call (not retrained): {', '.join(reused)}.")
    lines.append("")
    lines += [f"![{Path(p).stem.replace('_', ' ')}]({p})" for p in plots]
    if plot_note:
        lines.append(plot_note)
    lines += [f"- learning curves: {gap}" for gap in plot_gaps or []]
    return "\n".join(lines).rstrip() + "\n"


def _variant_line(row: dict) -> str:
    overrides = " ".join(row.get("overrides") or []) or "the recipe as it is"
    return f"- {row['name']}: {overrides}; starts from {row.get('starts_from')}."


def table(runs: list[dict]) -> str:
    gpu = any(run.get("peak_gpu_memory_bytes") for run in runs)
    variants = any(run.get("variant") for run in runs)
    first = ["run", "strategy"] if variants else ["strategy"]
    columns = [*first, *COLUMNS[1:7], *(["peak GPU memory"] if gpu else []), *COLUMNS[7:]]
    out = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    for run in runs:
        latency = run["latency_ms"] or {}
        cells = [
            *([run["name"], run["strategy"]] if variants else [run.get("name", run["strategy"])]),
            _fixed(run["accuracy"], 4),
            _fixed(run["f1"], 4),
            _params(run["trainable_params"], run["trainable_share"]),
            f"{run['train_runtime_s']:.1f} s" if run["train_runtime_s"] is not None else "n/a",
            _fixed(run["train_samples_per_second"], 1),
            _mib(run["peak_rss_bytes"]),
            *([_mib(run["peak_gpu_memory_bytes"])] if gpu else []),
            _mib(run["checkpoint_size_bytes"]),
            _ms(latency.get("1")),
            _ms(latency.get("64")),
            f"{run['learning_rate']:g}" if run["learning_rate"] is not None else "n/a",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _train_loads(runs: list[dict]) -> str:
    loads = [(run.get("name", run["strategy"]), run.get("train_load_average")) for run in runs]
    known = [f"{name} {load[0]:.1f}-{load[1]:.1f}" for name, load in loads if load and None not in load]
    return f"; 1-min load average before-after each run: {', '.join(known)}" if known else ""


def _load(load: list | None) -> str:
    if not load or None in load:
        return ""
    return f" (1-min load average {load[0]:.1f} before, {load[1]:.1f} after)"


def _fixed(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _num(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _mib(value: int | None) -> str:
    if not value:
        return "n/a"
    return f"{value / 2**20:,.1f} MiB" if value >= 2**20 else f"{value / 2**10:,.1f} KiB"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _params(count: int | None, share: float | None) -> str:
    if count is None:
        return "n/a"
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= limit:
            text = f"{count / limit:.3g}{suffix}"
            break
    else:
        text = str(count)
    if share is None:
        return text
    percent = 100 * share
    return f"{text} ({percent:.0f}%)" if percent >= 10 else f"{text} ({percent:.2g}%)"
