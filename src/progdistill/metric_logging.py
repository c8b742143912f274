"""Live training metrics: one small protocol, one class per backend (torchtune's metric_logging shape).

Every model's training writes `metrics.jsonl` in its run folder, one JSON line per evaluation:
`step`, `samples`, `train/loss` (mean training objective over the steps since the previous
evaluation; null at step 0), `train/kd_loss` (mean of the KD term over those steps; null without a
teacher), `teacher/checkpoint_step` (the checkpoint supervising the last step; null for CE and
teachers), `eval/loss`, `eval/accuracy`, `lr` (of the last step). `--log tensorboard` and `--log wandb`
(offline, never the network) also send the same scalars to TensorBoard and Weights & Biases. Logging
reads numbers, never changes one, and is not part of the recipe (nor of its hash).

metrics.jsonl stays consistent with the resumable state: a run resumed from step s first drops the lines
past s (written after the state it resumes from), so after a kill and resume the file equals an
uninterrupted run's, line for line. Lines are appended and fsynced one at a time; a line cut short by a
kill is dropped by the same repair.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch

from .io import write_text

BACKENDS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # backend -> the extra that provides it


class TrainingLosses:
    """Training losses since the last evaluation: summed on the device (no host sync per step), their
    means read at an evaluation (`means`), and kept in the resumable state (`state_dict`), so that a
    resumed run logs the same means as an uninterrupted one."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.load_state_dict({"steps": 0, "loss": 0.0, "kd_steps": 0, "kd": 0.0})

    def add(self, loss: torch.Tensor, kd: torch.Tensor | None) -> None:
        """One training step's objective and KD term (None without a teacher)."""
        self.loss_sum += loss.detach()
        self.steps += 1
        if kd is not None:
            self.kd_sum += kd.detach()
            self.kd_steps += 1

    def add_steps(self, loss_sum: torch.Tensor, kd_sum: torch.Tensor | None, steps: int) -> None:
        """`steps` training steps at once: the sums of their objectives and KD terms (None without a teacher)."""
        self.loss_sum += loss_sum.detach()
        self.steps += steps
        if kd_sum is not None:
            self.kd_sum += kd_sum.detach()
            self.kd_steps += steps

    def means(self) -> dict[str, float | None]:
        """{'train/loss', 'train/kd_loss'} over the steps since the last call (None where there were none);
        starts a new interval."""
        result = {"train/loss": float(self.loss_sum) / self.steps if self.steps else None,
                  "train/kd_loss": float(self.kd_sum) / self.kd_steps if self.kd_steps else None}
        self.load_state_dict({"steps": 0, "loss": 0.0, "kd_steps": 0, "kd": 0.0})
        return result

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "loss": float(self.loss_sum), "kd_steps": self.kd_steps, "kd": float(self.kd_sum)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self.kd_steps = state["steps"], state["kd_steps"]
        self.loss_sum = torch.tensor(state["loss"], dtype=torch.float32, device=self.device)
        self.kd_sum = torch.tensor(state["kd"], dtype=torch.float32, device=self.device)


class MetricLogger(Protocol):
    """A destination for scalars: `log_dict(step, metrics)` after every evaluation, `close()` at the end."""

    def log_dict(self, step: int, metrics: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlLogger:
    """metrics.jsonl in the run folder (always written). `resume_step`: the step training restarts
    from; lines past it are dropped first (all of them for a fresh start, resume_step 0 or None)."""

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        kept: list[str] = []
        if resume_step and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut short by a kill: it and anything after it are redone
                if not isinstance(entry, dict) or entry.get("step", resume_step + 1) > resume_step:
                    break
                kept.append(line)
        if kept or self.path.exists():
            write_text(self.path, "".join(line + "\n" for line in kept))

    def log_dict(self, step: int, metrics: dict[str, Any]) -> None:
        line = json.dumps({"step": step, **metrics}, allow_nan=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """TensorBoard event files under `<run folder>/tensorboard` (torch's SummaryWriter); a resumed run
    purges the events past its resume step, as metrics.jsonl does."""

    def __init__(self, folder: str | Path, resume_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder), purge_step=resume_step + 1 if resume_step else None)

    def log_dict(self, step: int, metrics: dict[str, Any]) -> None:
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(name, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A Weights & Biases run in offline mode under `<run folder>/wandb` (never the network; `wandb sync`
    uploads it later if you wish). A resumed training continues the same run id."""

    def __init__(self, folder: str | Path, name: str, resume_step: int | None = None) -> None:
        os.environ["WANDB_MODE"] = "offline"
        import wandb

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / "wandb-run-id"
        if resume_step and id_file.is_file():
            run_id = id_file.read_text().strip()
        else:
            run_id = secrets.token_hex(4)
            write_text(id_file, run_id + "\n")
        self.run = wandb.init(mode="offline", dir=str(folder), id=run_id, name=name, project="progdistill",
                              resume="allow", reinit="create_new", settings=wandb.Settings(silent=True, console="off", disable_git=True,
                                                                      x_disable_stats=True, save_code=False))

    def log_dict(self, step: int, metrics: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in metrics.items() if v is not None}, step=step)

    def close(self) -> None:
        self.run.finish()


def require_backends(backends: Sequence[str]) -> None:
    """Refuse, before anything is written, a backend that is unknown or whose extra is not installed.
    Raises ValueError naming the extra to install."""
    import importlib

    for name in backends:
        if name not in BACKENDS:
            raise ValueError(f"--log {name}: unknown backend; choose from {', '.join(BACKENDS)}")
        try:
            importlib.import_module("torch.utils.tensorboard" if name == "tensorboard" else "wandb")
        except ImportError:
            raise ValueError(f"--log {name} needs the '{BACKENDS[name]}' extra: pip install "
                             f"'progdistill[{BACKENDS[name]}]'") from None


def open_loggers(folder: str | Path, backends: Sequence[str], resume_step: int | None, name: str) -> list[MetricLogger]:
    """metrics.jsonl plus one logger per backend, for the run in `folder` (re)starting at `resume_step`."""
    require_backends(backends)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    loggers: list[MetricLogger] = [JsonlLogger(folder / "metrics.jsonl", resume_step)]
    for backend in dict.fromkeys(backends):
        if backend == "tensorboard":
            loggers.append(TensorBoardLogger(folder / "tensorboard", resume_step))
        elif backend == "wandb":
            loggers.append(WandbLogger(folder, name, resume_step))
    return loggers
