"""The model card (README.md) of an output folder: Hub metadata a machine reads, and a body a person reads.

Everything comes from files the run already wrote (results.json, config.yaml, labels.json,
adapter_config.json), so a card can be regenerated for any finished folder, e.g. with the
hub repo id filled in just before a push.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCardData

from hftransfer.errors import UserError
from hftransfer.strategies.lora.strategy import ADAPTER_CONFIG_FILE

CARD_FILE = "README.md"
_RESULTS_FILE, _RECIPE_FILE, _LABELS_FILE = "results.json", "config.yaml", "labels.json"  # as in saved.py

# metric id on the hub -> (key in results["eval"], pretty name)
CARD_METRICS = {
    "accuracy": ("accuracy", "Accuracy"),
    "f1": ("f1", "F1"),
    "f1_macro": ("f1_macro", "Macro F1"),
    "precision": ("precision", "Precision"),
    "recall": ("recall", "Recall"),
    "roc_auc": ("roc_auc", "ROC-AUC"),
}
STRATEGY_SUMMARIES = {
    "full": "full fine-tuning (every weight of the base model was updated)",
    "frozen": "layer-frozen fine-tuning (the lower layers kept their pretrained weights)",
    "lora": "LoRA (low-rank adapters trained on top of a frozen base model)",
    "distill": "knowledge distillation (a smaller student learned from a fine-tuned teacher)",
}
_AUTO_CLASSES = {"text-classification": "AutoModelForSequenceClassification"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class CardError(UserError):
    """A folder a model card cannot be written for."""


def looks_like_hub_id(name: str | None) -> bool:
    """A hub id (`bert-base-uncased`, `user/model`), not a local folder or a `pkg:` location."""
    if not name or name.startswith(("pkg:", "/", ".", "~")) or Path(name).exists():
        return False
    return bool(_HUB_ID.fullmatch(name))


def _read(folder: Path) -> tuple[dict, dict, list[str], dict | None]:
    results_file = folder / _RESULTS_FILE
    if not results_file.is_file():
        raise CardError(f"{folder} has no {_RESULTS_FILE}; a model card is written for finished hftransfer runs.")
    results = json.loads(results_file.read_text())
    recipe_file = folder / _RECIPE_FILE
    recipe = (yaml.safe_load(recipe_file.read_text()) or {}) if recipe_file.is_file() else {}
    labels_file = folder / _LABELS_FILE
    labels = json.loads(labels_file.read_text())["names"] if labels_file.is_file() else results.get("labels", [])
    adapter_file = folder / ADAPTER_CONFIG_FILE
    adapter = json.loads(adapter_file.read_text()) if adapter_file.is_file() else None
    return results, recipe, [str(name) for name in labels], adapter


def base_model_id(recipe: dict, adapter: dict | None = None) -> str | None:
    """The hub id the card records as `base_model`: `hub.base_model`, else the recipe's model if it is a hub id."""
    hub = recipe.get("hub") or {}
    for candidate in (
        hub.get("base_model"),
        (recipe.get("model") or {}).get("name_or_path"),
        (adapter or {}).get("base_model_name_or_path"),
    ):
        if looks_like_hub_id(candidate):
            return candidate
    return None


def _dataset_ids(recipe: dict) -> list[str]:
    hub, data = recipe.get("hub") or {}, recipe.get("data") or {}
    if hub.get("datasets"):
        return list(hub["datasets"])
    return [data["dataset"]] if data.get("dataset") else []


def _dataset_label(recipe: dict) -> str:
    """A readable name of the training data: hub dataset (and config) or the local file names."""
    data = recipe.get("data") or {}
    if data.get("dataset"):
        return data["dataset"] + (f" ({data['dataset_config']})" if data.get("dataset_config") else "")
    files = [Path(str(data[k])).name for k in ("train_file", "validation_file") if data.get(k)]
    recorded = (recipe.get("hub") or {}).get("datasets")
    if files:
        local = "local files " + " / ".join(f"`{f}`" for f in files)
        return f"{', '.join(recorded)} ({local})" if recorded else local
    folders = [Path(str(data[k])).name for k in ("train_dir", "validation_dir") if data.get(k)]
    return "local image folders " + " / ".join(f"`{f}`" for f in folders) if folders else "local data"


