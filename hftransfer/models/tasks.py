"""The modality seam: text and image classification behind one interface.

The pipeline, scoring, the ONNX export, frozen features and distillation call a `Task` and never branch on
the modality: what a checkpoint's processor is (tokenizer or image processor), how raw rows become model
inputs and batches, what a prediction input looks like, which tensors an exported graph takes, and what a
frozen checkpoint's features are. `get_task(name)` returns the task; `checkpoint_task` tells which one a
checkpoint is (the one place modality is detected).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import torch
from datasets import Dataset, DatasetDict
from torch import nn
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)

from hftransfer.config.locations import resolve_location
from hftransfer.config.recipe import DataConfig, ModelConfig, RunConfig
from hftransfer.data.images import load_image_file, load_image_splits, prepare_image_data
from hftransfer.data.labels import LabelMap
from hftransfer.data.prepared import PreparedData
from hftransfer.data.sources import DataError, load_splits, single_file_split
from hftransfer.data.text import DynamicPaddingCollator, prepare_text_data, tokenize_split
from hftransfer.models.images import is_image_model_type, load_image_classifier, load_image_processor
from hftransfer.models.loading import (
    ModelError,
    load_classification_model,
    load_classifier,
    load_saved_tokenizer,
    load_tokenizer,
    saved_config,
)
from hftransfer.models.pooling import apply_pooling, masked_mean

logger = logging.getLogger("hftransfer")

TEXT = "text-classification"
IMAGE = "image-classification"

Read = Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]
"""`read(model output, batch inputs) -> [batch, dims]`: what a feature extractor keeps of a forward pass."""


@dataclasses.dataclass
class GraphInputs:
    """How a classifier's exported graph is fed: the tensor names, a batch to trace with, the dynamic axes."""

    names: list[str]
    sample: dict[str, torch.Tensor]
    axes: dict[int, str]


