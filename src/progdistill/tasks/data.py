"""Your own data as a Task: `TensorTask` over tensors, `DatasetTask` over a map-style torch Dataset.

Both hold a finite training set that is walked in epochs: every epoch is a fresh permutation drawn
from (seed, data_seed, epoch) on the CPU, and the batch of step t is the slice
[(t mod E)·B, (t mod E + 1)·B) of the permutation of epoch ⌊t / E⌋, E = ⌊n / B⌋ batches per epoch (the
last partial batch of an epoch is dropped, as `ParityTask`'s finite mode does). So a batch is a pure
function of (seed, data_seed, step, batch_size), the same on every device, and an interrupted run
resumes bit-identically. The held-out set is given, or a fraction of the examples split off by a
permutation seeded by `seed` alone (never by `data_seed`: teacher and students are scored on the same
examples).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset, Subset, default_collate

from .base import IGNORE, Batch, Task, seeded_generator

_EPOCH, _SPLIT = 1, 2  # generator purposes
FILE_KEYS = ("train_inputs", "train_targets", "eval_inputs", "eval_targets")


def split_indices(n: int, eval_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) indices of n examples: round(fraction·n) of them, chosen by a permutation seeded
    by `seed`, are held out; both in increasing order. Raises ValueError if either part would be empty."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    n_eval = round(eval_fraction * n)
    if not 1 <= n_eval < n:
        raise ValueError(f"eval_fraction {eval_fraction} of {n} examples leaves an empty training or held-out set")
    perm = torch.randperm(n, generator=seeded_generator(torch.device("cpu"), seed, _SPLIT))
    return perm[n_eval:].sort().values, perm[:n_eval].sort().values


def _targets(targets: Any, where: str) -> torch.Tensor:
    """Targets as int64 [N] or [N, T], every value a class id >= 0 or IGNORE."""
    if not isinstance(targets, torch.Tensor):
        targets = torch.as_tensor(targets)
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"{where}: targets must be integer class ids (int64), got {targets.dtype}")
    if targets.ndim not in (1, 2):
        raise ValueError(f"{where}: targets must be [N] or [N, T], got shape {list(targets.shape)}")
    targets = targets.long()
    bad = (targets < 0) & (targets != IGNORE)
    if bool(bad.any()):
        raise ValueError(f"{where}: target {int(targets[bad][0])} is neither a class id >= 0 nor IGNORE ({IGNORE})")
    return targets


class _Accumulator:
    """What `model_io()` can infer from the data: shapes, the largest token id and class id."""

    def __init__(self) -> None:
        self.shape: tuple[int, ...] | None = None
        self.integer_inputs = False
        self.max_token = -1
        self.max_class = -1

    def add(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.shape = tuple(inputs.shape[1:])
        self.integer_inputs = not inputs.is_floating_point()
        if self.integer_inputs and inputs.numel():
            self.max_token = max(self.max_token, int(inputs.max()))
        kept = targets[targets != IGNORE]
        if kept.numel():
            self.max_class = max(self.max_class, int(kept.max()))

    def io(self) -> dict[str, Any]:
        io: dict[str, Any] = {}
        shape = self.shape or ()
        if self.integer_inputs:
            if len(shape) == 1:
                io["seq_len"] = shape[0]
            io["vocab_size"] = self.max_token + 1
        elif len(shape) == 1:
            io["input_dim"] = shape[0]
        elif len(shape) == 2:
            io["seq_len"], io["input_dim"] = shape
        if self.max_class >= 0:
            io["num_classes"] = self.max_class + 1
        return io


class _FiniteTask(Task):
    """A finite training set walked in seeded epochs, a fixed held-out set, and an inferred model_io."""

    def __init__(self, train_size: int, seed: int, data_seed: int, device: str | torch.device,
                 model_io: dict[str, Any] | None, eval_batch_size: int) -> None:
        if train_size < 1:
            raise ValueError("the training set is empty")
        if eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {eval_batch_size}")
        self.train_size, self.seed, self.data_seed = train_size, seed, data_seed
        self.device = torch.device(device)
        self.eval_batch_size = eval_batch_size
        self._given_io = dict(model_io or {})
        self._io: dict[str, Any] | None = None
        self._epoch: tuple[int, int, torch.Tensor] | None = None  # (epoch, batch size, permutation)

    def _gather(self, indices: torch.Tensor) -> Batch:
        """The training examples at these indices (CPU int64), as a Batch on the device."""
        raise NotImplementedError

    def _scan(self) -> _Accumulator:
        """Shapes and largest ids over the training and held-out examples."""
        raise NotImplementedError

    def model_io(self) -> dict[str, Any]:
        """Inferred from the data (input_dim for float [N, D] inputs, seq_len and input_dim for [N, T, D],
        seq_len and vocab_size for integer [N, T] token ids, num_classes from the largest target),
        updated with the `model_io` given to the constructor."""
        if self._io is None:
            self._io = {**self._scan().io(), **self._given_io}
        return dict(self._io)

    def train_batch(self, step: int, batch_size: int) -> Batch:
        if batch_size > self.train_size:
            raise ValueError(f"batch_size {batch_size} is larger than the {self.train_size} training examples")
        per_epoch = self.train_size // batch_size
        epoch, offset = divmod(step, per_epoch)
        if self._epoch is None or self._epoch[:2] != (epoch, batch_size):
            gen = seeded_generator(torch.device("cpu"), self.seed, self.data_seed, _EPOCH, epoch)
            self._epoch = (epoch, batch_size, torch.randperm(self.train_size, generator=gen))
        return self._gather(self._epoch[2][offset * batch_size:(offset + 1) * batch_size])


class TensorTask(_FiniteTask):
    """A task over your own tensors: inputs [N, ...] and targets int64 [N] or [N, T] (IGNORE where no loss).

    Give the held-out set as `eval_inputs` / `eval_targets`, or `eval_fraction` to split it off the
    training tensors (seeded by `seed`). Batches are drawn as the module docstring says. `model_io` adds
    to or overrides what is inferred (e.g. `{"pad_id": 0}`, or `num_classes` when the largest class is
    absent from the data). Raises ValueError for inconsistent tensors or split options.
    """

    name = "tensors"

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, eval_inputs: torch.Tensor | None = None,
                 eval_targets: torch.Tensor | None = None, *, eval_fraction: float | None = None, seed: int = 0,
                 data_seed: int = 0, device: str | torch.device = "cpu", model_io: dict[str, Any] | None = None,
                 eval_batch_size: int = 1024) -> None:
        inputs = torch.as_tensor(inputs)
        targets = _targets(targets, "targets")
        if len(inputs) != len(targets):
            raise ValueError(f"inputs hold {len(inputs)} examples but targets {len(targets)}")
        if (eval_inputs is None) != (eval_targets is None):
            raise ValueError("give both eval_inputs and eval_targets, or neither")
        if (eval_inputs is None) == (eval_fraction is None):
            raise ValueError("give the held-out set (eval_inputs, eval_targets) or eval_fraction, not both or neither")
        if eval_inputs is None:
            train, held = split_indices(len(inputs), eval_fraction, seed)
            inputs, targets, eval_inputs, eval_targets = inputs[train], targets[train], inputs[held], targets[held]
        else:
            eval_inputs, eval_targets = torch.as_tensor(eval_inputs), _targets(eval_targets, "eval_targets")
            if len(eval_inputs) != len(eval_targets) or len(eval_inputs) == 0:
                raise ValueError(f"eval_inputs hold {len(eval_inputs)} examples, eval_targets {len(eval_targets)}")
            if eval_inputs.shape[1:] != inputs.shape[1:] or eval_targets.shape[1:] != targets.shape[1:]:
                raise ValueError("held-out tensors must have the training tensors' shapes past the first dimension")
        super().__init__(len(inputs), seed, data_seed, device, model_io, eval_batch_size)
        self.inputs, self.targets = inputs.to(self.device), targets.to(self.device)
        self.eval_inputs, self.eval_targets = eval_inputs.to(self.device), eval_targets.to(self.device)

    @classmethod
    def from_file(cls, path: str | Path, **options: Any) -> "TensorTask":
        """A TensorTask from a safetensors file holding `train_inputs`, `train_targets` and optionally
        `eval_inputs`, `eval_targets` (else pass `eval_fraction`); `options` are the constructor's keywords.
        Raises CheckpointError for an unreadable file, ValueError naming the file for missing or unknown tensors."""
        from ..io import load_tensors

        if not Path(path).is_file():
            raise ValueError(f"{path}: no such file (a safetensors file of {', '.join(FILE_KEYS)})")
        tensors = load_tensors(path)
        unknown = sorted(set(tensors) - set(FILE_KEYS))
        if unknown:
            raise ValueError(f"{path}: unknown tensor(s) {unknown}; a task file holds {', '.join(FILE_KEYS)}")
        missing = [k for k in FILE_KEYS[:2] if k not in tensors]
        if missing:
            raise ValueError(f"{path}: no tensor {missing[0]!r} (a task file holds {', '.join(FILE_KEYS)})")
        try:
            return cls(tensors["train_inputs"], tensors["train_targets"], tensors.get("eval_inputs"),
                       tensors.get("eval_targets"), **options)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def _gather(self, indices: torch.Tensor) -> Batch:
        indices = indices.to(self.device)
        return Batch(self.inputs[indices], self.targets[indices])

    def _scan(self) -> _Accumulator:
        acc = _Accumulator()
        acc.add(self.eval_inputs, self.eval_targets)
        acc.add(self.inputs, self.targets)
        return acc

    def eval_batches(self) -> list[Batch]:
        size = self.eval_batch_size
        return [Batch(self.eval_inputs[i:i + size], self.eval_targets[i:i + size])
                for i in range(0, len(self.eval_inputs), size)]


class DatasetTask(_FiniteTask):
    """A task over a map-style `torch.utils.data.Dataset` (`__len__` and `__getitem__`).

    Items are `(input, target)` pairs or dicts holding `keys[0]` (input) and `keys[1]` (target); a
    batch is `collate_fn` (default: torch's `default_collate`) of its items, moved to `device`, targets
    as int64. The held-out set is `eval_dataset`, or `eval_fraction` of the items split off (seeded by
    `seed`). Batches are drawn as the module docstring says, so the same examples in a `TensorTask`
    give the same batches. `model_io()` reads the whole data once to infer the largest ids unless
    `model_io` gives them. Raises ValueError for an unusable dataset or split options.
    """

    name = "dataset"

    def __init__(self, dataset: Dataset, eval_dataset: Dataset | None = None, *, eval_fraction: float | None = None,
                 seed: int = 0, data_seed: int = 0, device: str | torch.device = "cpu",
                 model_io: dict[str, Any] | None = None, eval_batch_size: int = 1024,
                 keys: Sequence[str] = ("inputs", "targets"),
                 collate_fn: Callable[[list[Any]], Any] | None = None) -> None:
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise ValueError("DatasetTask needs a map-style Dataset (with __len__ and __getitem__)")
        if (eval_dataset is None) == (eval_fraction is None):
            raise ValueError("give eval_dataset or eval_fraction, not both or neither")
        self.keys, self.collate = tuple(keys), collate_fn or default_collate
        if eval_dataset is None:
            train, held = split_indices(len(dataset), eval_fraction, seed)
            self.train_indices, self.eval_dataset = train.tolist(), Subset(dataset, held.tolist())
        else:
            self.train_indices, self.eval_dataset = list(range(len(dataset))), eval_dataset
            if len(eval_dataset) == 0:
                raise ValueError("eval_dataset is empty")
        self.dataset = dataset
        super().__init__(len(self.train_indices), seed, data_seed, device, model_io, eval_batch_size)
        self._eval: list[Batch] | None = None

    def _collate(self, items: list[Any], where: str) -> Batch:
        batch = self.collate(items)
        if isinstance(batch, dict):
            missing = [k for k in self.keys if k not in batch]
            if missing:
                raise ValueError(f"{where}: items have no key {missing[0]!r} (they have {sorted(batch)}; set keys=)")
            inputs, targets = batch[self.keys[0]], batch[self.keys[1]]
        elif isinstance(batch, (list, tuple)) and len(batch) == 2:
            inputs, targets = batch
        else:
            raise ValueError(f"{where}: items must be (input, target) pairs or dicts, got {type(items[0]).__name__}")
        if not isinstance(inputs, torch.Tensor):
            raise ValueError(f"{where}: inputs collate to a {type(inputs).__name__}, not a tensor")
        return Batch(inputs.to(self.device), _targets(targets, where).to(self.device))

    def _gather(self, indices: torch.Tensor) -> Batch:
        return self._collate([self.dataset[self.train_indices[i]] for i in indices.tolist()], "dataset")

    def _chunks(self, dataset: Dataset, indices: list[int], where: str) -> list[Batch]:
        size = self.eval_batch_size
        return [self._collate([dataset[i] for i in indices[a:a + size]], where) for a in range(0, len(indices), size)]

    def _scan(self) -> _Accumulator:
        acc = _Accumulator()
        for batch in self.eval_batches() + self._chunks(self.dataset, self.train_indices, "dataset"):
            acc.add(batch.inputs, batch.targets)
        return acc

    def eval_batches(self) -> list[Batch]:
        if self._eval is None:
            self._eval = self._chunks(self.eval_dataset, list(range(len(self.eval_dataset))), "eval_dataset")
        return self._eval
