"""The model card (README.md) of an output folder: Hub metadata a machine reads, and a body a person reads.

Everything comes from files the run already wrote (results.json, config.yaml, labels.json,
adapter_config.json), so a card can be regenerated for any finished folder, e.g. with the
hub repo id filled in just before a push.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from hftransfer.artifacts.client import AS_IS, HFTRANSFER_ONLY, REMOTE_CODE, client_kind, repo_adapter_base
from hftransfer.artifacts.layout import ADAPTER_CONFIG_FILE, CARD_FILE, RECIPE_FILE, RESULTS_FILE
from hftransfer.artifacts.results import read_results
from hftransfer.artifacts.saved import read_labels
from hftransfer.config.recipe import DataConfig, RunConfig, load_config
from hftransfer.config.schema import to_dict
from hftransfer.errors import UserError
from hftransfer.strategies.base import Strategy
from hftransfer.strategies.registry import strategy_class

# metric id on the hub -> (key in results["eval"], pretty name)
CARD_METRICS = {
    "accuracy": ("accuracy", "Accuracy"),
    "f1": ("f1", "F1"),
    "f1_macro": ("f1_macro", "Macro F1"),
    "precision": ("precision", "Precision"),
    "recall": ("recall", "Recall"),
    "roc_auc": ("roc_auc", "ROC-AUC"),
}
_AUTO_CLASSES = {"text-classification": "AutoModelForSequenceClassification"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s`'\"|()<>/]+/)*[^\s`'\"|()<>/]+")
"""A POSIX absolute path in card text (not the path part of a URL, a ratio or a repo id)."""
INSTALL_HINT = "hftransfer is not on PyPI: install it from its source repository (`pip install -e .` in a clone)"
LOCAL_BASE = "BASE_MODEL"


class CardError(UserError):
    """A folder a model card cannot be written for."""


def looks_like_hub_id(name: str | None) -> bool:
    """A hub id (`bert-base-uncased`, `user/model`), not a local folder or a `pkg:` location."""
    if not name or name.startswith(("pkg:", "/", ".", "~")) or Path(name).exists():
        return False
    return bool(_HUB_ID.fullmatch(name))


@dataclass
class _Run:
    """What a card is written from: the files a finished run wrote, the recipe read through the schema."""

    results: dict
    recipe: RunConfig
    labels: list[str]
    adapter: dict | None
    """adapter_config.json of an adapter run (its base model), else None."""

    @property
    def strategy(self) -> type[Strategy]:
        return strategy_class(self.results["strategy"])

    @property
    def task(self) -> str:
        """The resolved task; a recipe saying `auto` defers to what the run recorded."""
        task = self.recipe.task
        return task if task != "auto" else self.results.get("task") or "text-classification"


def _read(folder: Path) -> _Run:
    if not (folder / RESULTS_FILE).is_file():
        raise CardError(f"{folder} has no {RESULTS_FILE}; a model card is written for finished hftransfer runs.")
    results = read_results(folder)
    recipe = load_config(folder / RECIPE_FILE) if (folder / RECIPE_FILE).is_file() else RunConfig()
    labels = read_labels(folder)
    names = list(labels.names) if labels is not None else results.get("labels", [])
    adapter_file = folder / ADAPTER_CONFIG_FILE
    adapter = json.loads(adapter_file.read_text()) if adapter_file.is_file() else None
    true_base = repo_adapter_base(folder)
    if adapter is not None and true_base:  # a staged upload names the repo as its own base (artifacts.client)
        adapter = {**adapter, "base_model_name_or_path": true_base}
    return _Run(results, recipe, [str(name) for name in names], adapter)


def base_model_id(recipe: RunConfig, adapter: dict | None = None) -> str | None:
    """The hub id the card records as `base_model`: `hub.base_model`, else the recipe's model if it is a hub id."""
    for candidate in (recipe.hub.base_model, recipe.model.name_or_path, (adapter or {}).get("base_model_name_or_path")):
        if looks_like_hub_id(candidate):
            return candidate
    return None