def _task(recipe: dict, results: dict) -> str:
    """The resolved task; a recipe saying `auto` defers to what the run recorded."""
    task = recipe.get("task")
    return task if task and task != "auto" else results.get("task") or "text-classification"


def card_metadata(folder: str | Path, *, model_name: str | None = None, merged: bool = False) -> ModelCardData:
    """The YAML header: base_model, datasets, library_name, pipeline_tag, tags, metrics and model-index."""
    results, recipe, _, adapter = _read(Path(folder))
    adapter_card = adapter is not None and not merged
    task = _task(recipe, results)
    strategy = results.get("strategy", "full")
    datasets = _dataset_ids(recipe)
    data = recipe.get("data") or {}
    metrics = {
        mid: results["eval"][key] for mid, (key, _) in CARD_METRICS.items() if results["eval"].get(key) is not None
    }
    dataset_type = datasets[0] if datasets else _local_dataset_name(data)
    eval_results = [
        EvalResult(
            task_type=task,
            task_name=task.replace("-", " ").capitalize(),
            dataset_type=dataset_type,
            dataset_name=_dataset_label(recipe).replace("`", ""),
            dataset_config=data.get("dataset_config"),
            dataset_split=(data.get("validation_split") if data.get("dataset") else None) or "validation",
            metric_type=metric_id,
            metric_name=CARD_METRICS[metric_id][1],
            metric_value=round(float(value), 4),
        )
        for metric_id, value in metrics.items()
    ]
    tags = ["hftransfer", task, strategy]
    if adapter_card:
        tags += ["peft", "adapter"]
    if merged:
        tags.append("merged-adapter")
    return ModelCardData(
        base_model=base_model_id(recipe, adapter),
        datasets=datasets or None,
        library_name="peft" if adapter_card else "transformers",
        pipeline_tag=task,
        license=(recipe.get("hub") or {}).get("license"),
        tags=list(dict.fromkeys(tags)),
        metrics=list(metrics),
        model_name=model_name or Path(folder).name,
        eval_results=eval_results or None,
    )


def _local_dataset_name(data: dict) -> str:
    train_file, train_dir = data.get("train_file"), data.get("train_dir")
    if train_dir and not train_file:
        return Path(str(train_dir)).parent.name or "local"
    if not train_file:
        return "local"
    path = Path(str(train_file).removeprefix("pkg:"))
    return path.parent.name or path.stem


def render_model_card(folder: str | Path, *, model_ref: str | None = None, merged: bool = False) -> str:
    """README.md text for `folder`; `model_ref` is what the usage snippet loads (hub repo id or local path)."""
    folder = Path(folder)
    results, recipe, labels, adapter = _read(folder)
    model_ref = model_ref or str(folder)
    name = model_ref.rstrip("/").split("/")[-1]
    metadata = card_metadata(folder, model_name=name, merged=merged)
    header = "---\n" + metadata.to_yaml() + "\n---\n"
    body = "\n".join(_body(results, recipe, labels, adapter, model_ref, name, merged, metadata.base_model))
    return header + "\n" + body


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


