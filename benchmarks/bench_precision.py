"""Benchmark: training-step time of a recipe's teacher and student, fp32 vs bf16, side by side (not a test).

    python benchmarks/bench_precision.py [RECIPE] [key=value ...] [--steps 20]

Builds the recipe's task and both models on the recipe's device, then times, for each precision: drawing a
batch alone, and a full training step (batch, forward, CE loss, backward, AdamW) of the teacher and of the
student, after 3 warm-up steps. Prints seconds per step, the bf16 / fp32 ratio, and what the recipe's
teacher and student steps would take at that pace (students: CE steps; a distilled student also pays one
teacher forward per step unless the teacher-output cache already holds it). On a CPU without bf16 units
expect bf16 to be slower; the option is meant for GPUs.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from progdistill.config import load_recipe
from progdistill.experiment import make_model, require_device
from progdistill.precision import PRECISIONS, autocast
from progdistill.tasks import build_task
from progdistill.tasks.base import selected
from progdistill.trainer import OptimConfig, make_optimizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_step(step_fn, steps: int, device: torch.device, warmup: int = 3) -> float:
    for i in range(warmup):
        step_fn(i)
    _sync(device)
    start = time.perf_counter()
    for i in range(steps):
        step_fn(warmup + i)
    _sync(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default="pcfg-mlm-small")
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, args.overrides)
    require_device(recipe.device)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    device = torch.device(recipe.device)
    task = build_task(recipe.task, device=recipe.device)
    roles = {"teacher": recipe.teacher, "student": recipe.students}
    print(f"{recipe.name} on {recipe.device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}),"
          f" torch {torch.__version__}, {args.steps} timed steps each")
    data = seconds_per_step(lambda i: task.train_batch(i, recipe.teacher.batch_size), args.steps, device)
    print(f"  batch of {recipe.teacher.batch_size} alone: {data * 1e3:.1f} ms")
    times: dict[tuple[str, str], float] = {}
    for role, section in roles.items():
        for precision in PRECISIONS:
            model, _ = make_model(section.model, task, 0, recipe.device)
            opt = make_optimizer(model, OptimConfig(name="adamw", lr=1e-4))

            def step(i: int, model=model, opt=opt, precision=precision, batch_size=section.batch_size) -> None:
                batch = task.train_batch(i, batch_size)
                with autocast(device, precision):
                    logits, targets = selected(model(batch.inputs).float(), batch.targets)
                loss = F.cross_entropy(logits, targets)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            times[role, precision] = seconds_per_step(step, args.steps, device)
    for role, section in roles.items():
        fp32, bf16 = times[role, "fp32"], times[role, "bf16"]
        steps = section.steps if role == "teacher" else sum(section.steps)
        what = f"{steps} teacher steps" if role == "teacher" else f"one seed of each budget ({steps} steps)"
        print(f"  {role:7} step: fp32 {fp32 * 1e3:.1f} ms, bf16 {bf16 * 1e3:.1f} ms, bf16/fp32 = {bf16 / fp32:.2f}; "
              f"{what}: fp32 {fp32 * steps / 60:.1f} min, bf16 {bf16 * steps / 60:.1f} min")


if __name__ == "__main__":
    main()
