"""Data-parallel training of one model under `torchrun` (DistributedDataParallel).

`torchrun --nproc_per_node N -m progdistill teacher RECIPE --out OUT` starts N processes with the
environment variables RANK, LOCAL_RANK and WORLD_SIZE; every process (rank) builds the same model
and the same global batch of step t (a pure function of the data seed and t), keeps its slice
`shard(batch)`, and DDP averages the gradients, so the weights follow the single-process run with the
same global batch up to float rounding (exactly the same mean gradient when every rank's slice has
the same number of loss positions: one target per example, as on parity; on masked / padded
sequences it is the mean of the ranks' means, as usual with DDP). Only rank 0 writes files. The
backend is gloo on CPU, NCCL on CUDA (each rank on cuda:LOCAL_RANK). See docs/executors.md.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from torch import nn

from .tasks.base import Batch


def world() -> tuple[int, int]:
    """(rank, world size) of this process from torchrun's RANK / WORLD_SIZE ((0, 1) outside torchrun)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    """Whether this process is one of several torchrun ranks."""
    return world()[1] > 1


def writes() -> bool:
    """Whether this process writes files (rank 0, or no torchrun)."""
    return world()[0] == 0


def local_device(device: str) -> str:
    """The device of this rank: cuda:LOCAL_RANK for "cuda" under torchrun, else `device`."""
    if device == "cuda" and is_distributed():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def setup(device: str) -> None:
    """Join the process group of torchrun's ranks (once; gloo on CPU, NCCL on CUDA); nothing outside torchrun."""
    import torch.distributed as dist

    if is_distributed() and not dist.is_initialized():
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(torch.device(local_device(device)))
        dist.init_process_group("nccl" if cuda else "gloo")


def barrier() -> None:
    """Wait for every rank (nothing outside torchrun)."""
    import torch.distributed as dist

    if is_distributed() and dist.is_initialized():
        dist.barrier()


def wrap(model: nn.Module) -> nn.Module:
    """`model` in DistributedDataParallel under torchrun (call `setup` first), else `model` itself. Save and
    evaluate the model itself, not the wrapper (its state_dict keys carry a 'module.' prefix)."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def check_batch_size(batch_size: int, where: str = "batch_size") -> None:
    """Refuse a global batch that the ranks cannot split evenly. Raises ValueError naming `where`."""
    rank, size = world()
    if batch_size % size:
        raise ValueError(f"{where}: {batch_size} is not divisible by torchrun's {size} processes (WORLD_SIZE); each "
                         "process trains on an equal slice of the global batch")


def shard(batch: Batch) -> Batch:
    """This rank's slice of the global batch `batch` (inputs [B, ...], targets [B] or [B, T]): rows
    rank*B/W to (rank+1)*B/W; the whole batch outside torchrun."""
    rank, size = world()
    if size == 1:
        return batch
    n = batch.size // size
    return dataclasses.replace(batch, inputs=batch.inputs[rank * n:(rank + 1) * n],
                               targets=batch.targets[rank * n:(rank + 1) * n])