def _body(
    results: dict,
    recipe: dict,
    labels: list[str],
    adapter: dict | None,
    model_ref: str,
    name: str,
    merged: bool,
    base_model: str | None,
) -> list[str]:
    evaluation, train, data = results["eval"], recipe.get("train") or {}, recipe.get("data") or {}
    strategy = results.get("strategy", "full")
    task = _task(recipe, results)
    base_ref = base_model or results.get("model") or (recipe.get("model") or {}).get("name_or_path", "?")
    adapter_card = adapter is not None and not merged
    how = STRATEGY_SUMMARIES.get(strategy, f"the `{strategy}` strategy")
    if merged:
        how += "; the adapter was merged into the base weights, so this is a plain `transformers` model"
    lines = [
        f"# {name}",
        "",
        f"`{base_ref}` fine-tuned for **{task}** on {_dataset_label(recipe)} with {how}, using "
        f"[hftransfer](https://pypi.org/project/hftransfer/) {results.get('versions', {}).get('hftransfer', '')}.",
        "",
        f"It predicts one of {len(labels)} classes: " + ", ".join(f"`{label}`" for label in labels) + ". "
        f"On the evaluation set ({evaluation.get('num_samples', results.get('num_eval_samples', '?'))} examples) "
        f"it reaches accuracy **{_fmt(evaluation['accuracy'])}**"
        + (f" and ROC-AUC **{_fmt(evaluation['roc_auc'])}**." if evaluation.get("roc_auc") is not None else "."),
    ]
    pooling = (recipe.get("model") or {}).get("pooling", "cls")
    usage = _usage(task, model_ref, labels, data, adapter_card, adapter, base_model, pooling)
    lines += ["", "## How to use", "", "```python", *usage, "```"]
    if pooling != "cls":
        lines += [
            "",
            f"The classifier reads a **{pooling}-pooled** sentence vector (`model.pooling: {pooling}`), which plain "
            "`transformers` does not apply on its own: keep the `apply_pooling` line (`pip install hftransfer`), "
            "or the predictions will be wrong.",
        ]
    if adapter_card:
        lines += [
            "",
            "This repository holds only the adapter weights (and the trained classification head); the base "
            "model is downloaded separately. `hftransfer push --merge` publishes a standalone merged model instead.",
        ]
    lines += ["", '`hftransfer predict` also reads this folder: `hftransfer predict <folder> "some text"`.']

    lines += ["", "## Results", "", *_results_table(evaluation), ""]
    per_class = evaluation.get("per_class") or {}
    if per_class:
        lines += [
            "Per class:",
            "",
            *_table(
                ["class", "precision", "recall", "F1", "support"],
                [[f"`{c}`", m["precision"], m["recall"], m["f1"], m["support"]] for c, m in per_class.items()],
            ),
            "",
        ]
    matrix = evaluation.get("confusion_matrix")
    if matrix:
        names = list(per_class) or labels
        lines += [
            "Confusion matrix (rows: true class, columns: predicted class):",
            "",
            *_table(
                ["true \\ predicted", *[f"`{n}`" for n in names]],
                [[f"`{n}`", *row] for n, row in zip(names, matrix, strict=False)],
            ),
            "",
        ]

    lines += ["## Training", "", *_training_table(results, train, data, strategy), ""]
    lines += _strategy_extras(results.get(strategy), strategy)
    options = (recipe.get("strategy") or {}).get(strategy)
    if options:
        lines += [f"`{strategy}` strategy settings: " + ", ".join(f"`{k}={_fmt(v)}`" for k, v in options.items()), ""]
    lines += [
        "The full recipe is `config.yaml` in this folder; `hftransfer train config.yaml` reruns it "
        "(point the data paths at your copy of the data).",
        "",
        "## Limitations",
        "",
        *_limitations(results, evaluation, data, labels, strategy, adapter_card),
    ]
    return lines


def _results_table(evaluation: dict) -> list[str]:
    rows = []
    for _, (key, pretty) in CARD_METRICS.items():
        if evaluation.get(key) is not None:
            rows.append([pretty, evaluation[key]])
    return _table(["metric", "value"], rows)