def _dataset_ids(recipe: RunConfig) -> list[str]:
    if recipe.hub.datasets:
        return list(recipe.hub.datasets)
    return [recipe.data.dataset] if recipe.data.dataset else []


def _dataset_label(recipe: RunConfig) -> str:
    """A readable name of the training data: hub dataset (and config) or the local file names."""
    data = recipe.data
    if data.dataset:
        return data.dataset + (f" ({data.dataset_config})" if data.dataset_config else "")
    files = [Path(str(f)).name for f in (data.train_file, data.validation_file) if f]
    recorded = recipe.hub.datasets
    if files:
        local = "local files " + " / ".join(f"`{f}`" for f in files)
        return f"{', '.join(recorded)} ({local})" if recorded else local
    folders = [Path(str(d)).name for d in (data.train_dir, data.validation_dir) if d]
    return "local image folders " + " / ".join(f"`{f}`" for f in folders) if folders else "local data"


def card_metadata(folder: str | Path, *, model_name: str | None = None, merged: bool = False) -> ModelCardData:
    """The YAML header: base_model, datasets, library_name, pipeline_tag, tags, metrics and model-index."""
    run = _read(Path(folder))
    adapter_card = run.adapter is not None and not merged
    task, recipe, results = run.task, run.recipe, run.results
    datasets = _dataset_ids(recipe)
    metrics = {
        mid: results["eval"][key] for mid, (key, _) in CARD_METRICS.items() if results["eval"].get(key) is not None
    }
    eval_results = [
        EvalResult(
            task_type=task,
            task_name=task.replace("-", " ").capitalize(),
            dataset_type=datasets[0] if datasets else _local_dataset_name(recipe.data),
            dataset_name=_dataset_label(recipe).replace("`", ""),
            dataset_config=recipe.data.dataset_config,
            dataset_split=(recipe.data.validation_split if recipe.data.dataset else None) or "validation",
            metric_type=metric_id,
            metric_name=CARD_METRICS[metric_id][1],
            metric_value=round(float(value), 4),
        )
        for metric_id, value in metrics.items()
    ]
    tags = ["hftransfer", task, results["strategy"]]
    if adapter_card:
        tags += ["peft", "adapter"]
    if merged:
        tags.append("merged-adapter")
    kind = _client_kind(Path(folder), run, merged)
    if kind == REMOTE_CODE:
        tags.append("custom_code")
    return ModelCardData(
        base_model=base_model_id(recipe, run.adapter),
        datasets=datasets or None,
        library_name="peft" if adapter_card else "transformers",
        pipeline_tag=task,
        license=recipe.hub.license,
        tags=list(dict.fromkeys(tags)),
        metrics=list(metrics),
        model_name=model_name or Path(folder).name,
        eval_results=eval_results or None,
        # The Hub widget runs the standard client without remote code: it would refuse, or predict wrongly.
        **({} if kind == AS_IS else {"inference": False}),
    )


def _client_kind(folder: Path, run: _Run, merged: bool) -> str:
    """How `transformers.pipeline` reads the folder (hftransfer.artifacts.client); `merged` on an adapter folder:
    as `export --merge` will make it."""
    if merged and run.adapter is not None:
        return AS_IS if run.recipe.model.pooling == "cls" else REMOTE_CODE
    return client_kind(folder)


def _local_dataset_name(data: DataConfig) -> str:
    if data.train_dir and not data.train_file:
        return Path(str(data.train_dir)).parent.name or "local"
    if not data.train_file:
        return "local"
    path = Path(str(data.train_file).removeprefix("pkg:"))
    return path.parent.name or path.stem


