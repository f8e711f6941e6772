"""`hftransfer export --onnx`: an ONNX graph of a run's classifier, checked against the torch logits.

Optional extra: needs `pip install onnx onnxruntime`. A text graph takes the tokenizer's tensors
(`input_ids`, `attention_mask`, and `token_type_ids` when the model uses them) with dynamic
batch and sequence axes; an image graph takes `pixel_values` (the image processor's output, whose
size the processor fixes) with a dynamic batch axis. Both return `logits`. Adapters are merged first
and `model.pooling` is part of the graph, so the file alone (with the saved tokenizer or image
processor) reproduces `hftransfer predict`. The export is only published after onnxruntime's logits
on the run's validation rows match torch's.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from hftransfer.artifacts.layout import publish, staging_dir, write_json
from hftransfer.artifacts.saved import LABELS_FILE, RECIPE_FILE, SavedRun, load_run
from hftransfer.data import DynamicPaddingCollator, tokenize_split
from hftransfer.data.loaders import eval_loader
from hftransfer.errors import UserError
from hftransfer.evaluation.inference import dataset_logits
from hftransfer.models.tasks import IMAGE, get_task

ONNX_FILE = "model.onnx"
REPORT_FILE = "onnx_check.json"
_FALLBACK_TEXTS = ["a short text", "a somewhat longer text to classify, with a comma", "ok"]


class ExportError(UserError):
    """An ONNX export that cannot run or does not reproduce the torch model."""


@dataclass
class OnnxExport:
    folder: Path
    rows_checked: int
    max_abs_diff: float
    same_predictions: bool


@dataclass
class _CheckInputs:
    """Rows to check the graph on, how they batch, a batch to trace with, and the graph's inputs and axes."""

    rows: Dataset
    collator: Callable
    sample: dict[str, torch.Tensor]
    names: list[str]
    axes: dict[int, str]


class _LogitsOnly(nn.Module):
    """Positional inputs in a fixed order and a plain logits tensor out, as the ONNX tracer wants."""

    def __init__(self, model: nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.model, self.input_names = model, input_names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, tensors, strict=True))).logits


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ExportError(
            f"ONNX export needs the optional packages onnx and onnxruntime ({err.name} is missing): "
            "pip install onnx onnxruntime"
        ) from None


def export_onnx(
    output_dir: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    opset: int = 17,
    max_check_rows: int = 256,
    atol: float = 1e-4,
) -> OnnxExport:
    """Write `out/model.onnx` (with tokenizer, config and labels) and check it on the run's validation rows."""
    require_onnx()
    import onnxruntime as ort

    run = load_run(output_dir)
    model = run.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()  # one graph; the adapter cannot stay separate in ONNX
    model = model.float().eval()
    check = _image_inputs(run, max_check_rows) if run.config.task == IMAGE else _text_inputs(run, max_check_rows)
    rows, collator, input_names = check.rows, check.collator, check.names

    work = staging_dir(out, overwrite)
    wrapper = _LogitsOnly(model, input_names).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(
            wrapper,
            tuple(check.sample[name] for name in input_names),
            str(work / ONNX_FILE),
            dynamo=False,
            input_names=input_names,
            output_names=["logits"],
            dynamic_axes={**{name: check.axes for name in input_names}, "logits": {0: "batch"}},
            opset_version=opset,
        )
    session = ort.InferenceSession(str(work / ONNX_FILE), providers=["CPUExecutionProvider"])
    expected = dataset_logits(model, rows, collator, batch_size=32, device="cpu")
    got = _onnx_logits(session, rows, collator, input_names)
    diff = float(np.abs(expected - got).max())
    same = bool((expected.argmax(-1) == got.argmax(-1)).all())
    if diff > atol or not same:
        shutil.rmtree(work)
        raise ExportError(
            f"The ONNX graph does not reproduce the torch model (max |logit difference| {diff:.2e} > {atol:g} "
            f"on {len(rows)} rows); nothing was written. Try another --opset."
        )
    run.tokenizer.save_pretrained(work)
    model.config.save_pretrained(work)
    for name in (RECIPE_FILE, LABELS_FILE):
        if (run.folder / name).is_file():
            shutil.copyfile(run.folder / name, work / name)
    report = {"rows_checked": len(rows), "max_abs_diff": diff, "same_predictions": same, "inputs": input_names}
    write_json(work / REPORT_FILE, {**report, "opset": opset, "atol": atol})
    folder = publish(work, out)
    return OnnxExport(folder, len(rows), diff, same)


