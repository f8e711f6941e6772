"""Image inputs: image-folder and listing sources, up-front checks, and decoding/augmentation in the collator.

Rows stay light (`image` = `{"path", "bytes"}` reference + `labels`); pixels are made per batch by
`ImageCollator`, which runs inside DataLoader workers. The collator (not `datasets.set_transform`) does
it because a format transform runs on every row whenever a column is read (`dataset["labels"]` would
decode every image) and drops columns added later (cached teacher logits). Train rows carry an
`augment` flag, so the one collator the loops share augments train batches and never eval ones.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from datasets import Image as ImageFeature
from PIL import Image, ImageOps, UnidentifiedImageError

from hftransfer.config.locations import resolve_location
from hftransfer.config.recipe import DataConfig, ImageDataConfig
from hftransfer.data.labels import LabelMap, require_columns, require_two_classes
from hftransfer.data.prepared import AUGMENT_COLUMN, PreparedData
from hftransfer.data.sources import DataError, load_splits, single_file_split

logger = logging.getLogger("hftransfer")

IMAGE_COLUMN = "image"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_NOT_INPUTS = {IMAGE_COLUMN, AUGMENT_COLUMN, "length"}


# --- sources ---------------------------------------------------------------------------------------------------


def _listing_folders(config: DataConfig) -> dict[str, Path | None]:
    """Folder that relative image paths in each split's csv/jsonl listing are resolved against."""

    def parent(path: str | None) -> Path | None:
        return Path(resolve_location(path)).parent if path else None

    train = parent(config.train_file)
    return {"train": train, "validation": parent(config.validation_file) or train, "test": parent(config.test_file)}


def load_image_splits(config: DataConfig, *, need_train: bool = True) -> DatasetDict:
    """Raw splits (Hub, image folders, or csv/jsonl listings) whose image column holds absolute references."""
    splits = load_splits(config, need_train=need_train)
    folders = _listing_folders(config) if not (config.dataset or config.train_dir) else {}
    return DatasetDict(
        {name: as_image_refs(split, config.images, folders.get(name), name) for name, split in splits.items()}
    )


def load_image_file(path: str, config: DataConfig) -> Dataset:
    """One csv/jsonl listing as a split (`hftransfer evaluate --file`), paths relative to its folder."""
    return as_image_refs(single_file_split(path, config), config.images, Path(resolve_location(path)).parent, path)


def find_image_column(split: Dataset, config: ImageDataConfig, split_name: str) -> str:
    if config.column:
        require_columns(split, [config.column], split_name, "data.images.column")
        return config.column
    typed = [name for name, feature in split.features.items() if isinstance(feature, ImageFeature)]
    if len(typed) == 1:
        return typed[0]
    if IMAGE_COLUMN in split.column_names:
        return IMAGE_COLUMN
    raise DataError(
        f"Cannot tell which column of the {split_name} split holds the images ({split.column_names}); "
        "set data.images.column."
    )


def as_image_refs(split: Dataset, config: ImageDataConfig, folder: Path | None, split_name: str) -> Dataset:
    """The image column as undecoded `{"path", "bytes"}` references named `image`; relative paths made absolute."""
    column = find_image_column(split, config, split_name)
    feature = split.features[column]
    if not isinstance(feature, ImageFeature):
        if getattr(feature, "dtype", None) not in ("string", "large_string"):
            raise DataError(
                f"Column '{column}' ({split_name}) holds {feature}, not images or image paths; set data.images.column."
            )
        if split.data.column(column).null_count:
            raise DataError(f"Column '{column}' ({split_name}) has rows without an image path; drop or fill them.")
        base = folder or Path.cwd()
        split = split.map(
            lambda batch: {column: [str(base / p) if not Path(p).is_absolute() else p for p in batch[column]]},
            batched=True,
            desc=f"Resolving {split_name} image paths",
        )
    split = split.cast_column(column, ImageFeature(decode=False))
    if column != IMAGE_COLUMN:
        if IMAGE_COLUMN in split.column_names:
            split = split.remove_columns(IMAGE_COLUMN)
        split = split.rename_column(column, IMAGE_COLUMN)
    return split


