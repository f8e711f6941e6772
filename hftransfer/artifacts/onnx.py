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

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from hftransfer.artifacts.layout import (
    LABELS_FILE,
    ONNX_FILE,
    ONNX_REPORT_FILE,
    RECIPE_FILE,
    publish,
    staging_dir,
    write_json,
)
from hftransfer.artifacts.saved import SavedRun, load_run
from hftransfer.console import progress
from hftransfer.data.loaders import eval_loader
from hftransfer.errors import UserError
from hftransfer.evaluation.inference import dataset_logits
from hftransfer.models.tasks import get_task


class ExportError(UserError):
    """An ONNX export that cannot run or does not reproduce the torch model."""


@dataclass
class OnnxExport:
    folder: Path
    rows_checked: int
    max_abs_diff: float
    same_predictions: bool


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
    task = get_task(run.config.task)
    rows = task.encode_inputs(_check_rows(run, max_check_rows), run.config.data, "onnx-check", run.tokenizer)
    collator = task.collator(run.tokenizer, run.config.data)
    graph = task.graph_inputs(rows, collator, run.tokenizer)
    input_names = graph.names

    work = staging_dir(out, overwrite)
    wrapper = _LogitsOnly(model, input_names).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(
            wrapper,
            tuple(graph.sample[name] for name in input_names),
            str(work / ONNX_FILE),
            dynamo=False,
            input_names=input_names,
            output_names=["logits"],
            dynamic_axes={**{name: graph.axes for name in input_names}, "logits": {0: "batch"}},
            opset_version=opset,
        )
    session = ort.InferenceSession(str(work / ONNX_FILE), providers=["CPUExecutionProvider"])
    expected = dataset_logits(model, rows, collator, batch_size=32, device="cpu", desc="onnx check: torch")
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
    write_json(work / ONNX_REPORT_FILE, {**report, "opset": opset, "atol": atol})
    folder = publish(work, out)
    return OnnxExport(folder, len(rows), diff, same)


def _check_rows(run: SavedRun, limit: int) -> Dataset:
    """Up to `limit` raw validation rows of the run's recipe (their inputs only), or a few made-up ones when that
    data cannot be read here."""
    task, data = get_task(run.config.task), run.config.data
    try:
        split = task.load_splits(data, need_train=False).get("validation")
    except (UserError, FileNotFoundError, ValueError):
        split = None
    if split is None:
        return task.fallback_rows(data)
    split = split.select(range(min(limit, len(split))))
    return split.remove_columns([c for c in (data.label_column,) if c in split.column_names])


def _onnx_logits(session, rows: Dataset, collator, input_names: list[str]) -> np.ndarray:
    loader = eval_loader(rows, collator, 32)
    batches = progress(loader, desc="onnx check: onnxruntime")
    chunks = [session.run(["logits"], {n: batch[n].numpy() for n in input_names})[0] for batch in batches]
    logits = np.concatenate(chunks)
    restored = np.empty_like(logits)
    restored[np.asarray(loader.row_order)] = logits
    return restored


def read_report(folder: str | Path) -> dict:
    return json.loads((Path(folder) / ONNX_REPORT_FILE).read_text())