def _training_table(results: dict, train: dict, data: dict, strategy: str) -> list[str]:
    trainable, total = results.get("trainable_params"), results.get("total_params")
    share = results.get("trainable_share")
    runtime = results.get("train_runtime_s")
    rows = [
        ["strategy", f"`{strategy}`"],
        [
            "trainable parameters",
            f"{trainable:,} of {total:,} ({100 * share:.2f}%)" if trainable and total and share is not None else "—",
        ],
        ["training examples", results.get("num_train_samples")],
        ["optimizer steps", _steps(results, train)],
        [
            "batch size × gradient accumulation",
            f"{train.get('batch_size')} × {train.get('gradient_accumulation_steps', 1)}",
        ],
        [
            "learning rate, schedule, warmup",
            f"{_fmt(train.get('learning_rate'))}, {train.get('lr_scheduler')}, "
            f"{_fmt(train.get('warmup_ratio'))} of steps",
        ],
        ["weight decay, max grad norm", f"{_fmt(train.get('weight_decay'))}, {_fmt(train.get('max_grad_norm'))}"],
        ["max sequence length", data.get("max_length")],
        ["precision", results.get("precision")],
        ["seed", train.get("seed")],
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


def _steps(results: dict, train: dict) -> str:
    steps = results.get("global_steps")
    if (train.get("max_steps") or -1) > 0:
        return f"{steps} (max_steps={train['max_steps']})"
    return f"{steps} ({_fmt(results.get('epochs', train.get('epochs')))} epochs)"


def _usage(
    task: str,
    model_ref: str,
    labels: list[str],
    data: dict,
    adapter_card: bool,
    adapter: dict | None,
    base_model: str | None,
    pooling: str = "cls",
) -> list[str]:
    """Python that loads this model and classifies an example; tests run it against `hftransfer predict`."""
    pair = len(data.get("text_columns") or [None]) == 2 and data.get("join_text_columns_with") is None
    if task == "text-classification":
        example = '{"text": "A first sentence.", "text_pair": "A second one."}' if pair else '"An example to classify."'
        auto, preprocessor, keyword = "AutoModelForSequenceClassification", "AutoTokenizer", "tokenizer"
    else:
        example = '"path/to/image.jpg"'
        auto, preprocessor, keyword = "AutoModelForImageClassification", "AutoImageProcessor", "image_processor"
    call = f"print(classifier({example}, top_k=None))"
    if not adapter_card and pooling == "cls":
        return ["from transformers import pipeline", "", f'classifier = pipeline("{task}", model="{model_ref}")', call]
    lines = []
    if adapter_card:
        lines.append("from peft import PeftModel")
    lines.append(f"from transformers import {auto}, {preprocessor}, pipeline")
    if pooling != "cls":
        lines.append("from hftransfer.models.pooling import apply_pooling")
    lines.append("")
    pool = (lambda expr: f'apply_pooling({expr}, "{pooling}")') if pooling != "cls" else (lambda expr: expr)
    if adapter_card:
        base = base_model or (adapter or {}).get("base_model_name_or_path") or "BASE_MODEL"
        id2label = dict(enumerate(labels))
        lines += [
            f"id2label = {id2label!r}",
            f"base = {auto}.from_pretrained(",
            f'    "{base}", num_labels={len(labels)}, id2label=id2label,',
            "    label2id={v: k for k, v in id2label.items()}, ignore_mismatched_sizes=True,",
            ")",
            f'model = PeftModel.from_pretrained({pool("base")}, "{model_ref}").merge_and_unload()',
        ]
    else:
        lines.append(f"model = {pool(f'{auto}.from_pretrained(' + chr(34) + model_ref + chr(34) + ')')}")
    lines += [
        f'classifier = pipeline("{task}", model=model, {keyword}={preprocessor}.from_pretrained("{model_ref}"))',
        call,
    ]
    return lines


def _strategy_extras(extra: Any, strategy: str) -> list[str]:
    """What a strategy added to results.json (e.g. the teacher of a distilled student), as a short section."""
    if not isinstance(extra, dict) or not extra:
        return []
    if strategy == "distill" and isinstance(extra.get("teacher"), dict) and isinstance(extra.get("student"), dict):
        teacher, student = extra["teacher"], extra["student"]
        keys = [k for k in ("accuracy", "f1", "params", "size_bytes") if k in teacher or k in student]
        lines = [
            f"Distilled from the teacher `{extra.get('teacher_model', '?')}` "
            f"(temperature {_fmt(extra.get('temperature'))}, alpha {_fmt(extra.get('alpha'))}):",
            "",
            *_table(
                ["", *keys],
                [
                    ["teacher", *[teacher.get(k) for k in keys]],
                    ["student (this model)", *[student.get(k) for k in keys]],
                ],
            ),
            "",
        ]
        return lines
    scalars = {k: v for k, v in extra.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    return [f"`{strategy}` results: " + ", ".join(f"{k}={_fmt(v)}" for k, v in scalars.items()), ""] if scalars else []


def _limitations(
    results: dict, evaluation: dict, data: dict, labels: list[str], strategy: str, adapter_card: bool
) -> list[str]:
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
    if data.get("max_length"):
        items.append(f"- Inputs longer than {data['max_length']} tokens are truncated.")
    if data.get("max_train_samples"):
        items.append(f"- Training used a subsample of {data['max_train_samples']} examples.")
    if adapter_card:
        items.append("- The adapter only works with the exact base checkpoint it was trained on.")
    if strategy == "distill":
        items.append("- A distilled student is usually a little less accurate than its teacher; compare both.")
    return items
