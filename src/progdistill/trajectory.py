"""A teacher's trajectory: saved checkpoints, its eval curve, and phase-transition detection.

Layout of a trajectory folder:
    checkpoint-{step}/model.safetensors   weights (a Hugging Face model's: under its own key names)
    checkpoint-{step}/config.json         a Hugging Face model's config; for a built-in model, one that
                                          makes `from_pretrained` fail loudly, naming `progdistill export`
    checkpoint-{step}/meta.json           step, samples seen, eval metrics, architecture, config hash
    curve.json                            every evaluation of the run: [{step, samples, loss, accuracy}]

Trajectories written outside progdistill (a `transformers.Trainer` output folder, hub revisions) are
read by `external.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .io import CheckpointError, load_tensors, read_json, save_tensors, write_json, write_text
from .models import build_model, checkpoint_files, load_weights

_CKPT = re.compile(r"^checkpoint-(\d+)$")
_GAUSSIAN_MAD = 0.6744897501960817  # median |x| / sigma for Gaussian x (its 75th percentile)


def save_checkpoint(folder: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write weights, config.json, then metadata (the metadata file marks the checkpoint complete);
    `meta['model']` is the resolved architecture."""
    folder = Path(folder)
    weights, metadata, config = checkpoint_files(model, meta.get("model", {}))
    save_tensors(folder / "model.safetensors", weights, metadata)
    write_text(folder / "config.json", config)
    write_json(folder / "meta.json", meta)
    return folder


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved in a checkpoint folder (or its model.safetensors) in eval mode.

    meta.json's `model` entry names the architecture: a built-in `type` or the import path
    `package.module:Class` of a user's model, with its constructor keywords (see `models.build_model`).
    Raises CheckpointError if the folder, its files or the model's class cannot be read or imported.
    """
    folder = Path(path)
    if folder.name == "model.safetensors":
        folder = folder.parent
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    meta = read_json(folder / "meta.json")
    if "model" not in meta:
        raise CheckpointError(f"{folder}/meta.json: no 'model' architecture entry")
    arch = meta["model"]
    try:
        model = build_model({**arch, "path": None} if isinstance(arch, dict) and arch.get("type") == "hf" else arch)
    except ValueError as e:
        raise CheckpointError(f"{folder}/meta.json: cannot rebuild its model: {e}") from None
    state = load_tensors(folder / "model.safetensors")
    try:
        load_weights(model, state, str(folder / "model.safetensors"))
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"{folder}: weights do not match the architecture in meta.json: {e}") from None
    return model.to(device).eval()


class Trajectory:
    """Read access to a teacher's saved checkpoints and curve."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise CheckpointError(f"{self.root}: no such trajectory folder")
        steps = []
        for child in self.root.iterdir():
            m = _CKPT.match(child.name)
            if m and (child / "meta.json").is_file():
                steps.append(int(m.group(1)))
        if not steps:
            raise CheckpointError(f"{self.root}: no complete checkpoint-<step> folders")
        self.steps: list[int] = sorted(steps)

    @property
    def final_step(self) -> int:
        return self.steps[-1]

    def path(self, step: int) -> Path:
        if step not in self.steps:
            raise CheckpointError(f"{self.root}: no checkpoint at step {step} (have {self.steps[:5]}...)")
        return self.root / f"checkpoint-{step}"

    def meta(self, step: int) -> dict[str, Any]:
        return read_json(self.path(step) / "meta.json")

    def load(self, step: int, device: str | torch.device = "cpu") -> nn.Module:
        return load_checkpoint(self.path(step), device)

    def curve(self) -> list[dict[str, Any]]:
        """The teacher's eval curve (curve.json; else the checkpoints' metrics): a non-empty list of objects
        with a number `step`, `loss` and `accuracy` (null for a NaN). Raises CheckpointError naming the file
        for anything else."""
        file = self.root / "curve.json"
        if file.is_file():
            curve, where = read_json(file), str(file)
        else:
            curve = [{"step": s, **(self.meta(s).get("eval") or {})} for s in self.steps]
            where = f"{self.root}/checkpoint-*/meta.json 'eval'"
        if not isinstance(curve, list) or not curve:
            raise CheckpointError(f"{where}: expected a non-empty list of evaluations, got {type(curve).__name__}")
        for i, point in enumerate(curve):
            if not isinstance(point, dict):
                raise CheckpointError(f"{where}: entry {i} is a {type(point).__name__}, not an object")
            for key in ("step", "loss", "accuracy"):
                value = point.get(key)
                if key not in point or isinstance(value, bool) or not isinstance(value, (int, float)) and not (
                        value is None and key != "step"):  # null: a NaN loss
                    raise CheckpointError(f"{where}: entry {i} has no number '{key}' (got {value!r})"[:300])
        return curve


@dataclass(frozen=True)
class Phases:
    """Teacher phases: plateau [0, drop_start), sharp drop [drop_start, drop_end], slow decline after."""

    drop_start: int
    drop_end: int
    middle: int
    metric: str

    def to_dict(self) -> dict[str, Any]:
        return {"drop_start": self.drop_start, "drop_end": self.drop_end, "middle": self.middle,
                "metric": self.metric}


