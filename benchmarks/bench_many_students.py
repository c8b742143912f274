"""Benchmark: many students trained together as one batched model vs one by one, side by side (not a test).

    python benchmarks/bench_many_students.py [--students 16] [--parity-steps 1000] [--pcfg-steps 50]
                                             [--threads 1] [--repeats 2] [--only parity|pcfg]
    python benchmarks/bench_many_students.py --profile STEPS [--only parity|pcfg]

For each setting, 16 students of the shipped recipe's student architecture and training settings:
  parity  `parity-mlp-small` students (MLP width 100, batch 32, SGD), and
  pcfg    `pcfg-mlm-small` students (BERT 4 layers x 4 heads of dim 8, batch 128, AdamW, cosine, clip),
4 data seeds x 4 methods (ce, one-shot, progressive, two-shot) on a saved trajectory of freshly
initialised teacher checkpoints of the recipe's teacher architecture, every student with the same
budget and the recipe's eval cadence. Each repeat trains them once one by one (`trainer.train`) and
once as one group (`group.train_group`), alternating, in fresh run folders; the teacher's outputs are
cached on disk before timing (both modes read the same cache, as students of a recipe do). Prints the
aggregate training samples per second of each mode (best repeat), the ratio, and whether every student
ends with the same weights in both modes. With --profile it prints instead where the time of a
training step goes in each mode (torch.profiler self time by kind of operation, per student-step).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from progdistill.config import load_recipe
from progdistill.experiment import make_model, optim_config
from progdistill.group import Member, train_group
from progdistill.schedule import make_schedule
from progdistill.tasks import build_task
from progdistill.teacher_outputs import TeacherOutputs
from progdistill.trainer import KDConfig, TrainConfig, train
from progdistill.trajectory import Trajectory, save_checkpoint

METHODS = ["ce", "one-shot", "progressive", "two-shot"]


def train_all(mode: str, group, trajectory) -> None:
    """Train the students of `group`: "together" as one batched group, else one by one with `train`."""
    if mode == "together":
        train_group(group, trajectory, progress=False)
    else:
        for m in group:
            train(m.model, m.task, m.cfg, m.out, m.meta, m.schedule, trajectory, progress=False,
                  teacher_cache=m.teacher_cache)

def setting(recipe_name: str, steps: int, students: int, root: Path):
    """Tasks, members (a function making fresh ones), trajectory for one setting."""
    recipe = load_recipe(recipe_name)
    s = recipe.students
    seeds = list(range(max(1, students // len(METHODS))))
    tasks = {seed: build_task(recipe.task, data_seed=1000 + seed) for seed in seeds}
    teacher_root = root / "teacher"
    for i, step in enumerate((0, 50, 100)):
        model, arch = make_model(recipe.teacher.model, tasks[seeds[0]], i, "cpu")
        save_checkpoint(teacher_root / f"checkpoint-{step}", model, {"model": arch, "step": step})
    trajectory = Trajectory(teacher_root)
    cfg = TrainConfig(steps=steps, batch_size=s.batch_size, optim=optim_config(s.optim), kd=KDConfig(**s.kd.model_dump()),
                      eval_every=s.eval_every)
    jobs = [(METHODS[i % len(METHODS)], seeds[(i // len(METHODS)) % len(seeds)]) for i in range(students)]

    def method(name: str) -> dict:
        return {"name": name, "checkpoint": 50, "switch": steps // 2} if name == "two-shot" else {"name": name}

    def members(folder: Path) -> list[Member]:
        out = []
        for i, (name, seed) in enumerate(jobs):
            model, arch = make_model(s.model, tasks[seed], 1000 + seed + 100 * i, "cpu")
            out.append(Member(model, tasks[seed], cfg, folder / f"{name}-{i}", {"model": arch},
                              make_schedule(method(name), trajectory.steps, None, budget=steps),
                              root / f"cache-{seed}", f"{name} s{seed}"))
        return out

    start = time.perf_counter()
    for m in members(root / "warm"):  # fill the teacher-output cache both modes read
        outputs = TeacherOutputs(trajectory, m.task, cfg.batch_size, torch.device("cpu"), labels_only=cfg.kd.tau == 0,
                                 cache=m.teacher_cache)
        for step in range(steps):
            ckpt = m.schedule.checkpoint(step)
            if ckpt is not None:
                outputs.get(ckpt, step, m.task.train_batch(step, cfg.batch_size))
    return members, trajectory, cfg, time.perf_counter() - start


def run(name: str, recipe: str, steps: int, students: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        members, trajectory, cfg, warm = setting(recipe, steps, students, root)
        times: dict[str, list[float]] = {"one by one": [], "together": []}
        weights: dict[str, list[torch.Tensor]] = {}
        for r in range(repeats):
            for mode in times:
                group = members(root / f"{mode}-{r}")
                start = time.perf_counter()
                train_all(mode, group, trajectory)
                times[mode].append(time.perf_counter() - start)
                weights[mode] = [torch.cat([p.detach().flatten() for p in m.model.parameters()]) for m in group]
        samples = students * steps * cfg.batch_size
        best = {mode: min(t) for mode, t in times.items()}
        same = all(torch.equal(a, b) for a, b in zip(weights["one by one"], weights["together"]))
        diff = max(float((a - b).abs().max()) for a, b in zip(weights["one by one"], weights["together"]))
        print(f"{name}: {students} `{recipe}` students x {steps} steps x batch {cfg.batch_size} "
              f"(teacher outputs cached beforehand in {warm:.1f} s)")
        for mode, t in times.items():
            print(f"  {mode:10s} {samples / best[mode]:10.0f} samples/s   (runs: {', '.join(f'{x:.1f} s' for x in t)})")
        print(f"  together / one by one: {best['one by one'] / best['together']:.2f}x   "
              f"identical final weights: {same} (max difference {diff:.2g})")


CATEGORIES = [  # (label, substrings of profiler op names), first match wins
    ("attention (scaled_dot_product_attention)", ("scaled_dot_product", "flash_attention")),
    ("matmuls (mm, addmm, bmm, baddbmm)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
    ("GELU", ("gelu",)),
    ("layer norm", ("layer_norm",)),
    ("copies (copy_, cat, stack, fill_, clone)", ("aten::copy_", "aten::cat", "aten::stack", "aten::fill_",
                                                  "aten::clone", "aten::zero_")),
    ("optimizer and clipping", ("Optimizer", "_foreach", "lerp", "addcdiv", "addcmul_", "aten::sqrt",
                                "vector_norm")),
    ("other element-wise and reductions", ("aten::add", "aten::mul", "aten::div", "aten::sum", "aten::sub",
                                           "softmax", "nll_loss", "relu", "threshold", "clamp", "aten::ne",
                                           "aten::where", "aten::index", "aten::embedding")),
]


def profile(name: str, recipe: str, steps: int, students: int) -> None:
    """Where the time of a training step goes, one by one vs together: profiler self time by kind of op,
    per student-step (no evaluation in the measured steps)."""
    from torch.profiler import profile as torch_profile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        members, trajectory, cfg, _ = setting(recipe, steps, students, root)
        shares = {}
        for mode in ("one by one", "together"):
            group = members(root / mode)
            for m in group:
                m.cfg = replace(m.cfg, eval_every=10**9)  # evaluations only at the ends, outside the profile
            with torch_profile() as prof:
                train_all(mode, group, trajectory)
            totals: dict[str, float] = {}
            for event in prof.key_averages():
                label = next((lab for lab, keys in CATEGORIES if any(k in event.key for k in keys)), "rest (framework,"
                             " autograd, Python-side ops, file writes)")
                totals[label] = totals.get(label, 0.0) + event.self_cpu_time_total / 1e3
            shares[mode] = totals
        print(f"{name}: profiler self time per student-step (ms), {students} students x {steps} steps, no evaluations")
        labels = [lab for lab, _ in CATEGORIES] + ["rest (framework, autograd, Python-side ops, file writes)"]
        per = students * steps
        print(f"  {'':58s} {'one by one':>12s} {'together':>10s}")
        for label in labels:
            a, b = (shares[m].get(label, 0.0) / per for m in ("one by one", "together"))
            print(f"  {label:58s} {a:12.2f} {b:10.2f}")
        a, b = (sum(shares[m].values()) / per for m in ("one by one", "together"))
        print(f"  {'total':58s} {a:12.2f} {b:10.2f}   ({a / b:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=16)
    parser.add_argument("--parity-steps", type=int, default=1000)
    parser.add_argument("--pcfg-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", choices=["parity", "pcfg"])
    parser.add_argument("--profile", type=int, metavar="STEPS",
                        help="instead: where a step's time goes (torch.profiler), STEPS steps per student")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    for name, recipe, steps in (("parity", "parity-mlp-small", args.parity_steps),
                                ("pcfg", "pcfg-mlm-small", args.pcfg_steps)):
        if args.only in (None, name):
            if args.profile:
                profile(name, recipe, args.profile, args.students)
            else:
                run(name, recipe, steps, args.students, args.repeats)


if __name__ == "__main__":
    main()
