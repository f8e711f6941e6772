"""Data: raw splits (Hub, local files, image folders) -> label ids -> model-ready rows -> batches.

`sources` loads raw splits, `labels` maps label values to ids, `text` and `images` encode rows and collate
batches, `sampling` and `loaders` batch them for the loops; `PreparedData` is what training receives.
"""

from hftransfer.data.labels import LabelMap
from hftransfer.data.prepared import PreparedData
from hftransfer.data.sources import DataError, load_splits
from hftransfer.data.text import DynamicPaddingCollator, encode_texts, prepare_text_data, tokenize_split

__all__ = [
    "DataError",
    "DynamicPaddingCollator",
    "LabelMap",
    "PreparedData",
    "encode_texts",
    "load_splits",
    "prepare_text_data",
    "tokenize_split",
]
