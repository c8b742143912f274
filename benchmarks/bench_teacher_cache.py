"""Benchmark: students with and without the teacher-output cache, side by side (not a test).

    python benchmarks/bench_teacher_cache.py [--steps 200] [--threads 1]

Trains a small BERT teacher on a generated grammar (masked LM), then the same set of distilled students
(one-shot, two-shot from the middle checkpoint, progressive, each at budgets steps/2 and steps, one data seed) twice: once
computing the teacher's outputs at every step, once through one shared on-disk cache. Prints both wall
times, their ratio, and checks that every student ends with the same weights.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from progdistill.models import build_model, resolve_architecture
from progdistill.schedule import make_schedule
from progdistill.tasks.pcfg import PCFGMLMTask, grammar_from_spec
from progdistill.trainer import KDConfig, OptimConfig, TrainConfig, train
from progdistill.trajectory import Trajectory

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="largest student budget (also the teacher's steps)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = PCFGMLMTask(grammar_from_spec(None, {"levels": 3, "seed": 3}, None), eval_size=256, data_seed=7)
    io = task.model_io()

    def model(heads: int, seed: int) -> tuple[torch.nn.Module, dict]:
        arch = resolve_architecture({"type": "bert", "layers": 4, "heads": heads, "head_dim": 8}, io)
        torch.manual_seed(seed)
        return build_model(arch), arch

    optim = OptimConfig(name="adamw", lr=5e-3, betas=(0.9, 0.95), schedule="cosine", warmup=0.06, grad_clip=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        teacher, arch = model(8, 0)
        train(teacher, task, TrainConfig(steps=args.steps, batch_size=128, optim=optim, eval_every=50,
                                         checkpoint_every=50), root / "teacher", {"model": arch}, progress=False)
        trajectory = Trajectory(root / "teacher")
        middle = trajectory.steps[len(trajectory.steps) // 2]
        methods = [{"name": "one-shot"}, {"name": "two-shot", "checkpoint": middle, "switch": args.steps // 4},
                   {"name": "progressive", "refresh": 50}]
        finals: dict[str, list[torch.Tensor]] = {}
        seconds = {}
        for mode in ("recomputed", "cached"):
            start = time.perf_counter()
            for method in methods:
                for budget in (args.steps // 2, args.steps):
                    student, arch = model(4, 1)
                    cfg = TrainConfig(steps=budget, batch_size=128, optim=optim, kd=KDConfig(), eval_every=budget)
                    schedule = make_schedule(method, trajectory.steps, None, budget=budget)
                    train(student, task, cfg, root / mode / f"{method['name']}-{budget}", {"model": arch},
                          schedule, trajectory, progress=False,
                          teacher_cache=root / "cache" if mode == "cached" else None)
                    finals.setdefault(f"{method['name']}-{budget}", []).append(
                        torch.cat([p.detach().flatten() for p in student.parameters()]))
            seconds[mode] = time.perf_counter() - start
    same = all(torch.equal(*pair) for pair in finals.values())
    print(f"{len(finals)} students, budgets {args.steps // 2} and {args.steps}, {args.threads} thread(s)")
    print(f"teacher outputs recomputed: {seconds['recomputed']:.1f} s")
    print(f"teacher outputs cached:     {seconds['cached']:.1f} s  ({seconds['recomputed'] / seconds['cached']:.2f}x faster)")
    print(f"identical final weights: {same}")


if __name__ == "__main__":
    main()
