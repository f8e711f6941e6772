"""Image classification: real image files of mixed sizes and modes, tiny ResNets, every strategy through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import ResNetConfig, ResNetForImageClassification, ResNetModel
from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

from hftransfer.artifacts.saved import load_run
from hftransfer.cli import main
from hftransfer.config.recipe import ImageDataConfig, load_config
from hftransfer.data.images import ImageCollator, decode, load_image_file, prepare_image_data, to_rgb
from hftransfer.data.labels import LabelMap
from hftransfer.data.sources import DataError
from hftransfer.models.images import load_image_classifier, load_image_processor
from hftransfer.strategies import build_strategy
from hftransfer.strategies.distill.teachers import TeacherError, load_teacher

CLASSES = ("blue", "green", "red")  # the colour that dominates the image; folder names are sorted on purpose
CHANNEL = {"red": 0, "green": 1, "blue": 2}


def save_tiny_resnet(folder: Path, num_labels: int = 3, hidden_sizes=(8, 16), depths=(1, 1)) -> Path:
    config = ResNetConfig(
        embedding_size=8,
        hidden_sizes=list(hidden_sizes),
        depths=list(depths),
        layer_type="basic",
        num_labels=num_labels,
    )
    torch.manual_seed(0)
    ResNetForImageClassification(config).save_pretrained(folder)
    ConvNextImageProcessorPil(
        size={"shortest_edge": 32}, crop_pct=1.0, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(folder)
    return folder


def colour_image(rng: np.random.Generator, colour: str) -> Image.Image:
    height, width = (int(v) for v in rng.integers(20, 56, 2))  # mixed sizes and aspect ratios
    array = rng.integers(0, 90, (height, width, 3)).astype(np.uint8)
    array[..., CHANNEL[colour]] += 150
    return Image.fromarray(array)


def write_image(image: Image.Image, path: Path, variant: int) -> Path:
    """Cycle through file formats and modes: PNG RGB/RGBA/palette/grayscale, JPEG RGB/CMYK."""
    kinds = [("png", "RGB"), ("jpg", "RGB"), ("png", "RGBA"), ("png", "P"), ("jpg", "CMYK"), ("png", "L")]
    suffix, mode = kinds[variant % len(kinds)]
    path = path.with_suffix("." + suffix)
    image.convert(mode).save(path)
    return path


def write_folder(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for colour in CLASSES:
        (root / colour).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            write_image(colour_image(rng, colour), root / colour / f"{i}", variant=i if i % 6 != 5 else 0)
    return root


def image_paths(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def tiny_resnet(tmp_path_factory) -> Path:
    return save_tiny_resnet(tmp_path_factory.mktemp("tiny-resnet"))


@pytest.fixture(scope="module")
def image_dirs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("images")
    return write_folder(root / "train", 8, seed=0), write_folder(root / "val", 3, seed=1)


def train_args(model: Path, train: Path, val: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        f"model.name_or_path={model}",
        f"data.train_dir={train}",
        f"data.validation_dir={val}",
        f"train.output_dir={out}",
        "train.epochs=3",
        "train.batch_size=8",
        "train.learning_rate=1e-2",
        "train.warmup_ratio=0",
        "train.logging_steps=1",
        *extra,
    ]


@pytest.fixture(scope="module")
def full_run(tiny_resnet, image_dirs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "full"
    assert main(train_args(tiny_resnet, *image_dirs, out)) == 0
    return out


# --- data ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "RGB"])
def test_every_mode_becomes_rgb(mode):
    rng = np.random.default_rng(0)
    image = colour_image(rng, "red")
    if mode == "I;16":
        converted = Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 200)
    else:
        converted = image.convert(mode)
    rgb = to_rgb(converted)
    assert rgb.mode == "RGB" and rgb.size == image.size
    if mode == "I;16":  # 16-bit grayscale is rescaled, not clipped to white
        assert 0 < np.asarray(rgb).mean() < 250


def test_eval_transform_is_deterministic_and_train_augments(tiny_resnet, image_dirs):
    processor = load_image_processor(load_config(None, [f"model.name_or_path={tiny_resnet}"]).model)
    files = sorted(p for p in image_dirs[0].rglob("*") if p.is_file())[:6]
    features = [{"image": {"path": str(p), "bytes": None}, "labels": 0} for p in files]
    collator = ImageCollator(processor)
    first, second = collator(features), collator(features)
    assert first["pixel_values"].shape == (6, 3, 32, 32)  # mixed sizes in, the model's size out
    assert torch.equal(first["pixel_values"], second["pixel_values"])
    augmented = [dict(f, augment=True) for f in features]
    torch.manual_seed(0)
    a = collator(augmented)["pixel_values"]
    b = collator(augmented)["pixel_values"]
    assert a.shape == first["pixel_values"].shape and not torch.equal(a, b)


def test_train_path_normalizes_like_the_processor(tiny_resnet, tmp_path):
    """With the randomness pinned (whole image, no flip), augmentation output equals the processor's."""
    processor = load_image_processor(load_config(None, [f"model.name_or_path={tiny_resnet}"]).model)
    path = tmp_path / "x.png"
    colour_image(np.random.default_rng(3), "green").resize((32, 32)).save(path)
    pinned = ImageCollator(processor, ImageDataConfig(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], hflip=False))
    feature = {"image": {"path": str(path), "bytes": None}, "labels": 1}
    trained = pinned([dict(feature, augment=True)])["pixel_values"]
    evaluated = pinned([feature])["pixel_values"]
    assert torch.allclose(trained, evaluated, atol=1e-5)


