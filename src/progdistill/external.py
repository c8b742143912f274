"""Teacher trajectories written outside progdistill: a `transformers.Trainer` output folder, or revisions
of a Hugging Face hub repository in the local cache (the [hf] extra).

`teacher.path` may be
(a) a folder of `checkpoint-N` subfolders as `transformers.Trainer` writes them: each holds
    `config.json` and `model.safetensors` (or `model.safetensors.index.json` and its shards); the
    teacher's curve is read from `trainer_state.json`'s `log_history` (the eval entries with
    `eval_loss` and `eval_accuracy`) when it has them;
(b) a list of `repo@revision` entries (Pythia, OLMo and MultiBERTs publish intermediate checkpoints as
    revisions), read with `from_pretrained(repo, revision=..., local_files_only=True)` from the local
    Hugging Face cache (`HF_HUB_CACHE`, or `HF_HOME`/hub): progdistill never downloads. Each revision's
    step is given in `teacher.revision_steps` or read from its name (`step1000` -> 1000).
Without usable eval entries the curve is evaluated by progdistill on the task, once, and cached in the
run folder; nothing is ever written into the trajectory's folder.

Only `config.json`, the safetensors files and `trainer_state.json` are read (and, by `from_pretrained`,
a `generation_config.json` if present; all JSON or safetensors). The Trainer's pickled files
(`optimizer.pt`, `scheduler.pt`, `rng_state.pth`, `training_args.bin`) are never opened; a checkpoint
that has only `pytorch_model.bin` is read with `torch.load(weights_only=True)`, which refuses anything
but tensors.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .io import CheckpointError, read_derived_json, write_json
from .models import hf
from .trajectory import Trajectory

_CKPT = re.compile(r"^checkpoint-(\d+)$")
_REVISION = re.compile(r"^([A-Za-z0-9][\w.-]*(?:/[\w.-]+)?)@(\S+)$")
_SAFETENSORS, _INDEX, _BIN = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"
_KINDS = {"ForMaskedLM": "AutoModelForMaskedLM", "ForCausalLM": "AutoModelForCausalLM", "LMHeadModel": "AutoModelForCausalLM",
          "ForSequenceClassification": "AutoModelForSequenceClassification"}


class TrajectoryError(CheckpointError):
    """A trajectory from outside that cannot be used (one line, naming the folder or entry)."""


# --- where the checkpoints are -------------------------------------------------------------
def step_of_revision(revision: str) -> int | None:
    """The training step in a revision's name: the number after 'step' (Pythia's step1000, OLMo's
    step1000-tokens4B), else its only run of digits; None for a commit hash or an ambiguous name."""
    if re.fullmatch(r"[0-9a-f]{7,40}", revision):
        return None
    match = re.search(r"step[_-]?(\d+)", revision, re.IGNORECASE)
    if match:
        return int(match.group(1))
    runs = re.findall(r"\d+", revision)
    return int(runs[0]) if len(runs) == 1 else None


def parse_revisions(entries: list[str], steps: dict[str, int] | None = None) -> list[tuple[int, str, str]]:
    """(step, repo, revision) of `repo@revision` entries, sorted by step. A revision's step is
    `steps[revision]` (or `steps['repo@revision']`), else read from its name. Raises ValueError."""
    if not entries:
        raise ValueError("path: an empty list of repo@revision entries")
    steps = steps or {}
    out, seen = [], {}
    for i, entry in enumerate(entries):
        match = _REVISION.match(entry)
        if not match:
            raise ValueError(f"path[{i}] {entry!r}: not of the form repo@revision (e.g. EleutherAI/pythia-70m@step1000)")
        repo, revision = match.groups()
        step = steps.get(entry, steps.get(revision, step_of_revision(revision)))
        if step is None:
            raise ValueError(f"path[{i}] {entry!r}: no training step in the revision's name; give it in "
                             f"teacher.revision_steps ({{{revision}: STEP}})")
        if step < 0 or step in seen:
            raise ValueError(f"path[{i}] {entry!r}: step {step} " + (f"is also {seen[step]!r}'s" if step in seen
                                                                       else "is negative"))
        seen[step] = entry
        out.append((step, repo, revision))
    unused = set(steps) - {e for e in entries} - {e.split("@", 1)[1] for e in entries}
    if unused:
        raise ValueError(f"revision_steps: {sorted(unused)} name no entry of path")
    return sorted(out)


def hub_cache_dir() -> str:
    """The local Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else the default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