class Task:
    """What differs between modalities; every method takes the recipe's sections it needs."""

    name: ClassVar[str]
    averages_layers: ClassVar[bool] = False
    """Whether frozen features may average every layer's states (`rank --layers mean`): all of one width."""

    auto_class: ClassVar[type]
    """The transformers Auto class of this task's classifiers."""

    # --- checkpoints ---------------------------------------------------------------------------------------------

    def load_processor(self, model: ModelConfig) -> Any:
        """Tokenizer (text) or image processor (images) of the checkpoint."""
        raise NotImplementedError

    def load_saved_processor(self, folder: str | Path) -> Any:
        raise NotImplementedError

    def load_model(self, model: ModelConfig, labels: LabelMap) -> PreTrainedModel:
        """The checkpoint as a classifier for `labels`, ready to train (head new where its classes differ)."""
        raise NotImplementedError

    def load_model_as_saved(self, location: str | Path, revision: str | None = None) -> tuple[PreTrainedModel, list]:
        """A classifier as it was saved (its own head and class names), and the weights it lacked."""
        return load_classification_model(self.auto_class, str(location), revision=revision)

    def load_saved_model(self, folder: Path, model: ModelConfig) -> PreTrainedModel:
        """A full (non-adapter) model saved in an output folder, with the recipe's `model.pooling` re-applied.

        Quiet unless weights are missing that the run should have saved (a mean-pooled run saves no pooler)."""
        loaded, missing = self.load_model_as_saved(folder)
        if model.pooling != "cls":
            missing = [key for key in missing if ".pooler." not in f".{key}"]
        if missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            logger.warning("%s lacks weights the run trained (%s); they are random now.", folder, shown)
        return apply_pooling(loaded, model.pooling)

    # --- data ----------------------------------------------------------------------------------------------------

    def load_splits(self, data: DataConfig, *, need_train: bool = True) -> DatasetDict:
        """The recipe's raw splits."""
        raise NotImplementedError

    def load_file(self, path: str, data: DataConfig) -> Dataset:
        """One labelled file as a raw split (`evaluate --file`)."""
        raise NotImplementedError

    def prepare_data(self, data: DataConfig, processor: Any, raw: DatasetDict | None = None) -> PreparedData:
        """Labelled, model-ready splits (from `raw` when given, else the recipe's sources); raw rows are kept."""
        raise NotImplementedError

    def encode_split(self, raw: Dataset, labels: LabelMap, data: DataConfig, name: str, processor: Any) -> Dataset:
        """A raw labelled split as model-ready rows with integer `labels`."""
        return self.encode_inputs(labels.encode(raw, data.label_column, name), data, name, processor)

    def encode_inputs(self, rows: Dataset, data: DataConfig, name: str, processor: Any) -> Dataset:
        """Raw rows (labelled or not) as model-ready rows."""
        raise NotImplementedError

    def collator(self, processor: Any, data: DataConfig) -> Callable:
        raise NotImplementedError

    def read_path(self, path: str, data: DataConfig) -> Dataset:
        """Rows of one file or folder named on the command line (`rank`, `shift`): a data file, a `.txt` file of
        texts, or an image folder."""
        if Path(path).is_dir():
            return self.read_folder(path, data)
        if not Path(path).is_file():
            raise DataError(f"{path} does not exist.")
        if path.endswith(".txt"):
            return self.read_lines(path, data)
        return self.load_file(path, data)

    def read_folder(self, path: str, data: DataConfig) -> Dataset:
        raise DataError(f"{path} is a folder; text data is one csv/tsv/json/jsonl/parquet or .txt file.")

    def read_lines(self, path: str, data: DataConfig) -> Dataset:
        raise DataError(f"{path}: a .txt file holds texts, but the checkpoints are image models.")

    # --- prediction, export, features ----------------------------------------------------------------------------

    def prediction_rows(self, records: Iterable[Any], data: DataConfig) -> tuple[Dataset, list[dict]]:
        """Raw rows for `predict` from the user's records, and what each output line repeats of its input."""
        raise NotImplementedError

    def fallback_rows(self, data: DataConfig) -> Dataset:
        """A few made-up raw rows, for checking an export when the run's own data cannot be read."""
        raise NotImplementedError

    def graph_inputs(self, rows: Dataset, collator: Callable, processor: Any) -> GraphInputs:
        raise NotImplementedError

    def feature_model(self, location: str, layers: str) -> tuple[nn.Module, Read]:
        """A frozen checkpoint and the features read from its forward pass (`layers`: last or mean)."""
        raise NotImplementedError

    def check_feature_rows(self, rows: Dataset, data: DataConfig, where: str, columns_hint: str) -> Dataset:
        """Rows ready for feature extraction (every input present or readable), or a DataError."""
        raise NotImplementedError

    def input_difference(self, student: Any, teacher: Any, teacher_name: str, max_length: int) -> str | None:
        """None when a teacher reads the student's inputs as they are; else what differs (the teacher then needs
        the rows encoded its own way). Raises where the teacher cannot be fed at all."""
        raise NotImplementedError