# --- checks ----------------------------------------------------------------------------------------------------


def describe(ref: dict) -> str:
    return ref.get("path") or "<embedded image bytes>"


def open_image(ref: dict) -> Image.Image:
    """Open (lazily) the image a `{"path", "bytes"}` reference points at; the error names the path."""
    try:
        if ref.get("bytes"):
            return Image.open(io.BytesIO(ref["bytes"]))
        return Image.open(ref["path"])
    except FileNotFoundError as err:
        raise DataError(f"Image {describe(ref)} does not exist.") from err
    except (UnidentifiedImageError, OSError, ValueError, TypeError) as err:
        raise DataError(f"Image {describe(ref)} cannot be read: {err}") from err


def _problem(ref: dict) -> str | None:
    try:
        with open_image(ref) as image:
            image.verify()  # reads the whole file and checks its structure, without decoding pixels
    except DataError as err:
        return str(err)
    except Exception as err:  # PIL raises SyntaxError and friends for broken files
        return f"Image {describe(ref)} cannot be read: {err}"
    return None


def check_images(split: Dataset, split_name: str, on_bad_image: str = "error") -> tuple[Dataset, list[str]]:
    """Open every image once before training; stop naming the bad ones, or drop them (`skip`) and list them."""
    refs = split.select_columns([IMAGE_COLUMN]).with_format(None)[IMAGE_COLUMN]
    with ThreadPoolExecutor(max_workers=8) as pool:  # file reads overlap; verify() is cheap
        problems = list(pool.map(_problem, refs))
    bad = [i for i, problem in enumerate(problems) if problem]
    if not bad:
        return split, []
    messages = [problems[i] for i in bad]
    if on_bad_image == "error":
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise DataError(
            f"{len(bad)} unreadable image(s) in the {split_name} split: {'; '.join(messages[:3])}{more}. "
            "Fix or remove them, or set data.images.on_bad_image=skip to drop them."
        )
    skipped = [describe(refs[i]) for i in bad]
    logger.warning("Skipping %d unreadable image(s) in the %s split: %s", len(bad), split_name, skipped[:5])
    keep = sorted(set(range(len(split))) - set(bad))
    if not keep:
        raise DataError(f"Every image of the {split_name} split is unreadable: {messages[:3]}.")
    return split.select(keep), skipped


# --- pixels ----------------------------------------------------------------------------------------------------


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (grayscale, 16-bit, palette, RGBA, CMYK) as 8-bit RGB, EXIF rotation applied."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16/32-bit grayscale: rescale instead of clipping
        array = np.asarray(image, dtype=np.float32)
        top = float(array.max()) or 1.0
        image = Image.fromarray((array * (255.0 / top)).clip(0, 255).astype(np.uint8))
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def decode(ref: dict) -> Image.Image:
    image = open_image(ref)
    try:
        image.load()
        return to_rgb(image)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"Image {describe(ref)} cannot be decoded: {err}") from err


