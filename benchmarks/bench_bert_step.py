"""Benchmark: where a grammar student's step could get faster on a CPU, side by side (not a test).

    python benchmarks/bench_bert_step.py [--recipe pcfg-mlm-small] [--steps 40] [--repeats 3]
                                         [--threads 1] [--variants default,math,compiled,bf16]

One training step of the recipe's student (its architecture, batch size, AdamW with its betas and
gradient clipping at 1.0; cross-entropy at the masked positions of the task's batches) and one
no-grad forward of its teacher (the teacher-output cache's work), each in four variants of the same
arithmetic's kernels:

  default   what progdistill runs: `scaled_dot_product_attention`'s CPU flash kernel
  math      the same call restricted to the math backend (q k^T, softmax, @ v as separate ops)
  compiled  `torch.compile` of the whole step (Inductor's fused C++ kernels; compile time reported)
  bf16      `torch.autocast("cpu", torch.bfloat16)` around the step (weights and optimizer in fp32)

Variants run interleaved, `--repeats` rounds of `--steps` steps each; the best round per variant is
reported with its ratio to `default`, measured in the same process, and the largest difference of the
first step's logits from `default` (every variant but `default` changes the numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from progdistill.config import load_recipe
from progdistill.experiment import make_model
from progdistill.tasks import build_task
from progdistill.tasks.base import IGNORE

VARIANTS = ("default", "math", "compiled", "bf16")


def context(variant: str) -> contextlib.AbstractContextManager:
    if variant == "math":
        return sdpa_kernel(SDPBackend.MATH)
    if variant == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(model: torch.nn.Module, lr: float, betas: tuple[float, float], variant: str):
    """A training step closure over `model` and a fresh AdamW; `compiled` wraps it in torch.compile."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas)

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = model(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return logits.detach()

    return torch.compile(step) if variant == "compiled" else step


def make_forward(model: torch.nn.Module, variant: str):
    def forward(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(inputs)

    return torch.compile(forward) if variant == "compiled" else forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="pcfg-mlm-small")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    variants = args.variants.split(",")
    if variants[0] != "default" or not set(variants) <= set(VARIANTS):
        parser.error(f"--variants: a comma-separated list of {', '.join(VARIANTS)} starting with default")
    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    task = build_task(recipe.task, data_seed=1000)
    s = recipe.students
    batches = [task.train_batch(t, s.batch_size) for t in range(args.steps)]
    lr, betas = s.optim.lr, tuple(s.optim.betas)

    states, logits0, compile_s = {}, {}, {}
    for v in variants:  # build, warm up (compile), and record the first step's logits
        student, _ = make_model(s.model, task, 0, "cpu")
        teacher, _ = make_model(recipe.teacher.model, task, 1, "cpu")
        step, forward = make_step(student, lr, betas, v), make_forward(teacher, v)
        t0 = time.perf_counter()
        with context(v):
            logits0[v] = step(batches[0].inputs, batches[0].targets)
            for b in batches[1:3]:
                step(b.inputs, b.targets)
            for b in batches[:3]:
                forward(b.inputs)
        compile_s[v] = time.perf_counter() - t0
        states[v] = (step, forward)

    best = {(v, k): float("inf") for v in variants for k in ("step", "forward")}
    for _ in range(args.repeats):
        for v in variants:
            step, forward = states[v]
            with context(v):
                t0 = time.perf_counter()
                for b in batches:
                    step(b.inputs, b.targets)
                t1 = time.perf_counter()
                for b in batches:
                    forward(b.inputs)
                t2 = time.perf_counter()
            best[v, "step"] = min(best[v, "step"], (t1 - t0) / len(batches))
            best[v, "forward"] = min(best[v, "forward"], (t2 - t1) / len(batches))

    print(f"{args.recipe}: student {s.model.model_dump(exclude_none=True)} batch {s.batch_size}, teacher "
          f"{recipe.teacher.model.model_dump(exclude_none=True)}; {args.threads} thread(s), {args.steps} steps, "
          f"best of {args.repeats} interleaved rounds")
    print(f"{'variant':10s} {'student step':>14s} {'speed-up':>9s} {'teacher fwd':>12s} {'speed-up':>9s} "
          f"{'warm-up':>9s} {'max |logit diff|':>17s}")
    for v in variants:
        diff = (logits0[v].float() - logits0["default"].float()).abs().max().item()
        print(f"{v:10s} {best[v, 'step'] * 1e3:11.2f} ms {best['default', 'step'] / best[v, 'step']:8.2f}x "
              f"{best[v, 'forward'] * 1e3:9.2f} ms {best['default', 'forward'] / best[v, 'forward']:8.2f}x "
              f"{compile_s[v]:8.1f}s {diff:17.2e}")


if __name__ == "__main__":
    main()