def render_model_card(folder: str | Path, *, model_ref: str | None = None, merged: bool = False) -> str:
    """README.md text for `folder`; `model_ref` is what the usage snippet loads (hub repo id or local path)."""
    folder = Path(folder)
    run = _read(folder)
    model_ref = model_ref or str(folder)
    name = model_ref.rstrip("/").split("/")[-1]
    metadata = card_metadata(folder, model_name=name, merged=merged)
    header = "---\n" + metadata.to_yaml() + "\n---\n"
    body = [
        *_intro(run, name, merged, metadata.base_model),
        *_how_to_use(run, folder, model_ref, merged, metadata.base_model),
        *_results_section(run),
        *_training_section(run),
        *_limitations(run, run.adapter is not None and not merged),
    ]
    text = header + "\n" + "\n".join(body)
    return _without_local_paths(text, run) if looks_like_hub_id(model_ref) else text


def _without_local_paths(text: str, run: _Run) -> str:
    """A card for the hub names no local absolute path (a base or teacher folder, a `pkg:` model's site-packages
    location): an adapter's local base becomes BASE_MODEL, which the card explains; other paths their last name."""
    base = (run.adapter or {}).get("base_model_name_or_path")
    if base and not looks_like_hub_id(base) and f"`{base}`" in text:
        text = text.replace(f"`{base}`, which is downloaded separately (`pip install peft`)", (
            f"`{LOCAL_BASE}`, a local copy of a base model that others cannot download: push again with "
            f"`hftransfer push --base-model ID`, ID that checkpoint's hub id, or replace `{LOCAL_BASE}` "
            "(`hftransfer_base_model` in config.json) with it (`pip install peft`)"
        )).replace(f"`{base}`", f"`{LOCAL_BASE}`")  # fmt: skip
    return _ABSOLUTE_PATH.sub(lambda match: Path(match.group(0)).name, text)