def _text_inputs(run: SavedRun, limit: int) -> _CheckInputs:
    """Tokenized validation rows of the run's own data (or a few fixed texts if that data is gone)."""
    data_config = run.config.data
    split = _validation_split(run, limit)
    if split is None:
        split = Dataset.from_dict({data_config.text_columns[0]: _FALLBACK_TEXTS})
        if len(data_config.text_columns) > 1:
            split = split.add_column(data_config.text_columns[1], list(reversed(_FALLBACK_TEXTS)))
    keep = [c for c in split.column_names if c in data_config.text_columns]
    rows = tokenize_split(split.select_columns(keep), run.tokenizer, data_config, "onnx-check")
    collator = DynamicPaddingCollator(run.tokenizer)
    sample = collator([rows[i] for i in _padded_pair(rows)])
    names = [name for name in run.tokenizer.model_input_names if name in sample]
    return _CheckInputs(rows, collator, sample, names, {0: "batch", 1: "sequence"})


def _image_inputs(run: SavedRun, limit: int) -> _CheckInputs:
    """Validation images of the run's own data as its processor prepares them (or a few made-up images)."""
    from hftransfer.data.images import IMAGE_COLUMN

    task = get_task(IMAGE)
    split = _validation_split(run, limit)
    if split is not None:
        rows = task.encode_split(split, run.labels, run.config.data, "onnx-check", run.tokenizer)
    else:
        rows = Dataset.from_dict({IMAGE_COLUMN: _fallback_images()})
    collator = task.make_collator(run.tokenizer, run.config.data)
    # Two images, so the traced graph does not bake in a batch of one.
    sample = collator([rows[i] for i in range(min(2, len(rows)))])
    return _CheckInputs(rows, collator, sample, ["pixel_values"], {0: "batch"})


def _validation_split(run: SavedRun, limit: int) -> Dataset | None:
    """Up to `limit` raw validation rows of the run's recipe, or None when its data cannot be read here."""
    try:
        split = get_task(run.config.task).load_splits(run.config.data, need_train=False).get("validation")
    except (UserError, FileNotFoundError, ValueError):
        return None
    return split.select(range(min(limit, len(split)))) if split is not None else None


def _fallback_images() -> list[dict]:
    """In-memory PNGs of different sizes and modes (undecoded references, like a dataset's image column)."""
    from PIL import Image

    refs = []
    for size, mode, colour in (
        ((40, 30), "RGB", (200, 40, 40)),
        ((25, 60), "L", 90),
        ((64, 64), "RGBA", (0, 90, 200, 255)),
    ):
        buffer = io.BytesIO()
        Image.new(mode, size, colour).save(buffer, format="PNG")
        refs.append({"path": None, "bytes": buffer.getvalue()})
    return refs


def _padded_pair(rows: Dataset) -> list[int]:
    """Two rows of different lengths, so the traced graph sees real padding in the attention mask."""
    lengths = rows["length"]
    shortest, longest = int(np.argmin(lengths)), int(np.argmax(lengths))
    return [longest, shortest] if shortest != longest else [0]


def _onnx_logits(session, rows: Dataset, collator, input_names: list[str]) -> np.ndarray:
    loader = eval_loader(rows, collator, 32)
    chunks = [session.run(["logits"], {n: batch[n].numpy() for n in input_names})[0] for batch in loader]
    logits = np.concatenate(chunks)
    restored = np.empty_like(logits)
    restored[np.asarray(loader.row_order)] = logits
    return restored


def read_report(folder: str | Path) -> dict:
    return json.loads((Path(folder) / REPORT_FILE).read_text())