def loss_spikes(curve: list[dict[str, Any]], factor: float = 2.0) -> list[dict[str, Any]]:
    """Evaluations whose held-out loss is above `factor` x the lowest loss before them: an unstable run
    (too high a learning rate, say) that stayed finite, so training went on."""
    spikes, best = [], float("inf")
    for point in curve:
        if point["loss"] > factor * best:
            spikes.append({"step": point["step"], "loss": point["loss"], "best_before": best})
        best = min(best, point["loss"])
    return spikes


def detect_phases(curve: list[dict[str, Any]], metric: str = "loss", window: float = 0.05,
                  threshold: float = 0.25, skip: float = 0.05, sharpness: float = 2.0,
                  noise: float = 8.0) -> Phases:
    """Find the steepest drop of `metric` (rise, for accuracy) in an eval curve.

    The first `skip` x (run length) is ignored: the fast fall from a random initialisation to the
    label marginals is not the phase transition. The curve is replaced by its running best (running
    minimum of the loss), so noise and loss spikes do not count as progress, and linearly interpolated
    on a uniform grid. The drop's centre is where it falls most over a window of `window` x (run
    length); the drop phase extends on both sides while the windowed rate stays above `threshold` x the
    peak rate. `middle` is where the metric crosses half way between its values at the two ends.

    The drop found must be a sharp drop, not noise or a steady decline. With `fall` = the running best's
    fall from the drop's start to its end, both must hold, else there is no phase transition:
      - sharp: `fall` / (the running best's fall over the whole kept curve) >= `sharpness` x (the drop's
        length / the kept run's length), i.e. the drop is on average at least `sharpness` times as
        steep as the curve (a straight or slowly curving decline is about 1);
      - above the noise: `fall` >= `noise` x sigma, sigma = median |step-to-step change| of the kept
        curve (its raw values) / (sqrt(2) x 0.6745), the standard deviation of Gaussian noise that
        would give those changes. On a plateau the changes are its noise; the few evaluations of a sharp
        drop do not move the median; a slow trend counts as noise, which errs towards no transition.
        The running best of a curve that is flat plus noise falls a few sigma at most.
    Raises ValueError ending "no phase transition to detect" when either fails or the metric never
    falls; ValueError also for fewer than 4 finite points after the skip.
    """
    first = curve[0]["step"] + skip * (curve[-1]["step"] - curve[0]["step"])
    points = [p for p in curve if p["step"] >= first]
    steps = np.array([p["step"] for p in points], dtype=float)
    values = np.array([p[metric] for p in points], dtype=float)
    if len(steps) < 4 or not np.all(np.isfinite(values)):
        raise ValueError(f"need >= 4 finite points of {metric!r} to detect phases, got {len(steps)}")
    if metric != "loss":
        values = -values  # work with something that falls
    sigma = float(np.median(np.abs(np.diff(values)))) / (np.sqrt(2) * _GAUSSIAN_MAD)
    values = np.minimum.accumulate(values)
    grid = np.linspace(steps[0], steps[-1], 1001)
    v = np.interp(grid, steps, values)
    half = max(1, int(round(window * 1000 / 2)))
    padded = np.concatenate([np.full(half, v[0]), v, np.full(half, v[-1])])
    rate = padded[: len(v)] - padded[2 * half:]  # fall over a window centred at each grid point
    centre = int(np.argmax(rate))
    falls, declines, drop = ("falls", "declines", "drop") if metric == "loss" else ("rises", "rises", "rise")
    if rate[centre] <= 0:
        raise ValueError(f"{metric!r} never {falls}: no phase transition to detect")
    low = rate < threshold * rate[centre]
    start = centre
    while start > 0 and not low[start - 1]:
        start -= 1
    end = centre
    while end < len(v) - 1 and not low[end + 1]:
        end += 1
    fall, total = float(v[start] - v[end]), float(v[0] - v[-1])
    where = f"its steepest stretch (steps {int(round(grid[start])):,}–{int(round(grid[end])):,})"
    steepness = (fall / total) / (max(end - start, 1) / (len(v) - 1))
    if steepness < sharpness:
        raise ValueError(f"{metric!r} {declines} without a sharp {drop}: {where} {falls} {steepness:.2f}x as fast as "
                         f"the curve on average (phases.sharpness needs {sharpness:g}x): no phase transition to detect")
    if fall < noise * sigma:
        raise ValueError(f"{metric!r} {falls} by only {fall:.3g} in {where}, {fall / sigma:.1f}x its evaluation noise "
                         f"{sigma:.3g} (phases.noise needs {noise:g}x): no phase transition to detect")
    midway = (v[start] + v[end]) / 2
    after = np.nonzero(v[start:end + 1] <= midway)[0]
    middle = start + (int(after[0]) if len(after) else (end - start) // 2)
    return Phases(int(round(grid[start])), int(round(grid[end])), int(round(grid[middle])), metric)
