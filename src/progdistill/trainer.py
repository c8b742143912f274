"""One training loop for teachers and students.

loss = alpha * CE(student, y) + (1 - alpha) * KD(teacher checkpoint c(t) -> student), where c(t)
comes from a TeacherSchedule (none for a teacher or a CE student). The teacher's outputs come from
`TeacherOutputs` (checkpoint reloaded only when c(t) changes; optionally cached on disk and shared
between students). Every run folder holds its eval curve, which teacher checkpoint supervised each
step, and a resumable state (model + optimizer + schedule) that a kill at any point leaves consistent.
"""

from __future__ import annotations

import bisect
import math
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn
from tqdm.auto import tqdm

from .batch1 import make_batch1_path
from .config import KDSection, OptimSection, RecipeError, TrainSettings, one_line, validate_section
from .io import load_tensors, read_json, save_tensors, write_json
from .losses import distillation_terms
from .metric_logging import TrainingLosses, open_loggers
from .models import model_type
from .precision import autocast
from .schedule import TeacherSchedule
from .tasks.base import Task, selected
from .teacher_outputs import TeacherOutputs
from .trajectory import Trajectory, save_checkpoint


class OptimConfig(OptimSection):
    """The optimizer settings of the Python API: the recipe's `optim` section and its checks
    (`OptimConfig(lr=0)` raises RecipeError 'OptimConfig.lr: Input should be greater than 0')."""

    def __init__(self, **settings: Any) -> None:
        try:
            super().__init__(**settings)
        except ValidationError as e:
            raise RecipeError(one_line(e, "OptimConfig")) from None


class KDConfig(KDSection):
    """The distillation loss settings of the Python API: the recipe's `students.kd` section and its checks."""

    def __init__(self, **settings: Any) -> None:
        try:
            super().__init__(**settings)
        except ValidationError as e:
            raise RecipeError(one_line(e, "KDConfig")) from None


class DivergenceError(ValueError):
    """The held-out loss stopped being finite."""


