"""Recipes: YAML files validated into typed configs, with `key=value` overrides.

Every key is checked: an unknown key, a wrong type or an impossible value (k > d, ...) is reported
with its dotted path. `Recipe.model_dump()` is the resolved config written beside every run.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


STUDENT_SEED_OFFSET = 1000  # a student of seed s draws its data and its init with seed 1000 + s


class RecipeError(ValueError):
    """A recipe that cannot be read or does not validate; the message lists every problem."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- tasks -----------------------------------------------------------------------------------
class ParityTaskConfig(Strict):
    name: Literal["parity"] = "parity"
    d: int = Field(100, ge=1, description="input dimension")
    k: int = Field(6, ge=1, description="support size")
    support: Literal["first", "random"] = "first"
    num_labels: int = Field(2, ge=2, description="2 = sparse parity; 2^m = hierarchical variant")
    train_size: int | None = Field(None, ge=1, description="fixed training set (finite-sample mode)")
    eval_size: int = Field(4096, ge=1)
    seed: int = Field(0, description="defines the problem: random support, held-out set")

    @model_validator(mode="after")
    def _check(self) -> "ParityTaskConfig":
        if self.num_labels & (self.num_labels - 1):
            raise ValueError(f"num_labels must be a power of 2, got {self.num_labels}")
        if (self.num_labels - 1) * self.k > self.d:
            raise ValueError(f"k={self.k} (x {self.num_labels - 1} blocks) does not fit in d={self.d}")
        return self


class GenerateSpec(Strict):
    levels: int = Field(3, ge=1, description="non-terminal levels below the root")
    symbols_per_level: int = Field(3, ge=1)
    rules_per_symbol: int = Field(2, ge=1)
    rhs_lengths: tuple[int, ...] = (2, 3)
    terminals: int = Field(3, ge=1)
    seed: int = 0


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
    grammar: GrammarSpec
    max_len: int | None = Field(None, ge=1, description="longest sentence (terminals); default: 99.9th percentile")
    eval_size: int = Field(1024, ge=1)
    seed: int = Field(0, description="defines the held-out set")


class PCFGMLMTaskConfig(_PCFGTask):
    name: Literal["pcfg-mlm"] = "pcfg-mlm"
    mask_prob: float = Field(0.3, gt=0, le=1)
    mask_token_prob: float = Field(0.8, ge=0, le=1)
    random_token_prob: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> "PCFGMLMTaskConfig":
        if self.mask_token_prob + self.random_token_prob > 1:
            raise ValueError("mask_token_prob + random_token_prob must be <= 1")
        return self


class PCFGARTaskConfig(_PCFGTask):
    name: Literal["pcfg-ar"] = "pcfg-ar"
    level: int = Field(1, ge=1, description="loss only at tokens closing a span of a non-terminal at this level")


TaskConfig = Annotated[Union[ParityTaskConfig, PCFGMLMTaskConfig, PCFGARTaskConfig], Field(discriminator="name")]


# --- models ----------------------------------------------------------------------------------
class MLPConfig(Strict):
    type: Literal["mlp"] = "mlp"
    width: int = Field(ge=1)
    depth: int = Field(1, ge=1)


class GPTConfig(Strict):
    type: Literal["gpt"] = "gpt"
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    head_dim: int = Field(8, ge=1)


class _LMConfig(Strict):
    layers: int = Field(4, ge=1)
    heads: int = Field(8, ge=1)
    head_dim: int = Field(8, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)


class BertConfig(_LMConfig):
    type: Literal["bert"] = "bert"


class GPTLMConfig(_LMConfig):
    type: Literal["gpt-lm"] = "gpt-lm"


ModelConfig = Annotated[Union[MLPConfig, GPTConfig, BertConfig, GPTLMConfig], Field(discriminator="type")]