class TextTask(Task):
    name = TEXT
    averages_layers = True
    auto_class = AutoModelForSequenceClassification
    load_processor, load_saved_processor = staticmethod(load_tokenizer), staticmethod(load_saved_tokenizer)
    load_model, load_splits = staticmethod(load_classifier), staticmethod(load_splits)
    load_file, prepare_data = staticmethod(single_file_split), staticmethod(prepare_text_data)

    def encode_inputs(self, rows: Dataset, data: DataConfig, name: str, processor: Any) -> Dataset:
        return tokenize_split(rows, processor, data, name)

    def collator(self, processor: Any, data: DataConfig) -> Callable:
        return DynamicPaddingCollator(processor)

    def read_lines(self, path: str, data: DataConfig) -> Dataset:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise DataError(f"{path} has no non-empty lines.")
        return Dataset.from_dict({data.text_columns[0]: lines})

    def prediction_rows(self, records: Iterable[Any], data: DataConfig) -> tuple[Dataset, list[dict]]:
        columns = data.text_columns
        rows = [r if isinstance(r, dict) else {columns[0]: r} for r in records]
        for column in columns:
            bad = [i for i, row in enumerate(rows) if not isinstance(row.get(column), str)]
            if bad:
                raise DataError(f"Inputs {bad[:5]} have no text in '{column}'; this model reads the columns {columns}.")
        shown = [{c: row[c] for c in columns} for row in rows]
        return Dataset.from_dict({c: [row[c] for row in rows] for c in columns}), shown

    def fallback_rows(self, data: DataConfig) -> Dataset:
        texts = ["a short text", "a somewhat longer text to classify, with a comma", "ok"]
        rows = Dataset.from_dict({data.text_columns[0]: texts})
        if len(data.text_columns) > 1:
            rows = rows.add_column(data.text_columns[1], list(reversed(texts)))
        return rows

    def graph_inputs(self, rows: Dataset, collator: Callable, processor: Any) -> GraphInputs:
        # Two rows of different lengths, so the traced graph sees real padding in the attention mask.
        lengths = rows["length"]
        shortest, longest = lengths.index(min(lengths)), lengths.index(max(lengths))
        sample = collator([rows[i] for i in ([longest, shortest] if shortest != longest else [0])])
        names = [name for name in processor.model_input_names if name in sample]
        return GraphInputs(names, sample, {0: "batch", 1: "sequence"})

    def feature_model(self, location: str, layers: str) -> tuple[nn.Module, Read]:
        """Attention-masked means of the last hidden state, or of every hidden state averaged (`mean`)."""
        from transformers import AutoModel

        model = AutoModel.from_pretrained(resolve_location(location), use_safetensors=True, **saved_config(location))
        if layers == "mean":
            model.config.output_hidden_states = True
            return model, lambda output, inputs: torch.stack(
                [masked_mean(states, inputs.get("attention_mask")) for states in output.hidden_states]
            ).mean(dim=0)
        return model, lambda output, inputs: masked_mean(output.last_hidden_state, inputs.get("attention_mask"))

    def check_feature_rows(self, rows: Dataset, data: DataConfig, where: str, columns_hint: str) -> Dataset:
        from hftransfer.data.labels import require_columns

        require_columns(rows, list(data.text_columns), where, columns_hint)
        return rows

    def input_difference(self, student: Any, teacher: Any, teacher_name: str, max_length: int) -> str | None:
        from hftransfer.data.text import tokenizer_difference

        return tokenizer_difference(student, teacher, teacher_name, max_length)


