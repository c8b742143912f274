"""`progdistill export`: a checkpoint, or a whole teacher trajectory, as `transformers` folders.

A checkpoint folder becomes OUT_DIR/config.json + OUT_DIR/model.safetensors, which
`AutoModelFor*.from_pretrained(OUT_DIR)` loads: the built-in `gpt-lm` as a `GPT2LMHeadModel`, a `bert`
with `layout: hf` as a `BertForMaskedLM` (key maps in `models.convert`), a Hugging Face model as the
files it already has. A trajectory folder (checkpoint-N subfolders and curve.json) becomes a folder laid
out as `transformers.Trainer` writes one: OUT_DIR/checkpoint-N/ for every checkpoint, each with a
`trainer_state.json` whose `log_history` holds the teacher's held-out curve up to N (`eval_loss`,
`eval_accuracy`), so that `teacher.path: OUT_DIR` reads the same trajectory and the same curve.

Everything is converted (and every refusal raised) before the first file is written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from .io import CheckpointError, check_names, load_tensors, read_json, save_tensors, write_json, write_text
from .models.convert import ConversionError, export_refusal, to_transformers
from .trajectory import Trajectory


def convert_checkpoint(folder: str | Path) -> tuple[dict[str, Any] | str, dict[str, torch.Tensor]]:
    """(config.json dict, or its text for a Hugging Face model; state dict under transformers names) of a
    progdistill checkpoint folder. Raises CheckpointError (one line) for a model without an exact equivalent."""
    folder = Path(folder)
    meta = read_json(folder / "meta.json")
    arch = meta.get("model")
    if not isinstance(arch, dict):
        raise CheckpointError(f"{folder}/meta.json: no 'model' architecture entry")
    refusal = export_refusal(arch)
    if refusal is not None:
        raise CheckpointError(f"{folder}: cannot export: {refusal}")
    state = load_tensors(folder / "model.safetensors")
    if arch["type"] == "hf":
        return (folder / "config.json").read_text(), state
    try:
        return to_transformers(state, arch)
    except ConversionError as e:
        raise CheckpointError(f"{folder}: cannot export: {e}") from None


def _write(out: Path, config: dict[str, Any] | str, state: dict[str, torch.Tensor]) -> None:
    save_tensors(out / "model.safetensors", state, {"format": "pt"})
    write_text(out / "config.json", config if isinstance(config, str) else json.dumps(config, indent=2) + "\n")


def export_checkpoint(folder: str | Path, out: str | Path) -> Path:
    """Write the `transformers` equivalent of a progdistill checkpoint folder to `out` (config.json +
    model.safetensors). Raises CheckpointError."""
    config, state = convert_checkpoint(folder)
    _write(Path(out), config, state)
    return Path(out)


def trainer_state(curve: list[dict[str, Any]], step: int) -> dict[str, Any]:
    """A trainer_state.json as `transformers.Trainer` writes it at `step`, with the held-out curve up to
    `step` as eval entries of its log_history."""
    history = [{"step": p["step"], "eval_loss": p["loss"], "eval_accuracy": p["accuracy"]}
               for p in curve if p["step"] <= step and "loss" in p and "accuracy" in p]
    return {"global_step": step, "max_steps": curve[-1]["step"] if curve else step, "log_history": history,
            "best_metric": None, "best_model_checkpoint": None, "is_world_process_zero": True,
            "exported_by": "progdistill export"}


def export_trajectory(root: str | Path, out: str | Path) -> Path:
    """Write every checkpoint of a progdistill trajectory folder as a `transformers.Trainer`-style folder
    (see the module docstring). Raises CheckpointError before writing anything if one cannot be exported."""
    trajectory = Trajectory(root)
    curve = trajectory.curve()
    for step in trajectory.steps:  # every refusal before the first file (one checkpoint in memory at a time)
        convert_checkpoint(trajectory.path(step))
    out = Path(out)
    for step in trajectory.steps:
        _write(out / f"checkpoint-{step}", *convert_checkpoint(trajectory.path(step)))
        write_json(out / f"checkpoint-{step}" / "trainer_state.json", trainer_state(curve, step))
    return out


_EXPORTED = {"config.json", "model.safetensors", "trainer_state.json"}


def _refuse_foreign_files(out: Path, trajectory: bool) -> None:
    """CheckpointError if `out` holds anything an export does not write (a user's files would be mixed with,
    or overwritten by, the export); an earlier export there is overwritten."""
    if not out.is_dir():
        if out.exists():
            raise CheckpointError(f"{out}: a file, not a folder to export into")
        return
    foreign = []
    for entry in sorted(out.iterdir()):
        if trajectory and entry.is_dir() and re.fullmatch(r"checkpoint-\d+", entry.name):
            foreign += [f"{entry.name}/{e.name}" for e in sorted(entry.iterdir()) if e.name not in _EXPORTED]
        elif trajectory or entry.name not in _EXPORTED:
            foreign.append(entry.name)
    if foreign:
        raise CheckpointError(f"{out} holds files an export does not write ({', '.join(foreign[:3])}"
                              f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty folder")


def export(source: str | Path, out: str | Path) -> Path:
    """`progdistill export SOURCE OUT_DIR`: a checkpoint folder (with meta.json) or a trajectory folder (with
    checkpoint-N subfolders). Raises CheckpointError."""
    source, out = Path(source), Path(out)
    check_names(out)
    if (source / "meta.json").is_file():
        _refuse_foreign_files(out, trajectory=False)
        return export_checkpoint(source, out)
    if source.is_dir() and any(c.name.startswith("checkpoint-") and (c / "meta.json").is_file() for c in source.iterdir()):
        _refuse_foreign_files(out, trajectory=True)
        return export_trajectory(source, out)
    raise CheckpointError(f"{source}: not a progdistill checkpoint folder (with meta.json) nor a trajectory folder "
                          "(with checkpoint-<step> subfolders)")