@dataclass(frozen=True)
class Source:
    """One checkpoint: the folder its files are read from, and what `from_pretrained` is given."""

    step: int
    folder: Path
    name: str  # for messages: the folder or repo@revision
    repo: str | None = None
    revision: str | None = None


def trajectory_kind(path: str | list[str]) -> str:
    """'hub' (a list of repo@revision), 'native' (progdistill checkpoints, with meta.json) or 'trainer'
    (checkpoint-N folders with a config.json and no meta.json). Raises TrajectoryError."""
    if isinstance(path, list):
        return "hub"
    root = Path(path)
    if not root.is_dir():
        raise TrajectoryError(f"teacher.path {root}: " + ("a file, not a folder of checkpoints" if root.exists()
                                                           else "no such folder"))
    children = [c for c in root.iterdir() if _CKPT.match(c.name) and c.is_dir()]
    if any((c / "meta.json").is_file() for c in children):
        return "native"
    if any((c / "config.json").is_file() for c in children):
        return "trainer"
    raise TrajectoryError(f"teacher.path {root}: no checkpoint-<step> folders with a meta.json (progdistill) or a "
                          "config.json (transformers.Trainer)")


def trainer_sources(root: Path) -> list[Source]:
    """The checkpoint-N folders of a Trainer output folder, by step."""
    found = sorted((int(m.group(1)), c) for c in root.iterdir() if c.is_dir() and (m := _CKPT.match(c.name)))
    return [Source(step, folder, str(folder)) for step, folder in found]


def hub_sources(entries: list[str], steps: dict[str, int] | None) -> list[Source]:
    """The local snapshot folder of each repo@revision entry (never downloads). Raises TrajectoryError."""
    hf.require_transformers()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache, out = hub_cache_dir(), []
    try:
        revisions = parse_revisions(entries, steps)
    except ValueError as e:
        raise TrajectoryError(f"teacher.{e}") from None
    for step, repo, revision in revisions:
        name = f"{repo}@{revision}"
        try:
            folder = Path(snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError):
            raise TrajectoryError(f"teacher.path {name}: not in the local Hugging Face cache {cache}; "
                                  f"progdistill never downloads: fetch it first (hf download {repo} --revision "
                                  f"{revision}) or point HF_HUB_CACHE at the cache that has it") from None
        out.append(Source(step, folder, name, repo, revision))
    return out