class ImageTask(Task):
    name = IMAGE
    auto_class = AutoModelForImageClassification
    load_processor = staticmethod(load_image_processor)

    @staticmethod
    def load_saved_processor(folder: str | Path) -> Any:
        return AutoImageProcessor.from_pretrained(folder, **saved_config(str(folder)))

    load_model, load_splits = staticmethod(load_image_classifier), staticmethod(load_image_splits)
    load_file, prepare_data = staticmethod(load_image_file), staticmethod(prepare_image_data)

    def encode_split(self, raw: Dataset, labels: LabelMap, data: DataConfig, name: str, processor: Any) -> Dataset:
        from hftransfer.data.images import encode_image_split

        return encode_image_split(raw, labels, data, name)[0]

    def encode_inputs(self, rows: Dataset, data: DataConfig, name: str, processor: Any) -> Dataset:
        from hftransfer.data.images import IMAGE_COLUMN, check_images

        keep = [c for c in (IMAGE_COLUMN, "labels") if c in rows.column_names]
        return check_images(rows.select_columns(keep), name)[0]  # every input must open: the error names it

    def collator(self, processor: Any, data: DataConfig) -> Callable:
        from hftransfer.data.images import ImageCollator

        return ImageCollator(processor, data.images)

    def read_folder(self, path: str, data: DataConfig) -> Dataset:
        from hftransfer.data.images import as_image_refs
        from hftransfer.data.sources import load_image_folders

        folders = load_image_folders(dataclasses.replace(data, train_dir=path))
        return as_image_refs(folders["train"], data.images, None, path)

    def prediction_rows(self, records: Iterable[Any], data: DataConfig) -> tuple[Dataset, list[dict]]:
        """Image files and folders (expanded to the images inside), or `{"image": path}` records, in order."""
        from hftransfer.data.images import IMAGE_COLUMN, expand_image_paths, image_refs

        given = [r[IMAGE_COLUMN] if isinstance(r, dict) and IMAGE_COLUMN in r else r for r in records]
        bad = [i for i, item in enumerate(given) if not isinstance(item, str)]
        if bad:
            raise DataError(f'Inputs {bad[:5]} are not image paths; give files, folders or {{"image": path}} records.')
        paths = expand_image_paths(given)
        return image_refs(paths), [{IMAGE_COLUMN: path} for path in paths]

    def fallback_rows(self, data: DataConfig) -> Dataset:
        from hftransfer.data.images import IMAGE_COLUMN, made_up_images

        return Dataset.from_dict({IMAGE_COLUMN: made_up_images()})

    def graph_inputs(self, rows: Dataset, collator: Callable, processor: Any) -> GraphInputs:
        # Two images, so the traced graph does not bake in a batch of one.
        sample = collator([rows[i] for i in range(min(2, len(rows)))])
        return GraphInputs(["pixel_values"], sample, {0: "batch"})

    def feature_model(self, location: str, layers: str) -> tuple[nn.Module, Read]:
        """Exactly what the classification head reads (ResNet/ConvNeXt pooled output, ViT's [CLS] state)."""
        model = self.auto_class.from_pretrained(
            resolve_location(location), use_safetensors=True, **saved_config(location)
        )
        head = getattr(model, "classifier", None)
        if not isinstance(head, nn.Module):
            name = type(model).__name__
            raise ModelError(f"'{location}' ({name}) has no `classifier` head whose input could be read.")
        seen: dict[str, torch.Tensor] = {}
        head.register_forward_pre_hook(lambda _module, args: seen.__setitem__("x", args[0]))
        return model, lambda _output, _inputs: seen.pop("x").flatten(1)

    def check_feature_rows(self, rows: Dataset, data: DataConfig, where: str, columns_hint: str) -> Dataset:
        from hftransfer.data.images import check_images

        return check_images(rows, where)[0]  # every image opens, or the error names it

    def input_difference(self, student: Any, teacher: Any, teacher_name: str, max_length: int) -> str | None:
        from hftransfer.models.images import check_same_preprocessing

        check_same_preprocessing(student, teacher, teacher_name)  # a teacher reads the student's pixels or nothing
        return None


TASKS: dict[str, Task] = {TEXT: TextTask(), IMAGE: ImageTask()}


def get_task(name: str) -> Task:
    return TASKS[name]


def checkpoint_task(location: str, revision: str | None = None, trust_remote_code: bool = False) -> str:
    """Image classification for vision checkpoints, text classification otherwise (the one place that decides)."""
    from hftransfer.models.loading import checkpoint_config

    return config_task(checkpoint_config(location, revision=revision, trust_remote_code=trust_remote_code))


def config_task(model_config: Any) -> str:
    """Image classification for a vision model's config, text classification otherwise."""
    return IMAGE if is_image_model_type(model_config.model_type) else TEXT


def resolve_task(config: RunConfig, model: PreTrainedModel | None = None) -> RunConfig:
    """The config with `task: auto` replaced by the checkpoint's (or the given `model`'s) modality; saved recipes
    record it."""
    if config.task != "auto":
        return config
    if model is not None:
        return dataclasses.replace(config, task=config_task(model.config))
    m = config.model
    return dataclasses.replace(config, task=checkpoint_task(m.name_or_path, m.revision, m.trust_remote_code))