# --- training --------------------------------------------------------------------------------
class OptimSection(Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["constant", "cosine"] = "constant"
    warmup: float = Field(0.0, ge=0, lt=1, description="fraction of steps")
    grad_clip: float | None = Field(None, gt=0)


class KDSection(Strict):
    alpha: float = Field(0.0, ge=0, le=1, description="weight of the ground-truth CE term")
    tau: float = Field(0.0, ge=0, description="temperature; 0 = teacher argmax as hard label")
    kind: Literal["forward", "reverse"] = "forward"
    scale_tau2: bool = False

    @model_validator(mode="after")
    def _check(self) -> "KDSection":
        if self.kind == "reverse" and self.tau == 0 and self.alpha < 1:
            raise ValueError("reverse KL needs tau > 0")
        return self


class TeacherSection(Strict):
    model: ModelConfig
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    optim: OptimSection = OptimSection()
    eval_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(ge=1)
    log_checkpoints: int = Field(0, ge=0, description="extra log-spaced early checkpoints")
    seed: int = 0
    path: str | None = Field(None, description="use this saved trajectory instead of training a teacher")


class PhasesSection(Strict):
    metric: Literal["loss", "accuracy"] = "loss"
    window: float = Field(0.05, gt=0, lt=1, description="rate window, fraction of the run")
    threshold: float = Field(0.25, gt=0, lt=1, description="drop phase: rate above this x the peak rate")
    skip: float = Field(0.05, ge=0, lt=1, description="ignore this first fraction of the run")


CheckpointRef = Union[int, Literal["before", "drop_start", "middle", "drop_end", "after", "final"]]


class _Method(Strict):
    label: str | None = Field(None, description="name in the report (default: the method name)")

    @property
    def display(self) -> str:
        return self.label or self.name  # type: ignore[attr-defined]


class CEMethod(_Method):
    name: Literal["ce"] = "ce"


class OneShotMethod(_Method):
    name: Literal["one-shot"] = "one-shot"


class ProgressiveMethod(_Method):
    name: Literal["progressive"] = "progressive"
    speed: Annotated[float, Field(gt=0)] | Literal["fit"] = Field(
        1.0, description="checkpoint steps advanced per student step; 'fit': reach the final one at `reach`")
    reach: float = Field(1.0, gt=0, le=1, description="with speed 'fit': fraction of the budget by which "
                                                       "the final checkpoint takes over")
    refresh: int | None = Field(None, ge=1, description="default: the teacher's checkpoint interval")
    start: CheckpointRef = 0


class TwoShotMethod(_Method):
    name: Literal["two-shot"] = "two-shot"
    checkpoint: CheckpointRef = "middle"
    switch: int = Field(ge=0, description="student step at which the final teacher takes over")


class AdaptiveMethod(_Method):
    name: Literal["adaptive"] = "adaptive"
    start: CheckpointRef = 0
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.005, ge=0)


class AutoMethod(_Method):
    name: Literal["auto"] = "auto"
    switch: int | None = Field(None, ge=0, description="fixed switch step; default: when caught up or plateaued")
    latest: float = Field(0.5, gt=0, le=1, description="switch at this fraction of the budget at the latest")
    tolerance: float = Field(0.02, ge=0)
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.005, ge=0)


Method = Annotated[Union[CEMethod, OneShotMethod, ProgressiveMethod, TwoShotMethod, AdaptiveMethod, AutoMethod],
                   Field(discriminator="name")]


class SweepSection(Strict):
    """(2, T)-progressive sweep: one two-shot student per intermediate checkpoint."""

    switch: int = Field(ge=0, description="student step at which the final teacher takes over")
    checkpoints: list[int] | None = Field(None, description="teacher steps (default: every saved one)")
    budget: int | None = Field(None, ge=1, description="student steps (default: the first budget)")
    seeds: list[int] | None = Field(None, description="default: the students' seeds")


class StudentsSection(Strict):
    model: ModelConfig
    steps: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, description="budget(s); each is a separate "
                                                     "run with its own schedule")
    batch_size: int = Field(ge=1)
    optim: OptimSection = OptimSection()
    kd: KDSection = KDSection()
    eval_every: int = Field(100, ge=1)
    seeds: list[int] = Field(min_length=1)
    methods: list[Method] = Field(min_length=1)
    probe_final: list[str] = Field([], description="probes (configured under probe:) to run on every final student")
    sweep: SweepSection | None = None
    group_size: int = Field(16, ge=1, description="students trained together as one batched model, at most "
                            "(1: one at a time); an execution setting: numbers as one at a time, up to float rounding")
    group_memory_mb: int = Field(4096, ge=1, description="memory a group of students may take (MiB); caps the "
                                 "group size (estimated from one student's parameters and saved activations)")

    @field_validator("steps", mode="before")
    @classmethod
    def _budgets(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) else v

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
    samples: int = Field(100_000, ge=1000)
    off_support: int = Field(100, ge=1)
    degrees: list[int] | None = None
    seed: int = 0


