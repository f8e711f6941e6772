"""Data pipeline: label discovery and mapping, text pairs, and early, named errors for bad input."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from hftransfer.config.recipe import DataConfig
from hftransfer.data import DataError, LabelMap, load_splits, prepare_text_data
from tests.conftest import write_tsv


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_integer_labels_in_any_range_map_to_contiguous_ids(tmp_path, tokenizer):
    rows = [{"text": f"row {i}", "stars": 1 + i % 4} for i in range(12)]
    config = DataConfig(
        train_file=jsonl(tmp_path / "t.jsonl", rows),
        validation_file=jsonl(tmp_path / "v.jsonl", rows[:4]),
        text_columns=["text"],
        label_column="stars",
    )
    data = prepare_text_data(config, tokenizer)
    assert data.labels.names == ("1", "2", "3", "4")
    assert data.train["labels"][:4] == [0, 1, 2, 3]
    assert data.validation["labels"] == [0, 1, 2, 3]


def test_string_labels_and_unseen_eval_label(tmp_path, tokenizer):
    train = [{"text": "a", "label": "sports"}, {"text": "b", "label": "world"}]
    config = DataConfig(
        train_file=jsonl(tmp_path / "t.jsonl", train),
        validation_file=jsonl(tmp_path / "v.jsonl", [{"text": "c", "label": "business"}]),
        text_columns=["text"],
    )
    with pytest.raises(DataError, match=r"labels \['business'\] that train does not have"):
        prepare_text_data(config, tokenizer)
    config.validation_file = jsonl(tmp_path / "v2.jsonl", [{"text": "c", "label": "world"}])
    data = prepare_text_data(config, tokenizer)
    assert data.labels.id2label == {0: "sports", 1: "world"}
    assert data.validation["labels"] == [1]


def test_label_names_name_integer_labels_and_reject_out_of_range(tmp_path, tokenizer):
    rows = [{"text": "x", "label": i % 3} for i in range(6)]
    config = DataConfig(train_file=jsonl(tmp_path / "t.jsonl", rows), text_columns=["text"], label_names=["neg", "pos"])
    with pytest.raises(DataError, match=r"out of range .*labels must be 0..1"):
        prepare_text_data(config, tokenizer)


def test_sentence_pairs_are_encoded_as_pairs(tmp_path, tokenizer):
    rows = [{"premise": "a cat sat", "hypothesis": "an animal sat", "label": i % 2} for i in range(4)]
    config = DataConfig(
        train_file=jsonl(tmp_path / "t.jsonl", rows),
        validation_file=jsonl(tmp_path / "v.jsonl", rows),
        text_columns=["premise", "hypothesis"],
    )
    row = prepare_text_data(config, tokenizer).train[0]
    assert set(row["token_type_ids"]) == {0, 1}  # second segment present
    assert row["input_ids"].count(tokenizer.sep_token_id) == 2


def test_joined_columns_are_one_segment(tmp_path, tokenizer):
    rows = [{"title": "big news", "body": "markets rose", "label": i % 2} for i in range(4)]
    config = DataConfig(
        train_file=jsonl(tmp_path / "t.jsonl", rows),
        validation_file=jsonl(tmp_path / "v.jsonl", rows),
        text_columns=["title", "body"],
        join_text_columns_with=". ",
    )
    row = prepare_text_data(config, tokenizer).train[0]
    assert set(row["token_type_ids"]) == {0}
    assert tokenizer.decode(row["input_ids"], skip_special_tokens=True) == "big news. markets rose"


def test_tsv_keeps_literal_null_and_nan_sentences(tmp_path, tokenizer):
    path = write_tsv(tmp_path / "t.tsv", ["sentence", "label"], [["null", 0], ["nan", 1], ['"quoted', 0]])
    splits = load_splits(DataConfig(train_file=str(path), validation_file=str(path)))
    assert splits["train"]["sentence"] == ["null", "nan", '"quoted']


def test_missing_text_column_names_the_columns_and_key(tmp_path, tokenizer):
    path = write_tsv(tmp_path / "t.tsv", ["text", "label"], [["a", 0], ["b", 1]])
    config = DataConfig(train_file=str(path), validation_file=str(path))
    with pytest.raises(DataError, match=r"no column \['sentence'\].*data.text_columns"):
        prepare_text_data(config, tokenizer)


def test_missing_label_column(tmp_path, tokenizer):
    path = write_tsv(tmp_path / "t.tsv", ["sentence", "y"], [["a", 0], ["b", 1]])
    with pytest.raises(DataError, match=r"data.label_column"):
        prepare_text_data(DataConfig(train_file=str(path), validation_file=str(path)), tokenizer)


def test_non_text_column_is_rejected(tmp_path, tokenizer):
    rows = [{"sentence": 3, "label": 0}, {"sentence": 4, "label": 1}]
    path = jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(DataError, match="not text"):
        prepare_text_data(DataConfig(train_file=path, validation_file=path), tokenizer)


def test_empty_split_is_rejected(tmp_path, tokenizer):
    train = write_tsv(tmp_path / "t.tsv", ["sentence", "label"], [["a", 0], ["b", 1]])
    empty = write_tsv(tmp_path / "v.tsv", ["sentence", "label"], [])
    with pytest.raises(DataError, match="validation split is empty"):
        load_splits(DataConfig(train_file=str(train), validation_file=str(empty)))


def test_negative_labels_are_rejected_as_unlabelled(tmp_path, tokenizer):
    path = write_tsv(tmp_path / "t.tsv", ["sentence", "label"], [["a", -1], ["b", 1]])
    with pytest.raises(DataError, match="unlabelled"):
        prepare_text_data(DataConfig(train_file=str(path), validation_file=str(path)), tokenizer)


def test_float_labels_are_rejected(tmp_path, tokenizer):
    path = jsonl(tmp_path / "t.jsonl", [{"sentence": "a", "label": 0.5}, {"sentence": "b", "label": 1.5}])
    with pytest.raises(DataError, match="regression"):
        prepare_text_data(DataConfig(train_file=path, validation_file=path), tokenizer)


def test_validation_is_held_out_from_train_when_missing(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", ["sentence", "label"], [[f"s{i}", i % 2] for i in range(40)])
    splits = load_splits(DataConfig(train_file=str(path), validation_size=0.25))
    assert (len(splits["train"]), len(splits["validation"])) == (30, 10)
    assert not set(splits["train"]["sentence"]) & set(splits["validation"]["sentence"])


def test_train_subsampling(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", ["sentence", "label"], [[f"s{i}", i % 2] for i in range(40)])
    splits = load_splits(DataConfig(train_file=str(path), validation_file=str(path), max_train_samples=8))
    assert len(splits["train"]) == 8


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_splits(DataConfig(train_file=str(tmp_path / "nope.tsv")))


def test_label_map_round_trip_from_model_config():
    labels = LabelMap.from_model_config({"1": "pos", "0": "neg"})
    assert labels.names == ("neg", "pos")
    assert labels.label2id == {"neg": 0, "pos": 1}
