"""The teacher's outputs on a student's batches, optionally cached on disk and shared between students.

A student's batch at step t is a pure function of (task, data seed, step, batch size), so the outputs of
teacher checkpoint c on it are too. Students that share a data stream (the methods and budgets of one
seed, the (2, T) sweep) therefore need each (c, t) once: with a cache folder, outputs are computed in
blocks of `block` steps, written atomically as `checkpoint-{c}/block-{k}.safetensors`, and read back by
any later student. Each block carries, as safetensors metadata, what it was computed from
(`block_metadata`: the checkpoint's step and fingerprint, the block, the batch size, the data stream, the
kind of outputs); a block whose metadata differs (copied from another checkpoint's folder or another
seed's cache, or written before blocks carried metadata) is computed again and overwritten, like a
truncated one. Each step is computed exactly as without the cache (one forward per batch), so a cached
run gives bit-identical numbers (for a task with `eval_rows`, whose rows are computed independently,
the batches of a block go through the teacher in forwards of up to `eval_rows` rows: the same numbers on
a machine whose matrix products do not round by the row count, as `Task.evaluate` assumes). With
tau == 0 only the teacher's argmax is stored. One object serves any number of checkpoints at a time
(the students of one data stream trained together as a group may need several at the same step): it
holds the current block of each.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .io import CheckpointError, load_tensors_and_metadata, save_tensors
from .models.outputs import logits_of
from .precision import autocast
from .tasks.base import IGNORE, Batch, Task, selected
from .trajectory import Trajectory

KEEP_MODELS_BYTES = 256 << 20  # parameters of the teacher checkpoints one TeacherOutputs keeps loaded


BLOCK_FORMAT = "progdistill-teacher-outputs-1"


def _parameter_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_fingerprint(trajectory: Trajectory, step: int) -> str:
    """What identifies the teacher checkpoint `step` for its cached outputs, without reading its weights:
    its meta (a progdistill checkpoint's meta.json, written last, holds its step, its held-out loss and
    accuracy and the teacher's config hash, which tell apart the checkpoints of one run and those of two
    runs; a trajectory from outside gives its source name and curve point) and the names and sizes of its
    weight files. Hashing the weights themselves would read every teacher file in every student process
    even when all its blocks are cached; modification times are left out so that a copied run folder (or
    teacher) keeps its cache."""
    meta = trajectory.meta(step)
    folder = trajectory.path(step)  # None for hub revisions not downloaded
    sizes = sorted((f.name, f.stat().st_size) for f in Path(folder).iterdir()
                   if f.suffix in (".safetensors", ".bin")) if folder is not None and Path(folder).is_dir() else []
    return _digest(meta, sizes)


def _inputs_digest(inputs: torch.Tensor) -> str:
    """A digest of a batch's inputs (their dtype, shape and bytes)."""
    flat = inputs.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(f"{flat.dtype}{tuple(inputs.shape)}".encode() + flat.view(torch.uint8).numpy().tobytes()
                          ).hexdigest()[:16]


