"""Benchmark: the batch-1 path vs a paper-code-shaped loop vs a plain PyTorch loop (not a test).

    python benchmarks/bench_batch1.py [--widths 1000 50000] [--rounds 5] [--seconds 1.0] [--threads 1]
    python benchmarks/bench_batch1.py --sweep --widths 1000 50000    # chunk T x block B of the batch-1 path
    python benchmarks/bench_batch1.py --device cuda                   # on a GPU (torch ops; no Numba there)

Sparse parity d=100, k=6 (SPEC §3), a one-hidden-layer MLP (PyTorch default init), 2-class softmax
cross-entropy, SGD lr 0.005, batch size 1, on the CPU (or `--device cuda`). Variants, each training its own copy of one model
on the same examples:
- paper: a per-sample `Dataset` + `DataLoader` at batch size 1, a new `nn.CrossEntropyLoss` module per
  step, `optimizer.zero_grad()` / `loss.backward()` / `optimizer.step()` (the shape of the paper's code;
  on a GPU each example is moved to the device as it is served);
- plain: examples pre-generated as tensors, one `model(x)`, `F.cross_entropy`, backward, step;
- batch1: `progdistill.batch1.Batch1Path` (Numba kernel; drawing its examples from the task itself);
- batch1-torch: the same path with torch ops instead of the Numba kernel (its fallback and GPU variant).
Rounds are interleaved (every variant once per round, in turn), each variant running whole chunks for
about `--seconds`; the table gives the median samples/s over the rounds, by wall clock and by this
process's CPU time (steadier on a shared machine), and the ratios of the medians.
Before timing, the batch-1 path and the plain loop train 300 steps from one init; their largest weight
difference is printed (float rounding; it grows with the width, see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from progdistill import batch1_kernels
from progdistill.batch1 import Batch1Path, default_sizes
from progdistill.models import MLP
from progdistill.tasks import ParityTask

D, K, LR = 100, 6, 0.005


class ParityDataset(Dataset):
    """One example per index, as the paper's code serves them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


DEVICE = torch.device("cpu")


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def model(width: int) -> MLP:
    torch.manual_seed(0)
    return MLP(D, 2, width).to(DEVICE)