def test_folder_labels_are_sorted_names_and_stable(tiny_resnet, image_dirs):
    config = load_config(None, [f"data.train_dir={image_dirs[0]}", f"data.validation_dir={image_dirs[1]}"])
    processor = load_image_processor(load_config(None, [f"model.name_or_path={tiny_resnet}"]).model)
    first, second = prepare_image_data(config.data, processor), prepare_image_data(config.data, processor)
    assert first.labels.names == CLASSES == second.labels.names
    assert list(first.train["labels"]) == list(second.train["labels"])
    paths = [ref["path"] for ref in first.train["image"]]
    assert all(Path(p).parent.name == CLASSES[y] for p, y in zip(paths, first.train["labels"], strict=True))
    assert "augment" in first.train.column_names and "augment" not in first.validation.column_names


def test_csv_and_jsonl_listings_with_relative_paths(tiny_resnet, image_dirs, tmp_path):
    train_dir, val_dir = image_dirs
    listing = tmp_path / "lists"
    shutil.copytree(train_dir, listing / "imgs")
    rows = [(str(p.relative_to(listing)), p.parent.name) for p in sorted((listing / "imgs").rglob("*.*"))]
    (listing / "train.csv").write_text("path,label\n" + "".join(f"{p},{y}\n" for p, y in rows))
    (listing / "val.jsonl").write_text(  # absolute paths, read as an extra labelled file (`evaluate --file`)
        "".join(json.dumps({"path": str(p), "label": p.parent.name}) + "\n" for p in sorted(val_dir.rglob("*.*")))
    )
    config = load_config(None, [f"data.train_file={listing / 'train.csv'}", "data.images.column=path"])
    data = prepare_image_data(
        config.data, load_image_processor(load_config(None, [f"model.name_or_path={tiny_resnet}"]).model)
    )
    assert data.labels.names == CLASSES and len(data.train) + len(data.validation) == len(rows)  # 10% held out
    assert all(Path(ref["path"]).is_absolute() for ref in data.train["image"])
    assert decode(data.train[0]["image"]).mode == "RGB"
    extra = load_image_file(str(listing / "val.jsonl"), config.data)
    assert len(extra) == len(list(val_dir.rglob("*.*"))) and all(Path(r["path"]).is_file() for r in extra["image"])


def test_corrupt_and_missing_images_fail_with_their_path(tiny_resnet, image_dirs, tmp_path):
    train = tmp_path / "train"
    shutil.copytree(image_dirs[0], train)
    bad = train / "red" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    config = load_config(None, [f"data.train_dir={train}", f"data.validation_dir={image_dirs[1]}"])
    processor = load_image_processor(load_config(None, [f"model.name_or_path={tiny_resnet}"]).model)
    with pytest.raises(DataError, match=r"broken\.png.*on_bad_image=skip"):
        prepare_image_data(config.data, processor)
    listing = tmp_path / "train.csv"
    present = "".join(f"{next(train.glob(f'{c}/0.*'))},{c}\n" for c in CLASSES)
    listing.write_text("image,label\nnowhere/missing.png,red\n" + present)
    config = load_config(None, [f"data.train_file={listing}", f"data.validation_file={listing}"])
    with pytest.raises(DataError, match=r"nowhere/missing\.png does not exist"):
        prepare_image_data(config.data, processor)


# --- strategies end to end -------------------------------------------------------------------------------------