class NgramProbe(Strict):
    sentences: int = Field(256, ge=1)
    n_max: int = Field(3, ge=1)
    positions: int = Field(4, ge=1, description="target positions per sentence, evenly spaced")


class NonterminalProbe(Strict):
    train_sentences: int = Field(512, ge=1)
    test_sentences: int = Field(256, ge=1)
    steps: int = Field(300, ge=1)
    boundaries_only: bool = False
    seed: int = 0


class ProbeSection(Strict):
    every: int = Field(1, ge=1, description="probe every n-th teacher checkpoint (the last one always)")
    dense_near_drop: bool = Field(False, description="also probe every checkpoint within one drop-width of "
                                  "the detected phase transition")
    monomials: MonomialProbe | None = None
    ngram: NgramProbe | None = None
    nonterminal: NonterminalProbe | None = None
    oracle: bool = Field(False, description="also score the grammar's Bayes-optimal predictor on the held-out "
                         "set and the n-gram probe (pcfg-mlm; exact, on the CPU, cost ~ length^3)")

    def enabled(self) -> dict[str, dict[str, Any]]:
        """name -> options of every configured probe."""
        return {name: getattr(self, name).model_dump() for name in ("monomials", "ngram", "nonterminal")
                if getattr(self, name) is not None}


class ReportSection(Strict):
    target: float = Field(0.95, gt=0, le=1, description="accuracy for samples_to_target")


TASK_PROBES = {"parity": ("monomials",), "pcfg-mlm": ("ngram", "nonterminal"), "pcfg-ar": ("nonterminal",)}


class Recipe(Strict):
    name: str = "experiment"
    description: str = ""
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:N or mps")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: forward passes under bfloat16 "
                                               "autocast (GPU speed); weights, optimizer and losses stay fp32")
    threads: int | None = Field(None, ge=1, description="torch threads in all (default: torch's); "
                                "split between workers")
    workers: int = Field(1, ge=1, description="student runs in parallel processes")
    task: TaskConfig
    teacher: TeacherSection
    phases: PhasesSection = PhasesSection()
    probe: ProbeSection = ProbeSection()
    students: StudentsSection
    report: ReportSection = ReportSection()

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
            if name not in TASK_PROBES[task]:
                raise ValueError(f"probe.{name}: not available for task {task!r} (it has: {list(TASK_PROBES[task])})")
        for name in self.students.probe_final:
            if name not in enabled:
                raise ValueError(f"students.probe_final: probe {name!r} is not configured under probe:")
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


# --- loading ---------------------------------------------------------------------------------
def recipe_names() -> list[str]:
    """Recipes shipped with the package."""
    folder = resources.files("progdistill") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def recipe_text(name_or_path: str) -> tuple[str, str]:
    """(YAML text, source) of a shipped recipe name or a file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise RecipeError(f"{path}: recipe file not found")
        return path.read_text(), str(path)
    if name_or_path not in recipe_names():
        raise RecipeError(f"unknown recipe {name_or_path!r}; shipped recipes: {', '.join(recipe_names())}")
    return (resources.files("progdistill") / "recipes" / f"{name_or_path}.yaml").read_text(), name_or_path


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `dotted.key=value` overrides (values parsed as YAML) to a raw recipe dict."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        value = yaml.safe_load(text) if text else None
        node: Any = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                if isinstance(node[int(part)], str):  # a bare method name becomes a mapping
                    node[int(part)] = {"name": node[int(part)]}
                node = node[int(part)]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                raise RecipeError(f"override {key!r}: {part!r} is not a section")
        last = parts[-1]
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise RecipeError(f"override {key!r}: cannot set {last!r}")
    return raw


def validate(raw: Any, source: str = "<recipe>") -> Recipe:
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith(("function-", "tagged-")))
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            if err["type"] == "union_tag_not_found":
                tag = err["ctx"]["discriminator"].strip("'")
                msg = f"needs a '{tag}' key"
                if isinstance(err["input"], dict) and any(":" in str(k) for k in err["input"]):
                    msg += " (YAML needs a space after each colon: {name: two-shot}, not {name:two-shot})"
            lines.append(f"  {loc or '(top)'}: {msg}")
        raise RecipeError(f"{source}: invalid recipe\n" + "\n".join(lines)) from None


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe (a shipped name or a YAML path)."""
    text, source = recipe_text(name_or_path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RecipeError(f"{source}: not valid YAML: {e}") from None
    return validate(apply_overrides(raw or {}, overrides or []), source)