class Paper:
    def __init__(self, width: int, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model = model(width)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.loader = DataLoader(ParityDataset(x, y), batch_size=1, shuffle=False)
        self.it = iter(self.loader)

    def run(self, n: int) -> None:
        for _ in range(n):
            try:
                xb, yb = next(self.it)
            except StopIteration:
                self.it = iter(self.loader)
                xb, yb = next(self.it)
            xb, yb = xb.to(DEVICE), yb.to(DEVICE)
            loss_fn = nn.CrossEntropyLoss()
            loss = loss_fn(self.model(xb), yb)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()


class Plain:
    def __init__(self, width: int, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model = model(width)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.x, self.y, self.i = x, y, 0

    def run(self, n: int) -> None:
        for _ in range(n):
            i = self.i % len(self.x)
            loss = F.cross_entropy(self.model(self.x[i:i + 1]), self.y[i:i + 1])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self.i += 1


class Fast:
    def __init__(self, width: int, task: ParityTask, backend: str, chunk: int | None = None,
                 block: int | None = None) -> None:
        self.model = model(width)
        self.path = Batch1Path(self.model, lambda s: LR, 0.0, 1.0, 0.0, False, backend, chunk=chunk, block=block)
        self.task, self.step = task, 0

    def run(self, n: int) -> None:
        self.path.run(self.step, self.step + n, self.task)
        self.step += n


def check(task: ParityTask, width: int, backend: str) -> float:
    """Largest weight difference after 300 steps of the plain loop and the batch-1 path from one init."""
    batch = task.train_examples(0, 300)
    plain, fast = Plain(width, batch.inputs, batch.targets), Fast(width, task, backend)
    plain.run(300)
    fast.run(300)
    pairs = zip(plain.model.parameters(), fast.model.parameters())
    return max(float((a - b).detach().abs().max()) for a, b in pairs)


def timed(variant, steps: int) -> tuple[float, float]:
    """(samples per wall-clock second, samples per CPU second of this process)."""
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    variant.run(steps)
    sync()
    return steps / (time.perf_counter() - wall), steps / (time.process_time() - cpu)


def calibrate(variant, seconds: float, multiple: int) -> int:
    """Steps (a multiple of `multiple`) that take about `seconds`."""
    steps = multiple
    while True:
        sync()
        start = time.perf_counter()
        variant.run(steps)
        sync()
        took = time.perf_counter() - start
        if took > seconds / 4:
            return max(multiple, int(steps * seconds / took) // multiple * multiple)
        steps *= 4


def compare(width: int, variants: dict, args) -> dict[str, tuple[float, float]]:
    """name -> (median samples/s by wall clock, median samples/s by CPU time) over interleaved rounds."""
    multiples = {name: getattr(v, "path", None) and v.path.chunk or 1 for name, v in variants.items()}
    steps = {name: calibrate(v, args.seconds, multiples[name]) for name, v in variants.items()}
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, v in variants.items():
            rates[name].append(timed(v, steps[name]))
    return {name: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r)) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[1000, 50000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per variant per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sweep", action="store_true", help="compare chunk sizes T and blocks B instead")
    parser.add_argument("--chunks", type=int, nargs="+", default=[32, 64, 128, 256, 512], help="T (--sweep)")
    parser.add_argument("--blocks", type=int, nargs="+", default=[8, 16, 32, 64], help="B (--sweep)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    backend = "numba" if batch1_kernels.NUMBA and DEVICE.type == "cpu" else "torch"
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {where}, {args.threads} thread(s), batch-1 backend {backend}; parity d={D} "
          f"k={K}, SGD lr {LR}, batch 1; median of {args.rounds} interleaved rounds of ~{args.seconds} s each")
    task = ParityTask(d=D, k=K, eval_size=64, data_seed=1, device=str(DEVICE))
    data = task.train_examples(0, 1 << 16)
    paper_data = (data.inputs.cpu(), data.targets.cpu())  # served per sample from host memory, as a Dataset does
    for width in args.widths:
        if args.sweep:
            sizes = [(t, b) for t in args.chunks for b in args.blocks if b <= t]
            variants = {f"T={t} B={b}": Fast(width, task, backend, t, b) for t, b in sizes}
            rates = compare(width, variants, args)
            best = [max(r[i] for r in rates.values()) for i in (0, 1)]
            print(f"\nwidth {width} (default T, B = {default_sizes(width)}): samples/s by wall clock | by CPU time")
            for name, (wall, cpu) in rates.items():
                print(f"  {name:12s} {wall:9.0f} ({wall / best[0]:4.2f} of the best) | {cpu:9.0f} "
                      f"({cpu / best[1]:4.2f})")
            continue
        diff = check(task, width, backend)
        variants = {"paper": Paper(width, *paper_data), "plain": Plain(width, data.inputs, data.targets),
                    "batch1": Fast(width, task, backend)}
        if backend == "numba":
            variants["batch1-torch"] = Fast(width, task, "torch")
        rates = compare(width, variants, args)
        print(f"\nwidth {width}: batch-1 path vs plain loop after 300 steps from one init: max |weight diff| "
              f"{diff:.1e}")
        print(f"  {'':13s} {'wall clock':>24s} | {'CPU time':>24s}")
        for name, (wall, cpu) in rates.items():
            print(f"  {name:13s} {wall:9.0f} samples/s {1e6 / wall:7.0f} us | {cpu:9.0f} samples/s {1e6 / cpu:7.0f} us")
        for name in [n for n in rates if n.startswith("batch1")]:
            ratios = [f"{rates[name][i] / rates[ref][i]:6.1f}x" for ref in ("paper", "plain") for i in (0, 1)]
            print(f"  {name} / paper: {ratios[0]} wall, {ratios[1]} CPU;  / plain: {ratios[2]} wall, {ratios[3]} CPU")


if __name__ == "__main__":
    main()