class TeacherOutputs:
    """Teacher logits (or argmax labels when `labels_only`) at the loss positions of student batches."""

    def __init__(self, trajectory: Trajectory | None, task: Task, batch_size: int, device: torch.device,
                 labels_only: bool = False, cache: str | Path | None = None, block: int = 50,
                 precision: str = "fp32") -> None:
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.trajectory, self.task, self.batch_size, self.device = trajectory, task, batch_size, device
        self.labels_only, self.block, self.precision = labels_only, block, precision
        self.cache = Path(cache) if cache is not None else None
        self._models: OrderedDict[int, nn.Module] = OrderedDict()  # loaded checkpoints, least recently used first
        self._blocks: dict[int, tuple[int, list[torch.Tensor]]] = {}  # checkpoint -> (block index, outputs)
        self._batches: tuple[int, list[Batch]] | None = None  # (block index, its batches): one draw for all checkpoints
        self._fingerprints: dict[int, str] = {}  # checkpoint -> checkpoint_fingerprint, computed once
        self._first: tuple[int, bool, str] | None = None  # (block index, batched, digest of its first inputs)

    def model(self, checkpoint: int) -> nn.Module:
        """The teacher checkpoint, loaded once while it stays among the most recently used ones that fit
        in `KEEP_MODELS_BYTES` of parameters (at least one): students trained together, or a block of
        cached outputs, ask for several checkpoints in turn."""
        model = self._models.get(checkpoint)
        if model is None:
            assert self.trajectory is not None, "a teacher schedule needs a trajectory"
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):  # loading draws no numbers from the student's stream
                model = self.trajectory.load(checkpoint, self.device)
            size = _parameter_bytes(model)
            while self._models and size * (len(self._models) + 1) > KEEP_MODELS_BYTES:
                self._models.popitem(last=False)
            self._models[checkpoint] = model
        self._models.move_to_end(checkpoint)
        return model

    def _compute(self, checkpoint: int, batch: Batch) -> torch.Tensor:
        with torch.no_grad(), autocast(self.device, self.precision):
            logits, _ = selected(logits_of(self.model(checkpoint)(batch.inputs)).float(), batch.targets)
        return logits.argmax(-1) if self.labels_only else logits

    def _block_batches(self, index: int) -> list[Batch]:
        """The student's batches of block `index`, drawn once for every checkpoint asked for there."""
        if self._batches is None or self._batches[0] != index:
            start = index * self.block
            self._batches = (index, [self.task.train_batch(step, self.batch_size)
                                     for step in range(start, start + self.block)])
        return self._batches[1]

    def _compute_many(self, checkpoint: int, batches: list[Batch]) -> list[torch.Tensor]:
        """`_compute` of each batch; where the task computes rows independently (`Task.eval_rows`), batches
        of one shape are stacked into forwards of up to eval_rows rows (a few dozen rows per forward
        spend more time on per-call overhead than on the products)."""
        rows = self.task.eval_rows
        per = max(1, rows // self.batch_size) if rows else 1
        outputs: list[torch.Tensor] = []
        i = 0
        while i < len(batches):
            j = i + 1
            while j < len(batches) and j - i < per and batches[j].inputs.shape == batches[i].inputs.shape:
                j += 1
            if j == i + 1:
                outputs.append(self._compute(checkpoint, batches[i]))
            else:
                with torch.no_grad(), autocast(self.device, self.precision):
                    stacked = logits_of(self.model(checkpoint)(torch.cat([b.inputs for b in batches[i:j]]))).float()
                sizes = [b.inputs.shape[0] for b in batches[i:j]]
                if stacked.dim() == 2 and all(bool((b.targets != IGNORE).all()) for b in batches[i:j]):
                    outputs += (stacked.argmax(-1) if self.labels_only else stacked).split(sizes)  # one row each
                else:
                    for b, logits in zip(batches[i:j], stacked.split(sizes)):
                        kept, _ = selected(logits, b.targets)
                        outputs.append(kept.argmax(-1) if self.labels_only else kept)
            i = j
        return outputs

    def get(self, checkpoint: int | None, step: int, batch: Batch) -> torch.Tensor | None:
        """Outputs of `checkpoint` on `batch` (the student's batch of `step`); None without a teacher."""
        if checkpoint is None:
            return None
        if self.cache is None:
            return self._compute(checkpoint, batch)
        index = step // self.block
        held = self._blocks.get(checkpoint)
        if held is None or held[0] != index:
            # blocks of earlier steps are not asked for again (steps only move forward)
            self._blocks = {c: b for c, b in self._blocks.items() if b[0] >= index}
            held = self._blocks[checkpoint] = (index, self._load_block(checkpoint, index))
        return held[1][step % self.block]

    def get_range(self, checkpoint: int, start: int, stop: int, inputs: torch.Tensor) -> torch.Tensor:
        """Outputs of `checkpoint` at the steps [start, stop) of a batch-size-1 student, whose inputs are
        `inputs` [stop - start, ...] (`task.train_examples(start, stop)`): [n] labels or [n, C] logits.

        One batched forward per call, or per cache block of `block` steps (blocks written here are
        computed batched too; a batched forward may round differently from one example at a time, which
        can only change an argmax at an exact tie)."""
        if self.cache is None:
            return self._forward(checkpoint, inputs)
        parts = []
        for index in range(start // self.block, (stop - 1) // self.block + 1):
            held = self._blocks.get(checkpoint)
            if held is None or held[0] != index:
                self._blocks = {c: b for c, b in self._blocks.items() if b[0] >= index}
                held = self._blocks[checkpoint] = (index, self._load_block(checkpoint, index, batched=True))
            first = index * self.block
            parts += held[1][max(start, first) - first:min(stop, first + self.block) - first]
        return torch.cat(parts)

    def _forward(self, checkpoint: int, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(self.device, self.precision):
            logits = self.model(checkpoint)(inputs).float()
        return logits.argmax(-1) if self.labels_only else logits

    def block_metadata(self, checkpoint: int, index: int, batched: bool = False) -> dict[str, str]:
        """The safetensors metadata of the cache block `index` of `checkpoint`: what its outputs are a
        function of. The data stream is named by a digest of the block's first batch (one batch drawn per
        block read: a batch is a pure function of the task, data seed, step and batch size) and by the
        task's `data_seed` where it has one; the checkpoint by `checkpoint_fingerprint` (once per checkpoint)."""
        if checkpoint not in self._fingerprints:
            assert self.trajectory is not None, "a teacher schedule needs a trajectory"
            self._fingerprints[checkpoint] = checkpoint_fingerprint(self.trajectory, checkpoint)
        if self._first is None or self._first[:2] != (index, batched):  # drawn once per block for all checkpoints
            start = index * self.block
            first = (self.task.train_examples(start, start + 1) if batched else
                     self.task.train_batch(start, self.batch_size)).inputs
            self._first = (index, batched, _inputs_digest(first))
        return {"format": BLOCK_FORMAT, "checkpoint": str(checkpoint), "teacher": self._fingerprints[checkpoint],
                "block": str(index), "block_steps": str(self.block), "batch_size": str(self.batch_size),
                "batched": str(int(batched)), "data_seed": str(getattr(self.task, "data_seed", "")),
                "first_inputs": self._first[2], "outputs": "labels" if self.labels_only else "logits",
                "precision": self.precision}

    def _load_block(self, checkpoint: int, index: int, batched: bool = False) -> list[torch.Tensor]:
        assert self.cache is not None
        path = self.cache / f"checkpoint-{checkpoint}" / f"block-{index}.safetensors"
        metadata = self.block_metadata(checkpoint, index, batched)
        if path.is_file():
            try:
                saved, stored = load_tensors_and_metadata(path, self.device)
                offsets = saved["offsets"].tolist()
                if stored == metadata and len(offsets) == self.block + 1 and offsets[-1] == len(saved["outputs"]):
                    return [saved["outputs"][a:b] for a, b in zip(offsets[:-1], offsets[1:])]
            except (CheckpointError, KeyError):
                pass  # unreadable: recompute and overwrite
            # foreign (another checkpoint, data stream or kind of outputs; no metadata): recompute and overwrite
        start = index * self.block
        if batched:  # batch size 1, every step one example with a loss (the batch-1 path)
            rows = self._forward(checkpoint, self.task.train_examples(start, start + self.block).inputs)
            outputs = list(rows.split(1))
        else:
            outputs = self._compute_many(checkpoint, self._block_batches(index))
        offsets = torch.tensor([0] + [len(o) for o in outputs]).cumsum(0)
        save_tensors(path, {"outputs": torch.cat(outputs), "offsets": offsets}, metadata, durable=False)  # a cache
        return outputs
