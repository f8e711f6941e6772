"""Load raw splits from the Hub or local files into one `DatasetDict` (train/validation/test)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset

from hftransfer.config.locations import resolve_location
from hftransfer.config.recipe import DataConfig
from hftransfer.errors import DataError

_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}



def _builder_for(files: dict[str, str]) -> tuple[str, dict]:
    suffixes = {Path(f).suffix.lower() for f in files.values()}
    if len(suffixes) != 1 or next(iter(suffixes)) not in _BUILDERS:
        raise DataError(f"Local data files must share one format among {sorted(_BUILDERS)}, got {sorted(suffixes)}.")
    suffix = suffixes.pop()
    kwargs: dict = {}
    if suffix in (".csv", ".tsv"):
        # Quoting and NA-parsing off: SST-2 has sentences that are literally `null`, `nan` or
        # start with a quote; pandas' defaults would turn them into missing values.
        kwargs = {"keep_default_na": False, "na_filter": False}
        if suffix == ".tsv":
            kwargs.update(sep="\t", quoting=csv.QUOTE_NONE)
    return _BUILDERS[suffix], kwargs


def load_splits(config: DataConfig, *, need_train: bool = True) -> DatasetDict:
    """Return train/validation(/test) splits; hold out part of train when there is no validation."""
    if config.dataset:
        splits = _handle_unlabelled(_load_hub(config), config)
    elif config.train_dir or config.validation_dir or config.test_dir:
        splits = load_image_folders(config)
    else:
        files = _split_paths(config, "file")
        if not files:
            raise DataError("No data given: set data.dataset (a Hub dataset), data.train_file or data.train_dir.")
        splits = _load_checked_files(files, config)
    return complete_splits(splits, config, need_train=need_train)


def complete_splits(splits: DatasetDict, config: DataConfig, *, need_train: bool = True) -> DatasetDict:
    """Loaded (or in-memory) splits made whole: a validation split held out of train when there is none
    (`data.validation_size`, seeded), no empty split, and `data.max_*_samples` applied."""
    splits = DatasetDict(splits)
    if need_train and "train" not in splits:
        raise DataError("No train split: set data.train_file or data.train_split.")
    if "train" in splits and "validation" not in splits:
        held_out = splits["train"].train_test_split(test_size=config.validation_size, seed=0)
        splits["train"], splits["validation"] = held_out["train"], held_out["test"]
    for name, split in splits.items():
        if len(split) == 0:
            raise DataError(f"The {name} split is empty; point data.{name}_file/split at data with rows.")
    return _subsample(splits, config)


def _split_paths(config: DataConfig, kind: str) -> dict[str, str]:
    """The splits' `data.<split>_<kind>` paths that are set (kind: file or dir), resolved."""
    named = {name: getattr(config, f"{name}_{kind}") for name in ("train", "validation", "test")}
    return {name: resolve_location(path) for name, path in named.items() if path}


def load_image_folders(config: DataConfig) -> DatasetDict:
    """`<dir>/<class>/<image>` folders through datasets' imagefolder builder (classes = sorted folder names)."""
    dirs = _split_paths(config, "dir")
    for name, folder in dirs.items():
        if not Path(folder).is_dir():
            raise DataError(f"data.{name}_dir: {folder} is not a folder.")
        if not any(p.is_dir() for p in Path(folder).iterdir()):
            raise DataError(
                f"data.{name}_dir: {folder} has no class sub-folders; lay it out as {folder}/<class>/*.png."
            )
        from hftransfer.data.files import check_class_folders

        check_class_folders(Path(folder), f"data.{name}_dir", need_two=name == "train")
    files = {name: f"{folder}/**" for name, folder in dirs.items()}
    splits = load_dataset("imagefolder", data_files=files)
    for name, split in splits.items():
        if "label" not in split.column_names:
            raise DataError(f"data.{name}_dir: no class sub-folders found; lay it out as <dir>/<class>/*.png.")
    return splits


def _load_checked_files(files: dict[str, str], config: DataConfig, key: str | None = None) -> DatasetDict:
    """Local files, each looked at first (hftransfer.data.files); rows without a label are refused or dropped."""
    from hftransfer.data.files import check_data_file, check_file_labels, check_same_columns

    keys = {name: f"data.{name}_file" if key is None else key for name in files}
    facts = {name: (path, check_data_file(path, keys[name], config.label_column)) for name, path in files.items()}
    check_same_columns(facts, config.label_column)
    if not config.drop_unlabelled:  # reported before datasets reads anything; dropped after it did
        for path, found in facts.values():
            check_file_labels(path, found, config.label_column, recipe=key is None)
    return _handle_unlabelled(_load_files(files), config, facts, recipe=key is None)


def _handle_unlabelled(
    splits: DatasetDict, config: DataConfig, facts: dict | None = None, recipe: bool = True
) -> DatasetDict:
    from hftransfer.data.files import handle_unlabelled

    return handle_unlabelled(splits, config.label_column, config.drop_unlabelled, facts, recipe)


def _load_files(files: dict[str, str]) -> DatasetDict:
    from datasets.exceptions import DatasetGenerationError

    builder, kwargs = _builder_for(files)
    try:
        return load_dataset(builder, data_files=files, **kwargs)
    except DatasetGenerationError as err:  # a problem the file checks did not catch: the cause, in one line
        cause = str(err.__cause__ or err).strip().splitlines() or [type(err).__name__]
        raise DataError(f"Cannot read {', '.join(files.values())}: {cause[0]} Fix the file.") from err
    except ValueError as err:  # datasets refuses a split with no rows before we can look at it
        empty = re.search(r'Instruction "(\w+)" corresponds to no data', str(err))
        if empty:
            name = empty.group(1)
            raise DataError(
                f"The {name} split is empty ({files[name]}); point data.{name}_file at data with rows."
            ) from err
        raise


def _load_hub(config: DataConfig) -> DatasetDict:
    available = load_dataset(config.dataset, config.dataset_config)
    wanted = {"train": config.train_split, "validation": config.validation_split, "test": config.test_split}
    splits = DatasetDict()
    for role, name in wanted.items():
        if name is None:
            continue
        if name in available:
            splits[role] = available[name]
        elif role != "validation":
            raise DataError(
                f"Dataset '{config.dataset}' has no split '{name}' (data.{role}_split); it has {sorted(available)}."
            )
    return splits


def _subsample(splits: DatasetDict, config: DataConfig) -> DatasetDict:
    limits = {"train": config.max_train_samples, "validation": config.max_eval_samples}
    for name, limit in limits.items():
        if limit is not None and name in splits and len(splits[name]) > limit:
            splits[name] = splits[name].shuffle(seed=0).select(range(limit))
    return splits


def single_file_split(path: str, config: DataConfig) -> Dataset:
    """Load one local file as a split (for `hftransfer evaluate --file`)."""
    return _load_checked_files({"eval": resolve_location(path)}, config, key="")["eval"]
