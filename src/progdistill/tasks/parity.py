"""Sparse parity (SPEC §3): x uniform on {-1,+1}^d, label = parity of k support coordinates.

With `num_labels` L > 2 it is the hierarchical variant: L-1 disjoint k-blocks form a binary tree;
at node n the product of block n-1 sends x to child 2n (product +1) or 2n+1 (product -1); the label
is the leaf reached minus L.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from .base import Batch, Task, seeded_generator

_CHUNK_SAMPLES = 1 << 16  # samples generated per call to the random generator
_STREAM, _HELDOUT, _TRAINSET, _EPOCH, _SUPPORT = 1, 2, 3, 4, 5  # generator purposes


class ParityTask(Task):
    """Sparse parity with an infinite seeded stream or a fixed training set of n examples.

    `seed` defines the problem (random support, held-out set); `data_seed` the training data.
    """

    name = "parity"
    eval_rows = 256  # a width-2,000 MLP evaluates 4,096 examples ~1.6x faster in forwards of 256 on a CPU

    def __init__(
        self,
        d: int,
        k: int,
        support: str = "first",
        num_labels: int = 2,
        train_size: int | None = None,
        eval_size: int = 4096,
        seed: int = 0,
        data_seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if num_labels < 2 or num_labels & (num_labels - 1):
            raise ValueError(f"num_labels must be a power of 2 >= 2, got {num_labels}")
        blocks = num_labels - 1
        if not 1 <= k or blocks * k > d:
            raise ValueError(f"need 1 <= k and (num_labels-1)*k <= d; got k={k}, d={d}, num_labels={num_labels}")
        if support not in ("first", "random"):
            raise ValueError(f"support must be 'first' or 'random', got {support!r}")
        self.d, self.k, self.num_labels, self.seed, self.data_seed = d, k, num_labels, seed, data_seed
        self.device = torch.device(device)
        if support == "first":
            coords = torch.arange(blocks * k)
        else:
            coords = torch.randperm(d, generator=seeded_generator(torch.device("cpu"), seed, _SUPPORT))[: blocks * k]
        self.blocks = coords.view(blocks, k).to(self.device)  # [L-1, k]
        self.support = sorted(int(i) for i in coords[:k])  # support of the root parity (L=2: the parity)
        self._heldout_codes = None
        self.eval_x = self._draw(eval_size, seeded_generator(self.device, seed, _HELDOUT))
        if d <= 62:
            if 2**d < 4 * eval_size:
                raise ValueError(f"d={d} is too small for a held-out set of {eval_size} disjoint from training")
            self._heldout_codes = torch.unique(self._codes(self.eval_x))
        self.eval_y = self.label(self.eval_x)
        self.train_size = train_size
        if train_size is not None:
            if train_size < 1:
                raise ValueError(f"train_size must be >= 1, got {train_size}")
            self.train_x = self._draw(train_size, seeded_generator(self.device, seed, data_seed, _TRAINSET))
            self.train_y = self.label(self.train_x)
        self._chunk: tuple | None = None  # (chunk or epoch, batch size, tensors...) in use

    def model_io(self) -> dict[str, Any]:
        return {"input_dim": self.d, "seq_len": self.d, "vocab_size": 2, "num_classes": self.num_labels,
                "input": "signs"}

    # --- data -----------------------------------------------------------------------------
    def label(self, x: torch.Tensor) -> torch.Tensor:
        """Class ids for inputs x in {-1,+1}^d (vectorized over the batch)."""
        node = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
        for _ in range(int(math.log2(self.num_labels))):
            coords = self.blocks[node - 1]  # [B, k]
            negative = torch.gather(x, 1, coords).prod(dim=1) < 0
            node = 2 * node + negative.long()
        return node - self.num_labels

    def _codes(self, x: torch.Tensor) -> torch.Tensor:
        weights = 2 ** torch.arange(self.d, device=x.device, dtype=torch.long)
        return ((x < 0).long() * weights).sum(dim=1)

    def _draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """n uniform points of {-1,+1}^d; points of the held-out set are redrawn."""
        x = torch.randint(0, 2, (n, self.d), generator=gen, device=self.device).float() * 2 - 1
        if self._heldout_codes is not None:
            while True:
                clash = torch.isin(self._codes(x), self._heldout_codes)
                if not bool(clash.any()):
                    break
                m = int(clash.sum())
                x[clash] = torch.randint(0, 2, (m, self.d), generator=gen, device=self.device).float() * 2 - 1
        return x

    def train_batch(self, step: int, batch_size: int) -> Batch:
        if self.train_size is not None:
            return self._finite_batch(step, batch_size)
        per_chunk = max(1, _CHUNK_SAMPLES // batch_size)
        chunk, offset = divmod(step, per_chunk)
        if self._chunk is None or self._chunk[:2] != (chunk, batch_size):
            gen = seeded_generator(self.device, self.seed, self.data_seed, _STREAM, batch_size, chunk)
            x = self._draw(per_chunk * batch_size, gen)
            self._chunk = (chunk, batch_size, x, self.label(x))
        rows = slice(offset * batch_size, (offset + 1) * batch_size)
        return Batch(self._chunk[2][rows], self._chunk[3][rows])

    def _finite_batch(self, step: int, batch_size: int) -> Batch:
        """Batches walk through a fresh seeded permutation of the n examples every epoch."""
        n = self.train_size
        per_epoch = max(1, n // batch_size)
        epoch, offset = divmod(step, per_epoch)
        if self._chunk is None or self._chunk[:2] != (epoch, batch_size):
            perm = torch.randperm(n, generator=seeded_generator(self.device, self.seed, self.data_seed, _EPOCH, epoch),
                                  device=self.device)
            self._chunk = (epoch, batch_size, perm)
        idx = self._chunk[2][offset * batch_size:(offset + 1) * batch_size]
        return Batch(self.train_x[idx], self.train_y[idx])

    def train_examples(self, start: int, stop: int) -> Batch:
        """Rows of the batch-size-1 stream for steps [start, stop), sliced from the same generated chunks
        (or epoch permutations) as `train_batch(step, 1)`."""
        xs, ys = [], []
        step = start
        while step < stop:
            self.train_batch(step, 1)  # loads the chunk (epoch) holding `step` into self._chunk
            per = self.train_size if self.train_size is not None else _CHUNK_SAMPLES
            first, offset = step - step % per, step % per
            end = min(stop, first + per)
            if self.train_size is None:
                xs.append(self._chunk[2][offset:offset + end - step])
                ys.append(self._chunk[3][offset:offset + end - step])
            else:
                idx = self._chunk[2][offset:offset + end - step]
                xs.append(self.train_x[idx])
                ys.append(self.train_y[idx])
            step = end
        if len(xs) == 1:
            return Batch(xs[0], ys[0])
        return Batch(torch.cat(xs), torch.cat(ys))

    def eval_batches(self) -> list[Batch]:
        size = 4096
        return [Batch(self.eval_x[i:i + size], self.eval_y[i:i + size]) for i in range(0, len(self.eval_x), size)]

    def probes(self) -> dict[str, Callable[..., dict]]:
        from ..probes.monomials import monomial_probe

        return {"monomials": lambda model, **opts: monomial_probe(model, self, **opts)}