# --- validation -----------------------------------------------------------------------------
def _file_shapes(folder: Path, name: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a checkpoint's weights, from the safetensors headers (or a
    pytorch_model.bin read with weights_only=True). Raises TrajectoryError."""
    from safetensors import SafetensorError, safe_open

    def header(file: Path) -> dict[str, tuple[int, ...]]:
        try:
            with safe_open(str(file), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except (SafetensorError, OSError) as e:
            raise TrajectoryError(f"{file}: not a readable safetensors file: {hf._first_line(e)}") from None

    if (folder / _SAFETENSORS).is_file():
        return header(folder / _SAFETENSORS)
    if (folder / _INDEX).is_file():
        try:
            weight_map = json.loads((folder / _INDEX).read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TrajectoryError(f"{folder / _INDEX}: not a safetensors index ({hf._first_line(e)})") from None
        shapes: dict[str, tuple[int, ...]] = {}
        for shard in sorted(set(weight_map.values())):
            if "/" in shard or not (folder / shard).is_file():
                raise TrajectoryError(f"{folder / _INDEX}: shard {shard} is missing")
            shapes.update(header(folder / shard))
        return shapes
    if (folder / _BIN).is_file():
        try:
            state = torch.load(folder / _BIN, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # weights_only refuses any pickle that is not plain tensors
            raise TrajectoryError(f"{folder / _BIN}: refused: not a plain-tensor pytorch_model.bin "
                                  f"(read with weights_only=True: {hf._first_line(e)})") from None
        return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    raise TrajectoryError(f"{name}: no weights ({_SAFETENSORS}, {_INDEX} or {_BIN})")


def _config(source: Source) -> dict[str, Any]:
    file = source.folder / "config.json"
    if not file.is_file():
        raise TrajectoryError(f"{source.name}: no config.json")
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise TrajectoryError(f"{file}: not valid JSON ({hf._first_line(e)})") from None
    if not isinstance(config, dict) or "progdistill" in config:
        raise TrajectoryError(f"{file}: a progdistill checkpoint without its meta.json, not a transformers one "
                              "(convert it with `progdistill export`)")
    return config


def _architecture(config: dict[str, Any], model_class: str | None, name: str) -> str:
    """The transformers class that loads the checkpoints: `model_class` if given, else config.json's
    `architectures[0]` if it is a masked LM, causal LM or sequence classifier."""
    if model_class:
        return model_class
    archs = config.get("architectures") or []
    if archs and any(archs[0].endswith(suffix) for suffix in _KINDS):
        return archs[0]
    what = f"architectures {archs} is not" if "architectures" in config else "has no architectures entry naming"
    raise TrajectoryError(f"{name}/config.json: {what} a masked LM, causal LM or sequence "
                          "classifier; name the class that loads them with teacher.model: {type: hf, class: AutoModelForMaskedLM} "
                          "(or AutoModelForCausalLM, AutoModelForSequenceClassification)")


def auto_class(architecture: str) -> str:
    """The Auto class of a transformers class name (itself if it is one)."""
    if architecture in hf.HF_CLASSES:
        return architecture
    return next(auto for suffix, auto in _KINDS.items() if architecture.endswith(suffix))


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in hf._NOT_CONFIG}


def validate_sources(sources: list[Source], io: dict[str, Any], model_class: str | None) -> tuple[str, dict[str, Any]]:
    """Check every checkpoint before anything is written: a config.json, the same architecture in all,
    one that fits the task's io, and weights whose names and shapes are the model's. Returns
    (transformers class name, config dict). Raises TrajectoryError naming the checkpoint."""
    if not sources:
        raise TrajectoryError("teacher.path: no checkpoints")
    transformers = hf.require_transformers()
    first = _config(sources[0])
    architecture = _architecture(first, model_class, sources[0].name)
    if not hasattr(transformers, architecture):
        raise TrajectoryError(f"{sources[0].name}: transformers has no class {architecture}")
    for source in sources[1:]:
        other = _config(source)
        changed = sorted(k for k in set(_comparable(first)) | set(_comparable(other)) if first.get(k) != other.get(k))
        if changed:
            raise TrajectoryError(f"{source.name}/config.json: not the architecture of {sources[0].name} "
                                  f"(differs in {', '.join(changed[:5])})")
    try:
        config = hf.config_from_dict(first)
    except ValueError as e:
        raise TrajectoryError(f"{sources[0].name}/config.json: {e}") from None
    problems = hf.io_problems(auto_class(architecture), hf.config_io(config), io, check_pad=False)
    if problems:
        raise TrajectoryError(f"teacher.path {sources[0].name}: its model does not fit the task: {'; '.join(problems)}")
    shapes, aliases = hf.expected_shapes(architecture, config)
    for source in sources:
        found = _file_shapes(source.folder, source.name)
        missing = [k for k in shapes if k not in found and not any(a in found for a in aliases.get(k, []))]
        wrong = [f"{k} {found[k]} (the config says {shapes[k]})" for k in shapes if k in found and found[k] != shapes[k]]
        if missing or wrong:
            what = (f"{len(missing)} weights missing ({', '.join(missing[:3])})" if missing
                    else f"wrong shapes: {', '.join(wrong[:3])}")
            raise TrajectoryError(f"{source.name}: its weights do not match its config.json: {what}")
    return architecture, first


def trainer_curve(root: Path, sources: list[Source]) -> list[dict[str, Any]] | None:
    """The eval curve in the most advanced trainer_state.json (the root's or a checkpoint's): points
    {step, loss, accuracy[, samples]} from log_history entries with eval_loss and eval_accuracy, up to the last
    checkpoint; None if it has none."""
    states = []
    for file in [root / "trainer_state.json"] + [s.folder / "trainer_state.json" for s in sources]:
        if file.is_file():
            try:
                state = json.loads(file.read_text())
                states.append((int(state.get("global_step", 0)), state.get("log_history", []), file,
                               state.get("train_batch_size")))
            except (OSError, ValueError, TypeError, AttributeError) as e:
                raise TrajectoryError(f"{file}: not a readable trainer_state.json ({hf._first_line(e)})") from None
    if not states:
        return None
    _, history, file, batch = max(states, key=lambda s: s[0])
    per_step = batch if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0 else None
    last = sources[-1].step
    points: dict[int, dict[str, Any]] = {}
    for entry in history if isinstance(history, list) else []:
        if isinstance(entry, dict) and {"eval_loss", "eval_accuracy", "step"} <= set(entry) and entry["step"] <= last:
            points[int(entry["step"])] = {"step": int(entry["step"]), "loss": float(entry["eval_loss"]),
                                          "accuracy": float(entry["eval_accuracy"])}
            if per_step is not None:  # the Trainer's batch per device and step (one device assumed)
                points[int(entry["step"])]["samples"] = int(entry["step"]) * per_step
    return [points[s] for s in sorted(points)] or None


# --- the trajectory -------------------------------------------------------------------------
class ExternalTrajectory(Trajectory):
    """A validated trajectory of `transformers` checkpoints, read like a progdistill one: `steps`,
    `load(step)` (an `HFModel`), `meta(step)`, `curve()`."""

    def __init__(self, sources: list[Source], architecture: str, config: dict[str, Any], pad_id: int | None,
                 curve: list[dict[str, Any]] | None, root: Path | None = None) -> None:
        self.root = root  # type: ignore[assignment]  # None for hub revisions
        self.sources = {s.step: s for s in sources}
        self.steps = sorted(self.sources)
        self.architecture, self.config, self.pad_id = architecture, config, pad_id
        self.curve_from = "trainer_state.json" if curve else None
        self._curve = curve

    def path(self, step: int) -> Path:
        if step not in self.sources:
            raise CheckpointError(f"no checkpoint at step {step} (have {self.steps[:5]}...)")
        return self.sources[step].folder

    def meta(self, step: int) -> dict[str, Any]:
        self.path(step)
        source = self.sources[step]
        point = next((p for p in self._curve or [] if p["step"] == step), None)
        meta: dict[str, Any] = {"step": step, "source": source.name,
                                "model": {"type": "hf", "class": self.architecture, "config": self.config}}
        if point is not None:
            meta["eval"] = {"loss": point["loss"], "accuracy": point["accuracy"]}
        return meta

    def load(self, step: int, device: str | torch.device = "cpu") -> nn.Module:
        """The checkpoint of `step`, read by `from_pretrained` (offline), wrapped to take the task's inputs."""
        self.path(step)
        source = self.sources[step]
        transformers = hf.require_transformers()
        cls = getattr(transformers, self.architecture)
        if source.repo is not None:
            model = hf.load_pretrained(cls, source.repo, source.revision, hub_cache_dir(), folder=source.folder)
        else:
            model = hf.load_pretrained(cls, source.folder)
        return hf.HFModel(model, self.pad_id).to(device).eval()

    def curve(self) -> list[dict[str, Any]]:
        if self._curve is None:
            raise CheckpointError("this trajectory's curve has not been evaluated yet (evaluate_curve)")
        return self._curve

    def evaluate_curve(self, task: Any, cache: Path, device: str = "cpu", progress: bool = False) -> None:
        """Without a curve from trainer_state.json: evaluate every checkpoint on the task's held-out set,
        or read the result from `cache` (a file in the run folder) if it was made for these checkpoints."""
        if self._curve is not None:
            return
        names = [self.sources[s].name for s in self.steps]
        saved = read_derived_json(cache, dict, "evaluating the checkpoints again")  # a derived file: unreadable, redone
        if saved is not None and saved.get("checkpoints") == names:
            self._curve = saved["curve"]
            return
        curve = []
        for step in tqdm(self.steps, desc="evaluate teacher checkpoints", disable=not progress, leave=False):
            curve.append({"step": step, **task.evaluate(self.load(step, device))})
        write_json(cache, {"checkpoints": names, "curve": curve})
        self._curve = curve


def open_trajectory(path: str | list[str], io: dict[str, Any], revision_steps: dict[str, int] | None = None,
                    model_class: str | None = None) -> ExternalTrajectory:
    """Find and validate a trajectory from outside (see the module docstring) for a task with model io
    `io`; its curve is read from trainer_state.json if there (else see `evaluate_curve`). Reads no
    weights beyond the safetensors headers. Raises TrajectoryError (one line) or MissingExtraError."""
    kind = trajectory_kind(path)
    if kind == "native":
        raise TrajectoryError(f"teacher.path {path}: a progdistill trajectory (use Trajectory)")
    if kind == "hub":
        sources = hub_sources(list(path), revision_steps)
        root = None
    else:
        root = Path(path)  # type: ignore[arg-type]
        sources = trainer_sources(root)
    architecture, config = validate_sources(sources, io, model_class)
    curve = trainer_curve(root, sources) if root is not None else None
    return ExternalTrajectory(sources, architecture, config, io.get("pad_id"), curve, root)
