"""The Task interface: seeded batches made on the device, a fixed held-out set, evaluation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

IGNORE = -100  # target value of positions that carry no loss


@dataclass
class Batch:
    """Model inputs and per-position targets; positions with target IGNORE carry no loss."""

    inputs: torch.Tensor
    targets: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])


def seeded_generator(device: torch.device, *keys: int) -> torch.Generator:
    """A torch Generator whose state depends only on the integer keys (same in every process)."""
    seed = 0
    for key in keys:
        seed = (seed * 1_000_003 + int(key) + 1) % (2**63 - 1)
    return torch.Generator(device=device).manual_seed(seed)


def selected(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, C] and targets [N] of the positions that carry a loss."""
    keep = targets != IGNORE
    return logits[keep], targets[keep]


class Task(ABC):
    """A learning problem: makes training batches, holds a held-out set, evaluates a model."""

    name: str
    device: torch.device

    @abstractmethod
    def model_io(self) -> dict[str, Any]:
        """What a model must accept and produce (input_dim / seq_len / vocab_size / num_classes)."""

    @abstractmethod
    def train_batch(self, step: int, batch_size: int) -> Batch:
        """The training batch of `step`: a pure function of (task seed, step, batch size)."""

    @abstractmethod
    def eval_batches(self) -> list[Batch]:
        """The fixed held-out set, in batches."""

    def samples_per_step(self, batch_size: int) -> int:
        return batch_size

    def probes(self) -> dict[str, Callable[..., dict]]:
        """Named curriculum probes this task owns: name -> fn(model, **options) -> results."""
        return {}

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Held-out cross-entropy and top-1 accuracy over the positions that carry a loss."""
        was_training = model.training
        model.eval()
        total_loss, correct, count = 0.0, 0, 0
        for batch in self.eval_batches():
            logits, targets = selected(model(batch.inputs), batch.targets)
            total_loss += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
            correct += int((logits.argmax(-1) == targets).sum())
            count += int(targets.numel())
        model.train(was_training)
        return {"loss": total_loss / max(count, 1), "accuracy": correct / max(count, 1)}

    def inputs(self) -> dict[str, str]:
        """Hashes of what defines the task beyond its config (files it reads, what it derives from
        them), keyed by name; stored in run.json, and a run folder written with other values is refused."""
        return {}

    def artifacts(self) -> dict[str, str | dict[str, Any]]:
        """Files the task derives from its inputs, written once into the run folder: name -> text, or a
        JSON-serialisable dict (a text task's tokenizer.json and corpus statistics)."""
        return {}
