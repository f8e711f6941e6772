"""The rows a cross-domain run reads besides the target's own: labelled source rows (the loop's main stream), the
target's labelled train rows (then a second stream) and an unlabelled target pool, all encoded before training."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from hftransfer.config.locations import resolve_location
from hftransfer.config.recipe import DataConfig, RunConfig
from hftransfer.data.labels import LabelMap
from hftransfer.data.prepared import AUGMENT_COLUMN, PreparedData
from hftransfer.errors import DataError, UserError

ROW_WEIGHT = "domain_weight"
"""Per-row loss weight column of instance reweighting."""


@dataclass
class DomainData:
    """What the objective draws besides the loop's batches, encoded like them."""

    target_train: Dataset | None = None
    """Labelled target rows, a second stream next to a source (None without a source or without target labels)."""
    unlabelled: Dataset | None = None
    """Unlabelled target rows (DANN)."""
    source_labels: LabelMap | None = None
    """The source's own classes when it trains its own head (`domain.separate_heads`)."""
    notes: dict = field(default_factory=dict)


@contextmanager
def named(key: str) -> Iterator[None]:
    """Prefix a data problem's one-line message with the recipe key whose file it concerns."""
    try:
        yield
    except UserError as err:
        if str(err).startswith(key):
            raise
        raise DataError(f"{key}: {err}") from err


def has_target_train(data: DataConfig, splits: DatasetDict | None) -> bool:
    if splits is not None:
        return "train" in splits
    return bool(data.train_file or data.train_dir or data.dataset)


def source_data_config(config: RunConfig) -> DataConfig:
    """The target's data settings with the source's own column names."""
    d = config.domain
    columns = [d.source_text_column] if d.source_text_column else config.data.text_columns
    label = d.source_label_column or config.data.label_column
    return dataclasses.replace(config.data, text_columns=list(columns), label_column=label, label_names=None)


def prepare_domain_data(
    config: RunConfig, task: Any, processor: Any, splits: DatasetDict | None
) -> tuple[PreparedData, DomainData]:
    """The run's data (its train split the source when there is one) and the objective's extra streams."""
    domain = config.domain
    extra = DomainData()
    if domain.source_file:
        data, extra = _with_source(config, task, processor, splits)
    else:
        data = task.prepare_data(config.data, processor, splits)
    if domain.unlabelled_target_file:
        extra.unlabelled = read_unlabelled(domain.unlabelled_target_file, config.data, task, processor, data)
    return data, extra


def _with_source(
    config: RunConfig, task: Any, processor: Any, splits: DatasetDict | None
) -> tuple[PreparedData, DomainData]:
    domain = config.domain
    labelled_target = has_target_train(config.data, splits)
    if domain.separate_heads and not labelled_target:
        raise UserError(
            "domain.separate_heads=true needs labelled target rows (data.train_file) to train the target's head; "
            "without them share the head (domain.separate_heads=false)."
        )
    raw = splits if splits is not None else task.load_splits(config.data, need_train=labelled_target)
    if "validation" not in raw:
        raise DataError("With domain.source_file and no data.train_file, data.validation_file is the target's eval.")
    as_train = raw if labelled_target else DatasetDict({**raw, "train": raw["validation"]})
    target = task.prepare_data(config.data, processor, as_train)
    source_config = source_data_config(config)
    with named("domain.source_file"):
        source_raw = task.read_path(resolve_location(domain.source_file), source_config)
        if domain.max_source_samples is not None and len(source_raw) > domain.max_source_samples:
            source_raw = source_raw.shuffle(seed=0).select(range(domain.max_source_samples))
        source_labels = _source_labels(source_raw, source_config, target.labels, domain.separate_heads)
        source = task.encode_split(source_raw, source_labels, source_config, "source", processor)
    if AUGMENT_COLUMN in target.train.column_names:
        source = source.add_column(AUGMENT_COLUMN, [True] * len(source))
    notes = {**target.notes, "source_rows": len(source)}
    data = PreparedData(source, target.validation, target.test, target.labels, notes=notes, raw=None)
    extra = DomainData(
        target_train=target.train if labelled_target else None,
        source_labels=source_labels if domain.separate_heads else None,
    )
    return data, extra


def _source_labels(raw: Dataset, config: DataConfig, target: LabelMap, separate: bool) -> LabelMap:
    found = LabelMap.discover(raw, config.label_column)
    if separate:
        return found
    if not set(found.raw_values) <= set(target.raw_values):
        raise UserError(
            f"domain.source_file: the source's labels {list(found.raw_values)[:6]} differ from the target's "
            f"{list(target.raw_values)[:6]}; set domain.separate_heads=true to give the source its own head."
        )
    return target


def read_unlabelled(path: str, data: DataConfig, task: Any, processor: Any, prepared: PreparedData) -> Dataset:
    """The unlabelled target pool, encoded for the model (labels, if any, dropped)."""
    key = "domain.unlabelled_target_file"
    with named(key):
        location = resolve_location(path)
        if task.name.startswith("image"):  # a folder of images (class sub-folders or not), or image files
            rows = task.prediction_rows([location], data)[0]
        elif location.endswith(".txt") or not Path(location).is_file():
            rows = task.read_path(location, data)
        else:  # a data file whose label column, if any, is ignored
            from hftransfer.data.files import check_data_file
            from hftransfer.data.sources import _load_files

            check_data_file(location, key)
            rows = _load_files({"pool": location})["pool"]
        rows = rows.remove_columns([c for c in (data.label_column, "labels", "label") if c in rows.column_names])
        if len(rows) == 0:
            raise DataError(f"{location} has no rows; point it at unlabelled target rows.")
        encoded = task.encode_inputs(rows, data, "unlabelled target", processor)
    if AUGMENT_COLUMN in prepared.train.column_names:
        encoded = encoded.add_column(AUGMENT_COLUMN, [True] * len(encoded))
    return encoded