def write_model_card(folder: str | Path, *, model_ref: str | None = None, merged: bool = False) -> Path:
    """Write README.md into `folder` (an output folder, or a copy staged for upload)."""
    path = Path(folder) / CARD_FILE
    path.write_text(render_model_card(folder, model_ref=model_ref, merged=merged))
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value)}`"
    return "—" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]


def _intro(run: _Run, name: str, merged: bool, base_model: str | None) -> list[str]:
    results, evaluation = run.results, run.results["eval"]
    base_ref = base_model or results.get("model") or run.recipe.model.name_or_path
    strategy = results["strategy"]
    how = run.strategy.summary or f"the `{strategy}` strategy"
    if merged:
        how += "; the adapter was merged into the base weights"
    examples = evaluation.get("num_samples", results.get("num_eval_samples", "?"))
    return [
        f"# {name}",
        "",
        f"`{base_ref}` fine-tuned for **{run.task}** on {_dataset_label(run.recipe)} with {how}, using "
        f"hftransfer {results.get('versions', {}).get('hftransfer', '')} ({INSTALL_HINT}).",
        "",
        f"It predicts one of {len(run.labels)} classes: " + ", ".join(f"`{label}`" for label in run.labels) + ". "
        f"On the evaluation set ({examples} examples) it reaches accuracy **{_fmt(evaluation['accuracy'])}**"
        + (f" and ROC-AUC **{_fmt(evaluation['roc_auc'])}**." if evaluation.get("roc_auc") is not None else "."),
        *_across_domains(run.recipe),
    ]


def _across_domains(recipe: RunConfig) -> list[str]:
    """How the run used other domains' data (`domain.*`), when it did."""
    return ["", f"Trained across domains: {recipe.domain.describe()}."] if recipe.domain.active else []


def _how_to_use(run: _Run, folder: Path, model_ref: str, merged: bool, base_model: str | None) -> list[str]:
    adapter_card = run.adapter is not None and not merged
    kind = _client_kind(folder, run, merged)
    lines = ["", "## How to use", "", "```python", *_usage(run.task, model_ref, run.recipe.data, kind), "```"]
    pooling = run.recipe.model.pooling
    if kind == REMOTE_CODE:
        why = f"reads a **{pooling}-pooled** sentence vector (`model.pooling: {pooling}`)" if pooling != "cls" else ""
        if adapter_card:
            base = base_model or (run.adapter or {}).get("base_model_name_or_path") or "its base model"
            why += (" and " if why else "") + (
                f"holds only adapter weights (and the trained head) for `{base}`, which is downloaded separately "
                "(`pip install peft`)"
            )
        lines += [
            "",
            f"The classifier {why}. Its `config.json` names a model type of its own and `modeling_hftransfer.py` "
            "(torch and transformers only; read it first) loads it exactly as hftransfer does, so "
            "`trust_remote_code=True` is needed: without it `transformers` refuses to load the model rather "
            "than predict wrongly. The Hub's inference widget is off for the same reason.",
        ]
    elif kind == HFTRANSFER_ONLY:
        lines += ["", "Plain `transformers` cannot reproduce this model's predictions; load it with hftransfer."]
    if adapter_card:
        lines += ["", "`hftransfer push --merge` publishes a standalone merged model instead of the adapter."]
    return [*lines, "", '`hftransfer predict` also reads this folder: `hftransfer predict <folder> "some text"`.']


def _results_section(run: _Run) -> list[str]:
    evaluation = run.results["eval"]
    lines = ["", "## Results", "", *_results_table(evaluation, run.results.get("test")), ""]
    per_class = evaluation.get("per_class") or {}
    if per_class:
        rows = [[f"`{c}`", m["precision"], m["recall"], m["f1"], m["support"]] for c, m in per_class.items()]
        lines += ["Per class:", "", *_table(["class", "precision", "recall", "F1", "support"], rows), ""]
    matrix = evaluation.get("confusion_matrix")
    if matrix:
        names = list(per_class) or run.labels
        rows = [[f"`{n}`", *row] for n, row in zip(names, matrix, strict=False)]
        lines += [
            "Confusion matrix (rows: true class, columns: predicted class):",
            "",
            *_table(["true \\ predicted", *[f"`{n}`" for n in names]], rows),
            "",
        ]
    return lines


def _training_section(run: _Run) -> list[str]:
    strategy = run.results["strategy"]
    lines = ["## Training", "", *_training_table(run.results, run.recipe, strategy), ""]
    lines += _strategy_extras(run)
    options = to_dict(getattr(run.recipe.strategy, strategy, None) or {})
    if options:
        lines += [f"`{strategy}` strategy settings: " + ", ".join(f"`{k}={_fmt(v)}`" for k, v in options.items()), ""]
    return [
        *lines,
        "The full recipe is `config.yaml` in this folder; `hftransfer train config.yaml` reruns it "
        "(point the data paths at your copy of the data).",
        "",
    ]


def _results_table(evaluation: dict, test: dict | None = None) -> list[str]:
    """Validation metrics, and the test split's beside them when the run scored one."""
    rows = []
    for _, (key, pretty) in CARD_METRICS.items():
        if evaluation.get(key) is not None:
            rows.append([pretty, evaluation[key], *([test.get(key)] if test else [])])
    return _table(["metric", "validation", *(["test"] if test else [])], rows)


def _training_table(results: dict, recipe: RunConfig, strategy: str) -> list[str]:
    train, data = recipe.train, recipe.data
    trainable, total = results.get("trainable_params"), results.get("total_params")
    share = results.get("trainable_share")
    runtime = results.get("train_runtime_s")
    rows = [
        ["strategy", f"`{strategy}`"],
        [
            "trainable parameters",
            f"{trainable:,} of {total:,} ({100 * share:.3g}%)" if trainable and total and share is not None else "—",
        ],
        ["training examples", results.get("num_train_samples")],
        ["optimizer steps", _steps(results, recipe)],
        ["batch size × gradient accumulation", f"{train.batch_size} × {train.gradient_accumulation_steps}"],
        [
            "learning rate, schedule, warmup",
            f"{_fmt(train.learning_rate)}, {train.lr_scheduler}, {_fmt(train.warmup_ratio)} of steps",
        ],
        ["weight decay, max grad norm", f"{_fmt(train.weight_decay)}, {_fmt(train.max_grad_norm)}"],
        ["max sequence length", data.max_length],
        ["precision", results.get("precision")],
        ["seed", train.seed],
        ["training loop", results.get("loop")],
        [
            "training time",
            f"{runtime:.1f} s ({results.get('train_samples_per_second', 0):.1f} examples/s)"
            if runtime is not None
            else "—",
        ],
        ["hardware", results.get("hardware")],
        [
            "checkpoint size",
            f"{results['checkpoint_size_bytes'] / 1e6:.1f} MB" if results.get("checkpoint_size_bytes") else "—",
        ],
        ["versions", ", ".join(f"{k} {v}" for k, v in (results.get("versions") or {}).items())],
    ]
    return _table(["setting", "value"], [[k, v if isinstance(v, str) else _fmt(v)] for k, v in rows if v is not None])


def _steps(results: dict, recipe: RunConfig) -> str:
    steps = results.get("global_steps")
    if recipe.train.max_steps > 0:
        return f"{steps} (max_steps={recipe.train.max_steps})"
    return f"{steps} ({_fmt(results.get('epochs', recipe.train.epochs))} epochs)"


def _usage(task: str, model_ref: str, data: DataConfig, kind: str) -> list[str]:
    """Python that loads this model and classifies an example; tests run it against `hftransfer predict`."""
    pair = len(data.text_columns) == 2 and data.join_text_columns_with is None
    if task == "text-classification":
        example = '{"text": "A first sentence.", "text_pair": "A second one."}' if pair else '"An example to classify."'
    else:
        example = '"path/to/image.jpg"'
    if kind == HFTRANSFER_ONLY:
        return [
            "from hftransfer.artifacts.saved import load_run",
            "from hftransfer.evaluation.scoring import predict_records",
            "",
            f'run = load_run("{model_ref}")  # a local copy of this folder',
            f"print(list(predict_records(run, [{example}])))",
        ]
    remote = ", trust_remote_code=True" if kind == REMOTE_CODE else ""
    return [
        "from transformers import pipeline",
        "",
        f'classifier = pipeline("{task}", model="{model_ref}"{remote})',
        f"print(classifier({example}, top_k=None))",
    ]


def _strategy_extras(run: _Run) -> list[str]:
    """What a strategy added to results.json (e.g. the teacher of a distilled student): its table, or its scalars."""
    table = run.strategy.card_table(run.results)
    if table is not None:
        return [table.caption, "", *_table(table.header, table.rows), ""]
    extra = run.results.get(run.strategy.name)
    if not isinstance(extra, dict) or not extra:
        return []
    scalars = {k: v for k, v in extra.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    name = run.strategy.name
    return [f"`{name}` results: " + ", ".join(f"{k}={_fmt(v)}" for k, v in scalars.items()), ""] if scalars else []


def _limitations(run: _Run, adapter_card: bool) -> list[str]:
    results, evaluation, labels = run.results, run.results["eval"], run.labels
    n = evaluation.get("num_samples") or results.get("num_eval_samples") or 0
    accuracy = evaluation.get("accuracy")
    items = []
    if n and accuracy is not None:
        margin = 1.96 * math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / n)
        items.append(
            f"- The results come from {n} held-out examples of the same source as the training data; the accuracy "
            f"is uncertain by about ±{margin:.3f} (95% normal interval) and says little about other domains."
        )
    items += [
        f"- It always answers with one of {', '.join(f'`{label}`' for label in labels)}; there is no "
        '"none of these" class, and its scores are not calibrated probabilities.',
        "- It inherits the biases of the base model's pretraining data and of the fine-tuning data.",
    ]
    if run.recipe.data.max_length:
        items.append(f"- Inputs longer than {run.recipe.data.max_length} tokens are truncated.")
    if run.recipe.data.max_train_samples:
        items.append(f"- Training used a subsample of {run.recipe.data.max_train_samples} examples.")
    if adapter_card:
        items.append("- The adapter only works with the exact base checkpoint it was trained on.")
    items += run.strategy.card_limitations(results)
    return ["## Limitations", "", *items]
