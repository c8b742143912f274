"""The Task interface: seeded batches made on the device, a fixed held-out set, evaluation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..models.hf import as_task_model
from ..models.outputs import logits_of

IGNORE = -100  # target value of positions that carry no loss


@dataclass
class Batch:
    """Model inputs [B, ...] and targets, int64 [B] or [B, T]; positions with target IGNORE carry no loss."""

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
    """Logits [N, C] and targets [N] of the positions that carry a loss (`logits` [..., C], `targets` [...]
    of the same leading shape). Where every position carries one, the inputs themselves, flattened."""
    keep = targets != IGNORE
    if bool(keep.all()):  # (boolean indexing would copy them)
        return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    return logits[keep], targets[keep]


class Task(ABC):
    """A learning problem: makes training batches, holds a held-out set, evaluates a model.

    Subclass it to bring your own data (or use `TensorTask` / `DatasetTask`, which implement it over
    tensors or a map-style `torch.utils.data.Dataset`). The protocol:

    - Constructor: progdistill calls it with the recipe's keywords plus `data_seed` (int: which
      training stream; the teacher gets `teacher.seed`, student seed s gets 1000 + s) and `device`
      (str: where batches are made). Anything that defines the problem itself (the held-out set, a
      random support) must depend on the recipe's keywords only, never on `data_seed`: teacher and
      students are scored on the same held-out set.
    - `model_io()` -> dict: what a model must accept and produce, by name: `input_dim` (features of a
      vector input), `seq_len` (tokens per sequence), `vocab_size` (token ids in [0, vocab_size)),
      `num_classes` (logits per prediction; a language model's vocabulary), `pad_id`, and anything
      else. Built-in models take the names they need; a model imported by path receives every entry
      whose name matches a constructor parameter the recipe does not set.
    - `train_batch(step, batch_size)` -> Batch: inputs [B, ...] (float features or int64 token ids) on
      `device`, and targets int64, [B] (one label per example) or [B, T] (one per position), with
      `IGNORE` (-100) where there is no loss (unmasked tokens, padding). The model maps inputs to
      logits [B, C] or [B, T, C]. The batch must be a pure function of (the task's keywords,
      `data_seed`, `step`, `batch_size`): never of how many batches were drawn before or of a global
      RNG. That is what makes an interrupted run resume bit-identically, and lets every student of a
      seed share the teacher's cached outputs on its batches (`teacher-outputs/`).
    - `eval_batches()` -> list[Batch]: the fixed held-out set (same shapes and rules), the same list on
      every call; `evaluate` reports cross-entropy and accuracy over its non-IGNORE targets.
    - `samples_per_step(batch_size)` -> int: examples per step, for samples-to-target (default B).
    - `probes()` -> {name: fn(model, **options) -> dict}: optional curriculum probes over checkpoints.
    - `fixed_width` (class attribute, default False): True when every training batch of a batch size
      has one shape whatever the data seed (packed text). Students of different seeds then share a
      batched group without padding; tasks with a `pad_id` and batches as wide as their longest
      sentence leave it False, and their students are grouped by seed.
    """

    name: str
    device: torch.device
    fixed_width: bool = False

    @abstractmethod
    def model_io(self) -> dict[str, Any]:
        """What a model must accept and produce (input_dim / seq_len / vocab_size / num_classes / pad_id)."""

    @abstractmethod
    def train_batch(self, step: int, batch_size: int) -> Batch:
        """The training batch of `step`: a pure function of (task keywords, data_seed, step, batch_size)."""

    def train_examples(self, start: int, stop: int) -> Batch:
        """The batch-size-1 training batches of steps [start, stop) stacked: row i of inputs and targets is
        `train_batch(start + i, 1)`. Tasks override this to draw a range at once (the batch-1 path)."""
        batches = [self.train_batch(step, 1) for step in range(start, stop)]
        return Batch(torch.cat([b.inputs for b in batches]), torch.cat([b.targets for b in batches]))

    @abstractmethod
    def eval_batches(self) -> list[Batch]:
        """The fixed held-out set, in batches."""

    def samples_per_step(self, batch_size: int) -> int:
        """Training examples per step at this batch size (samples-to-target counts these)."""
        return batch_size

    def probes(self) -> dict[str, Callable[..., dict]]:
        """Named curriculum probes this task owns: name -> fn(model, **options) -> results."""
        return {}

    eval_rows: int | None = None
    """Rows per forward pass in `evaluate` (None: a whole batch at once). Set it only for a task whose
    model computes every row on its own (no padding masks shared across rows, no batch statistics): then
    the logits, and the loss summed over the whole batch, are those of one forward on a machine whose
    matrix products do not round by the row count."""

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Held-out cross-entropy and top-1 accuracy over the positions that carry a loss (`model` may return
        any output `logits_of` reads, and be a bare `transformers` model)."""
        model = as_task_model(model, self.model_io())
        was_training = model.training
        model.eval()
        total_loss, correct, count = 0.0, 0, 0
        rows = self.eval_rows
        for batch in self.eval_batches():
            if rows is None or batch.size <= rows:
                output = logits_of(model(batch.inputs))
            else:  # the same logits, in forwards whose activations stay in the CPU's cache
                output = torch.cat([logits_of(model(batch.inputs[i:i + rows])) for i in range(0, batch.size, rows)])
            logits, targets = selected(output, batch.targets)
            total_loss += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
            correct += int((logits.argmax(-1) == targets).sum())
            count += int(targets.numel())
        model.train(was_training)
        return {"loss": total_loss / max(count, 1), "accuracy": correct / max(count, 1)}

    def input_hashes(self) -> dict[str, str]:
        """Hashes of what defines the task beyond its config (files it reads, what it derives from
        them), keyed by name; stored in run.json, and a run folder written with other values is refused."""
        return {}

    def artifacts(self) -> dict[str, str | dict[str, Any]]:
        """Files the task derives from its inputs, written once into the run folder: name -> text, or a
        JSON-serialisable dict (a text task's tokenizer.json and corpus statistics)."""
        return {}