def random_resized_crop_box(
    width: int, height: int, scale: Sequence[float], ratio: Sequence[float], generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a crop covering `scale` of the area at aspect `ratio` (torchvision's rule)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=generator))
        aspect = math.exp(float(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return left, top, left + w, top + h
    in_ratio = width / height  # fall back to a central crop at the nearest allowed aspect ratio
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


class ImageTransforms:
    """Eval: exactly the checkpoint's image processor. Train: random resized crop + flip to the same size,
    then the processor's own rescale and normalization."""

    def __init__(self, processor: Any, config: ImageDataConfig | None = None) -> None:
        self.processor = processor
        self.config = config or ImageDataConfig()
        probe = processor(images=[Image.new("RGB", (97, 97))], return_tensors="np")["pixel_values"]
        self.size = (int(probe.shape[-2]), int(probe.shape[-1]))  # (height, width) the model sees
        self.scale = (
            float(getattr(processor, "rescale_factor", 1 / 255)) if getattr(processor, "do_rescale", True) else 1.0
        )
        normalize = getattr(processor, "do_normalize", False)
        self.mean = np.asarray(processor.image_mean if normalize else [0.0] * 3, dtype=np.float32)
        self.std = np.asarray(processor.image_std if normalize else [1.0] * 3, dtype=np.float32)

    def eval(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.as_tensor(np.asarray(self.processor(images=images, return_tensors="np")["pixel_values"]))

    def augment(self, image: Image.Image) -> Image.Image:
        box = random_resized_crop_box(*image.size, self.config.crop_scale, self.config.crop_ratio)
        height, width = self.size
        image = image.resize((width, height), resample=Image.Resampling.BILINEAR, box=box)
        if self.config.hflip and torch.rand(1).item() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image

    def train(self, images: list[Image.Image]) -> torch.Tensor:
        arrays = np.stack([np.asarray(self.augment(image), dtype=np.float32) for image in images])
        pixels = (arrays * self.scale - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))


class ImageCollator:
    """Decode a batch of references into `pixel_values` (augmented for rows flagged `augment`), plus labels and
    any per-row vectors (cached teacher logits) stacked as they are."""

    def __init__(self, processor: Any, config: ImageDataConfig | None = None) -> None:
        self.transforms = ImageTransforms(processor, config)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = [decode(f[IMAGE_COLUMN]) for f in features]
        augment = bool(features) and bool(features[0].get(AUGMENT_COLUMN)) and self.transforms.config.augment
        batch = {"pixel_values": self.transforms.train(images) if augment else self.transforms.eval(images)}
        for key in features[0] if features else []:
            if key not in _NOT_INPUTS:
                batch[key] = torch.as_tensor([f[key] for f in features])
        return batch


# --- pipeline --------------------------------------------------------------------------------------------------


def encode_image_split(split: Dataset, labels: LabelMap, config: DataConfig, name: str) -> tuple[Dataset, list[str]]:
    """Label ids, an `image` reference column, and every image checked; returns (split, skipped paths)."""
    split = labels.encode(split, config.label_column, name)
    split = split.select_columns([IMAGE_COLUMN, "labels"])
    return check_images(split, name, config.images.on_bad_image)


def prepare_image_data(config: DataConfig, processor: Any, raw: DatasetDict | None = None) -> PreparedData:
    """Load (unless `raw` splits of image references are given), label and check every split; flag train rows
    for augmentation. Errors surface before training."""
    splits = load_image_splits(config) if raw is None else raw
    labels = require_two_classes(LabelMap.discover(splits["train"], config.label_column, config.label_names), "Train")
    encoded, skipped = {}, {}
    for name, split in splits.items():
        encoded[name], skipped[name] = encode_image_split(split, labels, config, name)
    counts = np.bincount(np.asarray(encoded["train"]["labels"]), minlength=labels.num_labels)
    empty = [labels.names[i] for i in np.flatnonzero(counts == 0)]
    if empty and config.train_dir:  # a class folder only validation has; Hub label sets may legitimately miss some
        raise DataError(f"Classes {empty} have no training images; add some or remove those class folders.")
    train = encoded["train"]
    if config.images.augment:
        train = train.add_column(AUGMENT_COLUMN, [True] * len(train))
    notes = {"skipped_images": {k: v for k, v in skipped.items() if v}} if any(skipped.values()) else {}
    return PreparedData(train, encoded["validation"], encoded.get("test"), labels, notes=notes, raw=splits)


def expand_image_paths(inputs: Iterable[str]) -> list[str]:
    """Image files as given, and the image files inside given folders (recursively, sorted)."""
    paths: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DataError(f"Folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
            paths.extend(str(p) for p in found)
        else:
            paths.append(str(path))
    return paths


def image_refs(paths: Sequence[str]) -> Dataset:
    """Unlabelled image references (for `predict`), not yet checked."""
    return Dataset.from_dict({IMAGE_COLUMN: list(paths)}).cast_column(IMAGE_COLUMN, ImageFeature(decode=False))


def made_up_images() -> list[dict]:
    """In-memory PNGs of different sizes and modes (undecoded references, like a dataset's image column)."""
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
