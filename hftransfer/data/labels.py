"""Discover the label set from training data and apply it identically to every split."""

from __future__ import annotations

from dataclasses import dataclass

from datasets import ClassLabel, Dataset, Value

from hftransfer.data.sources import DataError


@dataclass(frozen=True)
class LabelMap:
    """Class names in id order; the single source of `id2label`/`label2id`."""

    names: tuple[str, ...]
    raw_values: tuple  # the label values as they appear in the data, in id order

    @property
    def num_labels(self) -> int:
        return len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    @classmethod
    def from_model_config(cls, id2label: dict) -> LabelMap:
        by_id = {int(k): v for k, v in id2label.items()}  # JSON round trips turn int keys into strings
        names = tuple(by_id[i] for i in sorted(by_id))
        return cls(names=names, raw_values=names)

    @classmethod
    def discover(cls, train: Dataset, column: str, label_names: list[str] | None = None) -> LabelMap:
        require_columns(train, [column], "train", "data.label_column")
        feature = train.features[column]
        if isinstance(feature, ClassLabel):
            names = tuple(label_names or feature.names)
            if len(names) != feature.num_classes:
                raise DataError(
                    f"data.label_names has {len(names)} names but '{column}' has {feature.num_classes} classes."
                )
            return cls(names=names, raw_values=tuple(range(feature.num_classes)))
        values = _label_values(train, column, "train")
        if all(isinstance(v, str) for v in values):
            if label_names:
                raise DataError("data.label_names names integer labels; this label column holds strings.")
            ordered = tuple(sorted(values))
            return cls(names=ordered, raw_values=ordered)
        ordered = tuple(sorted(values))
        if label_names is not None:
            out_of_range = [v for v in ordered if not 0 <= v < len(label_names)]
            if out_of_range:
                raise DataError(
                    f"Label values {out_of_range[:5]} are out of range for data.label_names "
                    f"({len(label_names)} names, so labels must be 0..{len(label_names) - 1})."
                )
            return cls(names=tuple(label_names), raw_values=tuple(range(len(label_names))))
        return cls(names=tuple(str(v) for v in ordered), raw_values=ordered)

    def encode(self, split: Dataset, column: str, split_name: str) -> Dataset:
        """Replace the label column by integer ids in a `labels` column, rejecting unseen labels."""
        require_columns(split, [column], split_name, "data.label_column")
        if isinstance(split.features[column], ClassLabel):
            feature = split.features[column]
            if feature.num_classes != self.num_labels:
                raise DataError(f"The {split_name} split's classes {feature.names} differ from train's.")
            values = set(split.unique(column))
            to_id = {v: v for v in range(feature.num_classes)}
        else:
            values = set(_label_values(split, column, split_name))
            to_id = {raw: i for i, raw in enumerate(self.raw_values)}
        unseen = sorted(values - set(to_id), key=str)
        if unseen:
            raise DataError(
                f"The {split_name} split has labels {unseen[:5]} that train does not have "
                f"(train's labels: {list(self.raw_values)}). Fix the data or the label column."
            )
        labels = [to_id[v] for v in split[column]]
        return split.remove_columns(column).add_column("labels", labels).cast_column("labels", Value("int64"))


def require_columns(split: Dataset, columns: list[str], split_name: str, key: str) -> None:
    missing = [c for c in columns if c not in split.column_names]
    if missing:
        raise DataError(
            f"The {split_name} split has no column {missing}; it has {split.column_names}. Set {key} to the right name."
        )


def _label_values(split: Dataset, column: str, split_name: str) -> list:
    if split.data.column(column).null_count:
        raise DataError(f"The {split_name} split has rows with no label in '{column}'; drop or fill them.")
    values = split.unique(column)
    if all(isinstance(v, bool) for v in values):
        return [int(v) for v in values]
    if all(isinstance(v, int) for v in values) or all(isinstance(v, str) for v in values):
        if any(isinstance(v, int) and v < 0 for v in values):
            raise DataError(
                f"The {split_name} split has negative labels {sorted(v for v in values if v < 0)} in '{column}': "
                "unlabelled rows (GLUE test splits use -1) cannot be trained or scored."
            )
        return values
    kinds = sorted({type(v).__name__ for v in values})
    raise DataError(
        f"Labels in '{column}' ({split_name}) must be integers or strings, got {kinds}. "
        "Float labels would mean regression; convert them to class ids or names."
    )


def require_two_classes(labels: LabelMap, where: str) -> LabelMap:
    """The one check that a label set can be learned from: at least two classes."""
    if labels.num_labels < 2:
        raise DataError(f"{where} has a single class {list(labels.names)}; classification needs at least two.")
    return labels