def test_full_run_learns_saves_labels_and_predicts(full_run, image_dirs, capsys):
    results = json.loads((full_run / "results.json").read_text())
    assert results["task"] == "image-classification"  # inferred from the ResNet checkpoint (task: auto)
    assert results["labels"] == list(CLASSES)
    assert results["eval"]["accuracy"] >= 0.8  # chance is 1/3
    assert json.loads((full_run / "labels.json").read_text())["names"] == list(CLASSES)
    assert (full_run / "preprocessor_config.json").is_file()

    capsys.readouterr()
    val = image_dirs[1]
    assert main(["predict", str(full_run), str(val / "red"), str(next((val / "blue").iterdir()))]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == len(list((val / "red").iterdir())) + 1
    assert all(set(r["scores"]) == set(CLASSES) for r in records)
    assert sum(r["label"] == Path(r["image"]).parent.name for r in records) >= len(records) - 1

    assert main(["evaluate", str(full_run)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(results["eval"]["accuracy"])


def test_head_only_keeps_backbone_and_batch_norm_bit_identical(tiny_resnet, image_dirs, tmp_path):
    """Frozen stages stay in eval mode, so even BN running statistics do not move; a corrupt file is skipped."""
    train = tmp_path / "train"
    shutil.copytree(image_dirs[0], train)
    (train / "green" / "broken.jpg").write_bytes(b"garbage")
    out = tmp_path / "frozen"
    args = train_args(tiny_resnet, train, image_dirs[1], out, "strategy.name=frozen", "strategy.frozen.mode=head_only")
    assert main([*args, "data.images.on_bad_image=skip"]) == 0
    before, after = load_file(tiny_resnet / "model.safetensors"), load_file(out / "model.safetensors")
    backbone = [k for k in before if not k.startswith("classifier")]
    assert any("running_mean" in k for k in backbone)
    assert all(torch.equal(before[k], after[k]) for k in backbone)
    assert not torch.equal(before["classifier.1.weight"], after["classifier.1.weight"])
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["skipped_images"]["train"] == [str(train / "green" / "broken.jpg")]


def test_lora_adapter_trains_only_adapters_and_reloads_identically(tiny_resnet, image_dirs, tmp_path):
    config = load_config(None, [f"model.name_or_path={tiny_resnet}", "strategy.name=lora"])
    model = build_strategy(config.strategy).prepare(load_image_classifier(config.model, LabelMap(CLASSES, CLASSES)))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in trainable)
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert any("normalization" in n for n in trainable) and any("classifier" in n for n in trainable)

    out = tmp_path / "lora"
    args = train_args(tiny_resnet, *image_dirs, out, "strategy.name=lora", "strategy.lora.r=4", "train.loop=accelerate")
    assert main(args) == 0
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    run = load_run(out)
    results = json.loads((out / "results.json").read_text())
    from hftransfer.evaluation.inference import dataset_logits
    from hftransfer.models.tasks import get_task

    task = get_task("image-classification")
    raw = task.load_splits(run.config.data)["validation"]
    rows = task.encode_split(raw, run.labels, run.config.data, "validation", run.tokenizer)
    collator = task.collator(run.tokenizer, run.config.data)
    logits = dataset_logits(run.model, rows, collator)
    again = dataset_logits(load_run(out).model, rows, collator)
    np.testing.assert_array_equal(logits, again)
    accuracy = float((logits.argmax(-1) == np.asarray(rows["labels"])).mean())
    assert accuracy == pytest.approx(results["eval"]["accuracy"])  # reload predicts as the trained model did

    bare = tmp_path / "bare-adapter"  # the adapter and labels without the recipe: the base names the modality
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("config.yaml"))
    teacher = load_teacher(str(bare))
    np.testing.assert_allclose(dataset_logits(teacher.model, rows, collator), logits, atol=1e-5)


def save_plain_copy(run: Path, folder: Path) -> Path:
    """The run's classifier and processor through `save_pretrained` only: no recipe, no labels.json."""
    ResNetForImageClassification.from_pretrained(run).save_pretrained(folder)
    ConvNextImageProcessorPil.from_pretrained(run).save_pretrained(folder)
    return folder


def test_image_teacher_from_a_plain_folder_loads_as_an_image_classifier(full_run, image_dirs, tmp_path):
    plain = save_plain_copy(full_run, tmp_path / "plain")
    teacher = load_teacher(str(plain))
    assert type(teacher.model).__name__ == "ResNetForImageClassification"
    assert teacher.labels.names == CLASSES and hasattr(teacher.tokenizer, "image_mean")
    assert not any(p.requires_grad for p in teacher.model.parameters())
    pixels = ImageCollator(teacher.tokenizer)(
        [{"image": {"path": str(p), "bytes": None}} for p in image_paths(image_dirs[1])]
    )
    expected = load_run(full_run).model(**pixels).logits
    torch.testing.assert_close(teacher.model(**pixels).logits, expected)

    headless = tmp_path / "headless"
    ResNetModel(ResNetConfig.from_pretrained(plain)).save_pretrained(headless)
    with pytest.raises(TeacherError, match="no trained classification head"):
        load_teacher(str(headless))


@pytest.mark.slow
@pytest.mark.parametrize("teacher_kind", ["run", "plain"])
def test_distill_from_full_run_to_smaller_resnet(full_run, image_dirs, tmp_path, teacher_kind):
    student = save_tiny_resnet(tmp_path / "student", hidden_sizes=(4, 8))
    teacher = full_run if teacher_kind == "run" else save_plain_copy(full_run, tmp_path / "plain-teacher")
    out = tmp_path / "distill"
    args = train_args(
        student,
        *image_dirs,
        out,
        "strategy.name=distill",
        f"strategy.distill.teacher={teacher}",
        "strategy.distill.measure_latency=false",
    )
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["distill"]["teacher_logits"] == "live"  # augmented inputs change every epoch
    assert results["distill"]["param_ratio"] < 1.0
    assert results["eval"]["accuracy"] > 1 / 3


def test_source_to_target_gets_new_head_and_keeps_backbone(full_run):
    config = load_config(None, [f"model.name_or_path={full_run}"])
    target = LabelMap(("cyan", "magenta", "yellow"), ("cyan", "magenta", "yellow"))
    model = load_image_classifier(config.model, target)
    source = load_file(full_run / "model.safetensors")
    state = model.state_dict()
    assert all(torch.equal(source[k], state[k]) for k in source if not k.startswith("classifier"))
    assert not torch.equal(source["classifier.1.weight"], state["classifier.1.weight"])
    assert model.config.id2label == {0: "cyan", 1: "magenta", 2: "yellow"}
    same = load_image_classifier(config.model, LabelMap(CLASSES, tuple(range(3))))  # same classes: head kept
    assert torch.equal(same.state_dict()["classifier.1.weight"], source["classifier.1.weight"])


def test_onnx_export_takes_pixel_values_with_a_dynamic_batch_and_matches_torch(full_run, image_dirs, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from hftransfer.artifacts.onnx import export_onnx

    onnx_dir = tmp_path / "onnx"
    capsys.readouterr()
    assert main(["export", str(full_run), "--out", str(onnx_dir), "--onnx"]) == 0
    paths = image_paths(image_dirs[1])
    assert f"onnxruntime matches torch on {len(paths)} validation rows" in capsys.readouterr().out
    assert {"model.onnx", "preprocessor_config.json", "config.json", "labels.json"} <= {
        p.name for p in onnx_dir.iterdir()
    }
    assert json.loads((onnx_dir / "onnx_check.json").read_text())["inputs"] == ["pixel_values"]

    # The exported folder alone: its processor, then onnxruntime on batches of 1 and of all images.
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.name == "pixel_values" and isinstance(graph_input.shape[0], str)  # dynamic batch
    processor = ConvNextImageProcessorPil.from_pretrained(onnx_dir)
    pixels = processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="np")["pixel_values"]
    batched = session.run(["logits"], {"pixel_values": pixels})[0]
    one_by_one = np.concatenate(
        [session.run(["logits"], {"pixel_values": pixels[i : i + 1]})[0] for i in range(len(paths))]
    )
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    with torch.no_grad():
        expected = load_run(full_run).model(pixel_values=torch.from_numpy(pixels)).logits.numpy()
    np.testing.assert_allclose(batched, expected, atol=1e-4)

    moved = tmp_path / "data-gone"  # the recipe's images are not here: a few made-up images check the graph
    shutil.copytree(full_run, moved)
    recipe = moved / "config.yaml"
    recipe.write_text(recipe.read_text().replace(str(image_dirs[1]), str(tmp_path / "nowhere")))
    assert export_onnx(moved, tmp_path / "onnx2").rows_checked == 3


def test_text_checkpoint_with_image_data_fails_clearly(tiny_bert_dir, image_dirs, tmp_path):
    args = train_args(tiny_bert_dir, *image_dirs, tmp_path / "o", "task=image-classification")
    assert main(args) == 2
