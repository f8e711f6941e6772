"""Knowledge distillation: a fine-tuned teacher's soft labels train a smaller student.

The student is `model.name_or_path`, as in every strategy: it is what trains, gets saved, and whose
tokenizer encodes the data (a teacher with another tokenizer reads the same rows encoded with its own,
`hftransfer.strategies.distill.teachers.encode_for_teacher`, for cached teacher logits only).
`strategy.distill.student_layers` shrinks it to a subset of its blocks; pointing `model.name_or_path` at
the teacher's folder gives a DistilBERT-style student that starts from the teacher's embeddings, chosen
blocks and classification head. The teacher
(`strategy.distill.teacher`) stays frozen in eval mode and never joins the optimizer.

Loss: `alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)`, plus optionally
`hidden_weight * (MSE or 1 - cosine)` between mapped hidden states (projected when widths differ).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from hftransfer.config.schema import ConfigError
from hftransfer.evaluation.inference import dataset_logits
from hftransfer.evaluation.metrics import classification_metrics
from hftransfer.models.loading import checkpoint_config
from hftransfer.models.students import keep_layers
from hftransfer.models.tasks import get_task
from hftransfer.strategies.base import CardTable, ComparePlan, Strategy, require_strategy_step
from hftransfer.strategies.distill.config import DistillConfig
from hftransfer.strategies.distill.losses import default_layer_map, distillation_loss, hidden_state_loss

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hftransfer.config.recipe import ModelConfig, RunConfig
    from hftransfer.data import PreparedData
    from hftransfer.strategies.distill.teachers import Teacher

logger = logging.getLogger("hftransfer")

TEACHER_LOGITS = "teacher_logits"  # the column hftransfer.strategies.distill.teacher_cache writes


class DistillStrategy(Strategy):
    """Distillation from a frozen teacher; research code may pass the teacher model directly."""

    name = "distill"
    summary = "knowledge distillation (a smaller student learned from a fine-tuned teacher)"
    # compare times every run's inference itself, interleaved; the teacher/student timing would be redundant.
    compare_defaults = ("strategy.distill.measure_latency=false",)

    def __init__(
        self,
        config: DistillConfig | None = None,
        teacher: nn.Module | None = None,
        teacher_tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        super().__init__(config or DistillConfig())
        self.teacher: nn.Module | None = None
        self.loaded: Teacher | None = None
        if teacher is not None:
            from hftransfer.data.labels import LabelMap
            from hftransfer.strategies.distill.teachers import Teacher, state_bytes

            teacher.eval().requires_grad_(False)
            labels = LabelMap.from_model_config(teacher.config.id2label)
            where = "the in-memory teacher (give its tokenizer as teacher_tokenizer=)"
            self.loaded = Teacher(teacher, teacher_tokenizer, labels, where, state_bytes(teacher))
            self.teacher = teacher
            if not self.config.teacher:  # the recipe records where the in-memory teacher was loaded from
                where = getattr(teacher, "name_or_path", None) or "in-memory teacher"
                self.config = dataclasses.replace(self.config, teacher=where)
        self.projection: nn.Module | None = None
        self.layer_map: list[list[int]] = []
        self._report: dict = {}
        self._latency_inputs: dict[str, tuple] | None = None
        self._own_encoding = False
        """True when the teacher reads its own encoding of the data (tokenizers differ), not the student's batches."""
        self._mask_token: tuple[int, list[int]] | None = None
        """(mask token id, special token ids) when mask_augment is on."""

    # --- setup -------------------------------------------------------------------------------------------------

    def prepare(self, model: nn.Module) -> nn.Module:
        """Cut the student, load the teacher, and build the hidden-state projection (on the student's device)."""
        if self.config.student_layers:
            keep_layers(model, self.config.student_layers)
        for param in model.parameters():
            param.requires_grad_(True)
        if self.teacher is None:
            from hftransfer.strategies.distill.teachers import load_teacher

            self.config.require_teacher()
            self.loaded = load_teacher(self.config.teacher, self.config.teacher_revision)
            self.teacher = self.loaded.model
        if self.config.hidden_loss != "none":
            self._setup_hidden(model)
        require_strategy_step(model, self.name, "whose loss mixes the teacher's soft targets with the labels")
        return model

    def _setup_hidden(self, student: nn.Module) -> None:
        s_config, t_config = student.config, self.teacher.config
        self.layer_map = self.config.hidden_layers or default_layer_map(
            self.config.student_layers, s_config.num_hidden_layers, t_config.num_hidden_layers
        )
        for s_index, t_index in self.layer_map:
            if s_index > s_config.num_hidden_layers or t_index > t_config.num_hidden_layers:
                raise ConfigError(
                    f"strategy.distill.hidden_layers pair {[s_index, t_index]} is out of range: the student has "
                    f"{s_config.num_hidden_layers} blocks, the teacher {t_config.num_hidden_layers} (0 = embeddings)."
                )
        if s_config.hidden_size != t_config.hidden_size:
            self.projection = nn.Linear(s_config.hidden_size, t_config.hidden_size).to(self.runtime.device_of(student))

    def prepare_data(self, model: nn.Module, data: PreparedData, processor: Any, config: RunConfig) -> PreparedData:
        """Check the teacher against the data, score it, and cache its train logits."""
        from hftransfer.strategies.distill.teacher_cache import with_teacher_logits
        from hftransfer.strategies.distill.teachers import check_label_mapping, check_teacher_accuracy

        name = self.loaded.location
        check_label_mapping(self.loaded.labels, data.labels, name)
        if self.config.mask_augment:
            self._mask_token = self._mask_token_ids(processor)
        live = (
            not self.config.cache_teacher_logits
            or self.config.hidden_loss != "none"
            or data.train_inputs_vary  # inputs differ every epoch: cached logits would not fit
            or bool(self.config.mask_augment)
        )
        task = get_task(config.task)
        collator = task.collator(processor, config.data)
        teacher_data, teacher_collator = self._teacher_inputs(data, processor, collator, config, live)
        device, dtype = self.runtime.device_of(model), self.runtime.autocast_dtype
        batch_size = config.train.eval_batch_size

        started = time.perf_counter()
        eval_logits = dataset_logits(self.teacher, teacher_data.validation, teacher_collator, batch_size, device, dtype,
                                     desc="teacher on validation")  # fmt: skip
        teacher_eval = classification_metrics(data.validation["labels"], eval_logits, label_names=data.labels.names)
        self._report = {"teacher_eval": teacher_eval, "teacher_eval_runtime_s": time.perf_counter() - started}
        if self.config.check_teacher:
            check_teacher_accuracy(data.validation["labels"], eval_logits, name)
        logger.info("Teacher %s: validation accuracy %.4f", name, teacher_eval["accuracy"])

        self._report["teacher_logits"] = "live" if live else "cached"
        if not live:
            started = time.perf_counter()
            train_logits = dataset_logits(self.teacher, teacher_data.train, teacher_collator, batch_size, device, dtype)
            data = replace(data, train=with_teacher_logits(data.train, train_logits))
            self._report["teacher_cache_s"] = time.perf_counter() - started
            logger.info("Cached teacher logits for %d rows in %.1fs", len(data.train), self._report["teacher_cache_s"])
        if self.config.measure_latency:
            self._latency_inputs = {
                "teacher": (teacher_data.validation, teacher_collator),
                "student": (data.validation, collator),
            }
        return data

    def _teacher_inputs(
        self, data: PreparedData, processor: Any, collator: Any, config: RunConfig, live: bool
    ) -> tuple[PreparedData, Any]:
        """What the teacher reads: the student's rows when it can, else the same raw rows in its own encoding."""
        from hftransfer.strategies.distill.teachers import TeacherError, encode_for_teacher

        task, name = get_task(config.task), self.loaded.location
        difference = task.input_difference(processor, self.loaded.tokenizer, name, config.data.max_length)
        self._own_encoding = difference is not None
        if difference is None:
            return data, collator
        problem = f"The student's tokenizer and teacher '{name}''s tokenizer differ ({difference})"
        if self.config.hidden_loss != "none":
            raise TeacherError(
                f"{problem}, so their token positions do not line up and strategy.distill.hidden_loss="
                f"{self.config.hidden_loss} cannot compare hidden states. Set strategy.distill.hidden_loss=none, "
                "or use a student with the teacher's tokenizer (e.g. cut from it with strategy.distill.student_layers)."
            )
        if live:
            raise TeacherError(
                f"{problem}: the teacher needs the inputs encoded with its own tokenizer, which hftransfer does only "
                "for cached teacher logits. Set strategy.distill.cache_teacher_logits=true (the default) and "
                "strategy.distill.mask_augment=0, or use a student with the teacher's tokenizer."
            )
        logger.info("%s: encoding the data a second time, for the teacher.", problem)
        teacher_data = encode_for_teacher(data, self.loaded.tokenizer, config)
        return teacher_data, task.collator(self.loaded.tokenizer, config.data)

    @staticmethod
    def _mask_token_ids(processor: Any) -> tuple[int, list[int]]:
        mask_id = getattr(processor, "mask_token_id", None)
        if mask_id is None:
            raise ConfigError(
                "strategy.distill.mask_augment replaces text tokens by the tokenizer's mask token; this model's "
                "processor has none (image models have no tokens). Set strategy.distill.mask_augment=0."
            )
        return mask_id, list(processor.all_special_ids)

    def _masked(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch with a random `mask_augment` share of its real, non-special tokens masked."""
        mask_id, special = self._mask_token
        ids = inputs["input_ids"]
        real = inputs.get("attention_mask", torch.ones_like(ids)).bool() & ~torch.isin(ids, ids.new_tensor(special))
        hit = real & (torch.rand(ids.shape, device=ids.device) < self.config.mask_augment)
        return {**inputs, "input_ids": ids.masked_fill(hit, mask_id)}

    # --- training ----------------------------------------------------------------------------------------------

    def _teacher_forward(self, inputs: dict, device: torch.device, hidden: bool):
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        dtype = self.runtime.autocast_dtype
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return self.teacher(**inputs, output_hidden_states=hidden)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {k: v for k, v in batch.items() if k not in ("labels", TEACHER_LOGITS)}
        if self._mask_token is not None and model.training:
            inputs = self._masked(inputs)
        hidden = self.config.hidden_loss != "none"
        outputs = model(**inputs, output_hidden_states=hidden) if hidden else model(**inputs)
        logits = outputs.logits
        teacher_out = None
        if TEACHER_LOGITS in batch and not hidden:
            teacher_logits = batch[TEACHER_LOGITS]
        elif self._own_encoding:  # the teacher cannot read these ids: only its cached train logits exist
            if model.training:
                raise ValueError(f"A training batch without '{TEACHER_LOGITS}': the teacher needs its own encoding.")
            return F.cross_entropy(logits.float(), batch["labels"]), logits  # the task loss, as evaluation reports
        else:
            teacher_out = self._teacher_forward(inputs, logits.device, hidden)
            teacher_logits = teacher_out.logits
        loss, _, _ = distillation_loss(
            logits, teacher_logits, batch["labels"], self.config.temperature, self.config.alpha,
            label_smoothing=self.runtime.label_smoothing,
        )
        if hidden and self.config.hidden_weight > 0:
            loss = loss + self.config.hidden_weight * self._hidden_loss(outputs, teacher_out, inputs)
        return loss, logits

    def _hidden_loss(self, student_out, teacher_out, inputs: dict) -> torch.Tensor:
        terms = []
        for s_index, t_index in self.layer_map:
            student_state = student_out.hidden_states[s_index]
            if self.projection is not None:
                student_state = self.projection(student_state)
            terms.append(
                hidden_state_loss(
                    student_state,
                    teacher_out.hidden_states[t_index],
                    inputs.get("attention_mask"),
                    self.config.hidden_loss,
                )
            )
        return torch.stack(terms).mean()

    def trainable_modules(self) -> dict[str, nn.Module]:
        """The projection from the student's hidden width to the teacher's, when they differ."""
        return {"hidden_projection": self.projection} if self.projection is not None else {}

    def parameter_groups(self, model: nn.Module, learning_rate: float, weight_decay: float) -> list[dict]:
        """The base groups for the student; the projection (which the loops train alongside) without decay."""
        extra = {id(p) for p in self.projection.parameters()} if self.projection is not None else set()
        groups = super().parameter_groups(model, learning_rate, weight_decay)
        groups = [{**g, "params": [p for p in g["params"] if id(p) not in extra]} for g in groups]
        groups = [g for g in groups if g["params"]]
        if self.projection is not None:
            groups.append({"params": list(self.projection.parameters()), "weight_decay": 0.0, "lr": learning_rate})
        return groups

    # --- reporting ---------------------------------------------------------------------------------------------

    def extra_results(self, model: nn.Module, metrics: dict, output_dir: Path) -> dict:
        from hftransfer.models.loading import count_parameters
        from hftransfer.strategies.distill.teachers import weights_on_disk

        teacher_eval = self._report.get("teacher_eval", {})
        teacher_params = sum(p.numel() for p in self.teacher.parameters())
        student_params = count_parameters(model)[1]
        result = {
            "teacher_model": self.loaded.location,
            "teacher_logits": self._report.get("teacher_logits"),
            "teacher_cache_s": self._report.get("teacher_cache_s"),
            "temperature": self.config.temperature,
            "alpha": self.config.alpha,
            "hidden_loss": self.config.hidden_loss,
            "student_layers": self.config.student_layers,
            "teacher": {
                "accuracy": teacher_eval.get("accuracy"),
                "f1": teacher_eval.get("f1"),
                "params": teacher_params,
                "size_bytes": self.loaded.size_bytes,
            },
            "student": {
                "accuracy": metrics["accuracy"],
                "f1": metrics["f1"],
                "params": student_params,
                "size_bytes": weights_on_disk(output_dir),
            },
            "retention": metrics["accuracy"] / teacher_eval["accuracy"] if teacher_eval.get("accuracy") else None,
            "param_ratio": student_params / teacher_params,
        }
        if self._latency_inputs is not None:
            result["latency_ms"] = self._latency(model)
            for batch_size in ("1", "64"):
                t, s = result["latency_ms"]["teacher"][batch_size], result["latency_ms"]["student"][batch_size]
                result[f"speedup_batch{batch_size}"] = t / s if s > 0 else None
        return result

    def _latency(self, model: nn.Module) -> dict:
        from hftransfer.evaluation.latency import compare_latency, sample_batches

        device = next(model.parameters()).device
        self.teacher.to(device)
        models = {"teacher": self.teacher, "student": model}
        out: dict[str, dict[str, float]] = {"teacher": {}, "student": {}}
        for batch_size, count in ((1, 20), (64, 5)):
            batches = {
                who: sample_batches(dataset, collator, batch_size, count)
                for who, (dataset, collator) in self._latency_inputs.items()
            }
            timed = compare_latency(models, batches, device, autocast_dtype=self.runtime.autocast_dtype)
            for who, ms in timed.items():
                out[who][str(batch_size)] = ms
        return out

    @classmethod
    def report_lines(cls, results: dict) -> list[str]:
        d = results.get(cls.name)
        if not d:
            return []
        rows = [("", "teacher", "student")]
        for key, fmt in (("accuracy", "{:.4f}"), ("f1", "{:.4f}"), ("params", "{:,}")):
            rows.append((key, fmt.format(d["teacher"][key]), fmt.format(d["student"][key])))
        rows.append(
            ("size", f"{d['teacher']['size_bytes'] / 2**20:.1f} MiB", f"{d['student']['size_bytes'] / 2**20:.1f} MiB")
        )
        for batch_size in ("1", "64"):
            if "latency_ms" in d:
                t, s = d["latency_ms"]["teacher"][batch_size], d["latency_ms"]["student"][batch_size]
                rows.append((f"latency b{batch_size}", f"{t:.1f} ms", f"{s:.1f} ms"))
        lines = [f"distillation from {d['teacher_model']} (teacher logits {d['teacher_logits']}):"]
        lines += [f"  {a:<12}{b:>14}{c:>14}" for a, b, c in rows]
        summary = f"  retention {d['retention']:.3f}" if d.get("retention") is not None else "  retention n/a"
        if "speedup_batch1" in d:
            summary += f", speedup {d['speedup_batch1']:.2f}x (batch 1), {d['speedup_batch64']:.2f}x (batch 64)"
        lines.append(summary + f", params {d['param_ratio']:.2f}x")
        return lines

    @classmethod
    def card_table(cls, results: dict) -> CardTable | None:
        d = results.get(cls.name)
        if not isinstance(d, dict) or not isinstance(d.get("teacher"), dict) or not isinstance(d.get("student"), dict):
            return None
        teacher, student = d["teacher"], d["student"]
        keys = [k for k in ("accuracy", "f1", "params", "size_bytes") if k in teacher or k in student]
        return CardTable(
            f"Distilled from the teacher `{d.get('teacher_model', '?')}` "
            f"(temperature {d.get('temperature'):g}, alpha {d.get('alpha'):g}):",
            ["", *keys],
            [["teacher", *[teacher.get(k) for k in keys]], ["student (this model)", *[student.get(k) for k in keys]]],
        )

    @classmethod
    def card_limitations(cls, results: dict) -> list[str]:
        return ["- A distilled student is usually a little less accurate than its teacher; compare both."]

    @classmethod
    def compare_plan(
        cls, recipe: RunConfig, own_overrides: list[str], strategies: list[str], runs_dir: Path
    ) -> ComparePlan:
        """Unless the recipe names a teacher, the teacher is this comparison's `full` run and the student is cut from
        it (every other block, DistilBERT-style), or is the `model.name_or_path` given for this run alone."""
        if recipe.strategy.distill.teacher:
            teacher = recipe.strategy.distill.teacher
            return ComparePlan(notes=(f"distill: teacher {teacher} (named by the recipe or overrides)",))
        if "full" not in strategies:
            raise ConfigError(
                "distill needs a teacher: add 'full' to --strategies (compare then distils its full run), or name one "
                "with distill:strategy.distill.teacher=<output folder or Hub id>."
            )
        teacher = runs_dir / "full"
        settings = [f"strategy.distill.teacher={teacher}"]
        if any(item.partition("=")[0].strip() == "model.name_or_path" for item in own_overrides):
            note = f"distill: teacher = the full run; student {recipe.model.name_or_path}"
            return ComparePlan(tuple(settings), ("full",), (note,))
        layers = recipe.strategy.distill.student_layers or _every_other_block(recipe.model)
        settings += [f"model.name_or_path={teacher}", f"strategy.distill.student_layers={list(layers)}"]
        note = f"distill: teacher = the full run; student = its blocks {list(layers)} with its embeddings and head"
        return ComparePlan(tuple(settings), ("full",), (note,))

    @classmethod
    def compare_notes(cls, results: dict) -> list[str]:
        cached = (results.get(cls.name) or {}).get("teacher_cache_s")
        extra = f" and caching the teacher's train logits ({cached:.1f} s)" if cached else ""
        return [f"distill: train time leaves out training the teacher{extra}."]


def _every_other_block(model: ModelConfig) -> list[int]:
    """Blocks 0, 2, 4, ... of a checkpoint: the DistilBERT-style student compare cuts from its full run."""
    pretrained = checkpoint_config(model.name_or_path, model.revision, model.trust_remote_code)
    depth = getattr(pretrained, "num_hidden_layers", None)
    if not isinstance(depth, int) or depth < 1:
        raise ConfigError(
            f"Cannot cut a distill student from a '{pretrained.model_type}' model (no transformer blocks). Set "
            "distill:model.name_or_path=<a smaller student> or distill:strategy.distill.student_layers=[...]."
        )
    return list(range(0, depth, 2))
