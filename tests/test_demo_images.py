"""The offline digits demo's data: fixed source split, per-seed target draws with disjoint train/validation images."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "digits_transfer.py"
_spec = importlib.util.spec_from_file_location("digits_transfer", _SCRIPT)
digits_transfer = importlib.util.module_from_spec(_spec)
sys.modules["digits_transfer"] = digits_transfer
_spec.loader.exec_module(digits_transfer)
TARGET_DIGITS, summarize = digits_transfer.TARGET_DIGITS, digits_transfer.summarize
write_split = digits_transfer.write_split


def _digests(folder: Path) -> set[tuple[str, str]]:
    return {(p.parent.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in folder.rglob("*.png")}


def test_target_draws_depend_on_the_seed_and_never_share_images_between_splits(tmp_path):
    counts = [write_split(tmp_path / f"s{seed}", TARGET_DIGITS, 3, size=16, seed=seed) for seed in (0, 1)]
    assert counts[0]["train"] == counts[1]["train"] == 3 * len(TARGET_DIGITS)
    assert counts[0]["val"] == counts[1]["val"] > 100 * len(TARGET_DIGITS)  # every other image of 5-9 validates
    assert sorted(p.name for p in (tmp_path / "s0" / "train").iterdir()) == [str(d) for d in TARGET_DIGITS]
    train = [_digests(tmp_path / f"s{seed}" / "train") for seed in (0, 1)]
    assert train[0] != train[1]
    assert not train[0] & _digests(tmp_path / "s0" / "val")
    again = write_split(tmp_path / "again", TARGET_DIGITS, 3, size=16, seed=0)
    assert again == counts[0] and _digests(tmp_path / "again" / "train") == train[0]


def test_summary_reports_mean_and_sample_spread():
    stats = summarize({"a": [0.9, 0.8, 1.0], "b": [0.5]})
    assert stats["a"]["mean"] == pytest.approx(0.9) and stats["a"]["sd"] == pytest.approx(0.1)
    assert stats["b"] == {"mean": 0.5, "sd": None, "per_seed": [0.5]}  # no spread from one seed