@dataclass
class TrainConfig:
    """Settings of one training run, checked as `config.TrainSettings` (a RecipeError naming the key);
    `optim` and `kd` may be given as dicts."""

    steps: int
    batch_size: int
    precision: str = "fp32"  # "bf16": forward passes under bfloat16 autocast
    optim: OptimConfig = field(default_factory=OptimConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    eval_every: int = 100
    checkpoint_every: int | None = None  # teachers: save checkpoint-{step} every N steps
    log_checkpoints: int = 0  # extra log-spaced checkpoints before the first regular one
    state_every: int | None = None  # resumable state cadence (default: every eval)
    save_final: bool = True
    batch1: str = "auto"  # the batch-1 path (batch1.py): "auto" where it applies, "numba", "torch", "off"

    def __post_init__(self) -> None:
        checked = validate_section(TrainSettings, {f.name: getattr(self, f.name) for f in fields(self)}, "TrainConfig")
        self.optim, self.kd = checked.optim, checked.kd


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}; choose sgd, adam or adamw")


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Learning rate of update `step` (0-based): linear warmup, then constant or cosine to 0."""
    warm = int(round(cfg.warmup * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        progress = (step - warm) / max(1, total - warm)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr schedule {cfg.schedule!r}; choose constant or cosine")


def checkpoint_steps(cfg: TrainConfig) -> set[int]:
    """Steps at which a teacher saves checkpoints: 0, every N, log-spaced early ones, the last."""
    if not cfg.checkpoint_every:
        return set()
    steps = set(range(0, cfg.steps + 1, cfg.checkpoint_every)) | {cfg.steps}
    if cfg.log_checkpoints:
        steps |= {int(s) for s in np.unique(np.geomspace(1, cfg.checkpoint_every, cfg.log_checkpoints + 1).round())}
    return {s for s in steps if s <= cfg.steps}


def next_boundary(step: int, cfg: TrainConfig, checkpoints: list[int], state_every: int) -> int:
    """The first step after `step` at which training evaluates, saves a checkpoint or its state, or ends
    (`checkpoints`: the sorted checkpoint steps). An early stop (`stop_at`) is not one: on the batch-1 path a
    run stopped early stops at the first of these at or after it, so that it resumes bit-identically."""
    nxt = min(cfg.steps, (step // cfg.eval_every + 1) * cfg.eval_every, (step // state_every + 1) * state_every)
    i = bisect.bisect_right(checkpoints, step)
    return min(nxt, checkpoints[i]) if i < len(checkpoints) else nxt


def _save_optimizer(path: Path, opt: torch.optim.Optimizer) -> dict[str, Any]:
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    save_tensors(path, tensors or {"_empty": torch.zeros(0)})
    return {"scalars": scalars, "param_groups": state["param_groups"]}


def _load_optimizer(path: Path, opt: torch.optim.Optimizer, info: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in load_tensors(path).items():
        if name == "_empty":
            continue
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for name, value in info["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def _rng_state() -> dict[str, torch.Tensor]:
    """The global random generators' states (CPU, and every CUDA device in use), as uint8 tensors."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    cuda = [state[k].cpu() for k in sorted((k for k in state if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def train(
    model: nn.Module,
    task: Task,
    cfg: TrainConfig,
    out: str | Path,
    meta: dict[str, Any],
    schedule: TeacherSchedule | None = None,
    teacher: Trajectory | None = None,
    progress: bool = True,
    stop_at: int | None = None,
    desc: str = "train",
    teacher_cache: str | Path | None = None,
    log: Sequence[str] = (),
) -> dict[str, Any]:
    """Train `model` on `task`, resuming from `out/state` if present. Returns the run's record.

    `meta` is stored in every checkpoint; its 'model' entry (the resolved architecture: a built-in
    `type`, or `{"type": "package.module:Class", **keywords}` for your own model) is what lets
    `load_checkpoint` / `Trajectory.load` rebuild it, so a teacher whose checkpoints feed students needs it.
    `stop_at` ends the run early after that step with its state saved, as an interruption would.
    `teacher_cache`: a folder where the teacher's outputs on this data stream are cached (see
    `TeacherOutputs`); share it only between runs with the same task, data seed and batch size.
    `log`: metric backends besides `out/metrics.jsonl` (always written): "tensorboard", "wandb" (offline).
    Raises ValueError for a meta['model'] of unknown type, a missing logging extra; DivergenceError.
    """
    out = Path(out)
    if "model" in meta:
        model_type(meta["model"].get("type"))  # an unknown type fails now, not when a student loads it
    elif cfg.checkpoint_every:
        raise ValueError(f"{desc}: meta needs a 'model' entry (the architecture, e.g. {{'type': 'package.module:Class', "
                         "**keywords}}) so that its checkpoints can be rebuilt")
    schedule = schedule or TeacherSchedule(None)
    device = next(model.parameters()).device
    opt = make_optimizer(model, cfg.optim)
    ckpt_steps = checkpoint_steps(cfg)
    state_every = cfg.state_every or cfg.eval_every
    teachers = TeacherOutputs(teacher, task, cfg.batch_size, device, labels_only=cfg.kd.tau == 0,
                              cache=teacher_cache, precision=cfg.precision)

    record: dict[str, Any] = {"curve": [], "supervision": []}
    losses = TrainingLosses(device)  # since the last evaluation, for metrics.jsonl
    start = 0
    state_dir = out / "state"
    if (state_dir / "state.json").is_file():
        saved = read_json(state_dir / "state.json")
        files = saved.get("files", {"model": "model.safetensors", "optimizer": "optimizer.safetensors"})
        model.load_state_dict(load_tensors(state_dir / files["model"], device))
        _load_optimizer(state_dir / files["optimizer"], opt, saved["optimizer"])
        if "rng" in files:  # dropout and any other draw from the global generators continue where they were
            _set_rng_state(load_tensors(state_dir / files["rng"]))
        schedule.load_state_dict(saved["schedule"])
        record, start = saved["record"], saved["step"]
        if "losses" in saved:
            losses.load_state_dict(saved["losses"])
    loggers = open_loggers(out, log, start, desc)  # metrics.jsonl (lines past `start` dropped) and --log backends

    def lr_of(step: int) -> float:
        if cfg.optim.schedule != "constant" or cfg.optim.warmup:
            return lr_at(step, cfg.steps, cfg.optim)
        return cfg.optim.lr

    def evaluate(step: int) -> dict[str, Any]:
        with autocast(device, cfg.precision):
            metrics = task.evaluate(model)
        point = {"step": step, "samples": step * task.samples_per_step(cfg.batch_size), **metrics}
        if not math.isfinite(point["loss"]):
            raise DivergenceError(f"{desc}: held-out loss is {point['loss']} at step {step}: training diverged "
                                  "(lower optim.lr, or set optim.grad_clip)")
        point["teacher"] = schedule.checkpoint(max(step - 1, 0))
        record["curve"].append(point)
        schedule.observe(step, point)
        log_metrics(point)
        return point

    def log_metrics(point: dict[str, Any]) -> None:
        line = {"samples": point["samples"], **losses.means(), "teacher/checkpoint_step": point["teacher"],
                "eval/loss": point["loss"], "eval/accuracy": point["accuracy"], "lr": lr_of(max(point["step"] - 1, 0))}
        for logger in loggers:
            logger.log_dict(point["step"], line)

    def save_state(step: int) -> None:
        # Weights go to files named by step; state.json, written last, commits them. A kill between the
        # writes leaves the previous state.json pointing at the previous, complete files.
        files = {"model": f"model-{step}.safetensors", "optimizer": f"optimizer-{step}.safetensors",
                 "rng": f"rng-{step}.safetensors"}
        save_tensors(state_dir / files["model"], model.state_dict())
        info = _save_optimizer(state_dir / files["optimizer"], opt)
        save_tensors(state_dir / files["rng"], _rng_state())
        write_json(state_dir / "state.json", {"step": step, "files": files, "optimizer": info,
                                              "schedule": schedule.state_dict(), "record": record,
                                              "losses": losses.state_dict()})
        for stale in state_dir.glob("*.safetensors"):
            if stale.name not in files.values():
                stale.unlink()

    def save_ckpt(step: int, point: dict[str, Any] | None) -> None:
        if point is None:
            with autocast(device, cfg.precision):
                point = {"step": step, **task.evaluate(model)}
        save_checkpoint(out / f"checkpoint-{step}", model, {
            **meta, "step": step, "samples": step * task.samples_per_step(cfg.batch_size),
            "eval": {"loss": point["loss"], "accuracy": point["accuracy"]},
        })

    if start == 0:
        point = evaluate(0)
        if 0 in ckpt_steps:
            save_ckpt(0, point)
    bar = tqdm(total=cfg.steps, initial=start, desc=desc, disable=not progress, leave=False, mininterval=1.0)
    model.train()
    # The batch-1 path (batch1.py) runs the steps up to the next evaluation / checkpoint / state step at once.
    fast = make_batch1_path(model, task, cfg, lambda s: lr_at(s, cfg.steps, cfg.optim), teachers, start) \
        if start < cfg.steps else None
    boundaries = sorted(ckpt_steps)
    step = start
    while step < cfg.steps:
        if fast is not None:
            done = fast.run(step, next_boundary(step, cfg, boundaries, state_every), task, schedule,
                            record["supervision"])
        else:
            done = step + 1
            ckpt = schedule.checkpoint(step)
            segments = record["supervision"]
            if not segments or segments[-1]["checkpoint"] != ckpt:
                segments.append({"start": step, "end": step + 1, "checkpoint": ckpt})
            else:
                segments[-1]["end"] = step + 1
            if cfg.optim.schedule != "constant" or cfg.optim.warmup:
                lr = lr_at(step, cfg.steps, cfg.optim)
                for group in opt.param_groups:
                    group["lr"] = lr
            batch = task.train_batch(step, cfg.batch_size)
            with autocast(device, cfg.precision):
                logits, targets = selected(model(batch.inputs).float(), batch.targets)
            teacher_logits = teachers.get(ckpt, step, batch)
            loss, kd = distillation_terms(logits, targets, teacher_logits, cfg.kd.alpha, cfg.kd.tau, cfg.kd.kind,
                                          cfg.kd.scale_tau2)
            losses.add(loss, kd)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
        point = None
        if done % cfg.eval_every == 0 or done == cfg.steps or done in ckpt_steps:
            point = evaluate(done)
            bar.set_postfix(loss=f"{point['loss']:.3f}", acc=f"{point['accuracy']:.3f}", refresh=False)
        if done in ckpt_steps:
            save_ckpt(done, point)
        bar.update(done - step)
        if stop_at is not None and done >= stop_at and done < cfg.steps:
            save_state(done)
            bar.close()
            for logger in loggers:
                logger.close()
            return record
        if done % state_every == 0 and done < cfg.steps:
            save_state(done)
        step = done
    bar.close()
    for logger in loggers:
        logger.close()
    write_json(out / "supervision.json", record["supervision"])
    if cfg.save_final and cfg.steps not in ckpt_steps:
        save_ckpt(cfg.steps, record["curve"][-1])
    write_json(out / "curve.json", record["curve"])  # last: a folder with curve.json holds a finished run
    if state_dir.exists():
        shutil.rmtree(state_dir)
    return record
