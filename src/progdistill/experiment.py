"""Experiment pipeline: teacher -> phases -> probes -> students (methods x budgets x seeds) -> report.

Every stage writes its results atomically and is skipped when its results exist, so an interrupted
run resumes where it stopped (a half-trained model resumes from its last saved state).
"""

from __future__ import annotations

import os
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .config import Recipe, RecipeError, TeacherSection, validate
from .io import config_hash, environment_info, read_json, write_json, write_text
from .models import build_model, count_parameters, resolve_architecture
from .schedule import make_schedule
from .tasks import Task, build_task
from .trainer import KDConfig, OptimConfig, TrainConfig, train
from .trajectory import Phases, Trajectory, detect_phases


def _set_threads(recipe: Recipe) -> None:
    if recipe.threads:
        torch.set_num_threads(recipe.threads)


def prepare_run(recipe: Recipe, out: str | Path) -> Path:
    """Create the run folder and write run.json; refuse a folder that holds a different recipe."""
    out = Path(out)
    resolved = recipe.model_dump(mode="json")
    digest = config_hash(resolved)
    run_file = out / "run.json"
    if run_file.is_file():
        previous = read_json(run_file)
        if previous.get("config_hash") != digest:
            raise RecipeError(f"{out} holds a run of a different config (hash {previous.get('config_hash')} "
                              f"vs {digest}); choose another --out or delete it")
    write_json(run_file, {"config_hash": digest, "config": resolved, "environment": environment_info()})
    write_text(out / "config.yaml", _yaml(resolved))
    return out


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


def optim_config(section) -> OptimConfig:
    return OptimConfig(**section.model_dump())


def make_model(arch_cfg, task: Task, seed: int, device: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A freshly initialised model (init seeded by `seed`) and its resolved architecture."""
    arch = resolve_architecture(arch_cfg.model_dump(), task.model_io())
    torch.manual_seed(seed)
    return build_model(arch).to(device), arch


def train_teacher(recipe: Recipe, out: Path, progress: bool = True) -> Trajectory:
    """Train (or resume) the teacher, saving its trajectory under out/teacher."""
    t: TeacherSection = recipe.teacher
    if t.path:
        return Trajectory(t.path)
    folder = out / "teacher"
    if (folder / "curve.json").is_file():
        return Trajectory(folder)
    task = build_task(recipe.task, data_seed=t.seed, device=recipe.device)
    model, arch = make_model(t.model, task, t.seed, recipe.device)
    cfg = TrainConfig(steps=t.steps, batch_size=t.batch_size, optim=optim_config(t.optim),
                      eval_every=t.eval_every, checkpoint_every=t.checkpoint_every,
                      log_checkpoints=t.log_checkpoints)
    meta = {"model": arch, "role": "teacher", "parameters": count_parameters(model),
            "config_hash": config_hash(recipe.model_dump(mode="json")["teacher"])}
    train(model, task, cfg, folder, meta, progress=progress, desc="teacher")
    return Trajectory(folder)


def teacher_phases(recipe: Recipe, trajectory: Trajectory, out: Path) -> Phases | None:
    """Detect the teacher's phase transition from its curve; None if its metric never improves."""
    p = recipe.phases
    try:
        phases = detect_phases(trajectory.curve(), p.metric, p.window, p.threshold)
    except ValueError as e:
        write_json(out / "teacher_phases.json", {"error": str(e)})
        return None
    write_json(out / "teacher_phases.json", phases.to_dict())
    return phases


def probe_trajectory(recipe: Recipe, trajectory: Trajectory, out: Path, progress: bool = True) -> dict[str, Any]:
    """Run the task's configured probes on every teacher checkpoint (results in out/probes/)."""
    task = build_task(recipe.task, device=recipe.device)
    available = task.probes()
    results: dict[str, Any] = {}
    for name, options in recipe.probe.model_dump().items():
        if options is None:
            continue
        if name not in available:
            raise RecipeError(f"probe {name!r} is not available for task {recipe.task.name!r}")
        file = out / "probes" / f"teacher_{name}.json"
        if file.is_file():
            results[name] = read_json(file)
            continue
        rows = []
        for step in tqdm(trajectory.steps, desc=f"probe {name}", disable=not progress, leave=False):
            model = trajectory.load(step, recipe.device)
            rows.append({"step": step, **trajectory.meta(step).get("eval", {}),
                         "result": available[name](model, **options)})
        write_json(file, rows)
        results[name] = rows
    return results


def student_folder(out: Path, label: str, budget: int, seed: int) -> Path:
    return out / "students" / label / f"budget-{budget}" / f"seed-{seed}"


def train_student(recipe: Recipe, out: Path, trajectory: Trajectory, phases: Phases | None, method_index: int,
                  budget: int, seed: int, progress: bool = True, stop_at: int | None = None) -> dict[str, Any]:
    """Train one student (resuming if interrupted) and write its result.json."""
    s = recipe.students
    method = s.methods[method_index]
    folder = student_folder(out, method.display, budget, seed)
    if (folder / "result.json").is_file():
        return read_json(folder / "result.json")
    task = build_task(recipe.task, data_seed=1000 + seed, device=recipe.device)
    model, arch = make_model(s.model, task, 1000 + seed, recipe.device)
    schedule = make_schedule(method.model_dump(), trajectory.steps, phases, trajectory.curve(), budget)
    cfg = TrainConfig(steps=budget, batch_size=s.batch_size, optim=optim_config(s.optim),
                      kd=KDConfig(**s.kd.model_dump()), eval_every=s.eval_every)
    meta = {"model": arch, "role": "student", "method": method.model_dump(), "seed": seed, "budget": budget}
    record = train(model, task, cfg, folder, meta, schedule, trajectory, progress=progress, stop_at=stop_at,
                   desc=f"{method.display} s{seed}")
    if stop_at is not None and stop_at < budget:
        return {}
    curve = record["curve"]
    reached = next((p for p in curve if p["accuracy"] >= recipe.report.target), None)
    result = {
        "label": method.display, "method": method.model_dump(), "budget": budget, "seed": seed,
        "final_accuracy": curve[-1]["accuracy"], "final_loss": curve[-1]["loss"],
        "samples_to_target": reached["samples"] if reached else None,
        "steps_to_target": reached["step"] if reached else None,
        "teacher_checkpoints": sorted({seg["checkpoint"] for seg in record["supervision"]
                                       if seg["checkpoint"] is not None}),
        "schedule": schedule.state_dict(),
    }
    if s.probe_final:
        result["probes"] = {name: fn(model, **(getattr(recipe.probe, name).model_dump()))
                            for name, fn in task.probes().items() if getattr(recipe.probe, name, None)}
    write_json(folder / "result.json", result)
    return result


def _student_job(recipe_json: dict[str, Any], out: str, trajectory_root: str, phases: dict | None,
                 method_index: int, budget: int, seed: int) -> dict[str, Any]:
    recipe = validate(recipe_json)
    torch.set_num_threads(max(1, (recipe.threads or os.cpu_count() or 1) // recipe.workers))
    ph = Phases(**phases) if phases else None
    return train_student(recipe, Path(out), Trajectory(trajectory_root), ph, method_index, budget, seed,
                         progress=False)


def run_students(recipe: Recipe, out: Path, trajectory: Trajectory, phases: Phases | None,
                 progress: bool = True) -> list[dict[str, Any]]:
    """Every (method, budget, seed) student, in `recipe.workers` processes."""
    s = recipe.students
    jobs = [(m, b, seed) for b in s.steps for m in range(len(s.methods)) for seed in s.seeds]
    if recipe.workers == 1:
        bar = tqdm(jobs, desc="students", disable=not progress)
        return [train_student(recipe, out, trajectory, phases, m, b, seed, progress) for m, b, seed in bar]
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # avoid spin-waiting threads across processes
    ctx = __import__("multiprocessing").get_context("spawn")
    results: list[dict[str, Any]] = []
    args = (recipe.model_dump(mode="json"), str(out), str(trajectory.root), phases.to_dict() if phases else None)
    with ProcessPoolExecutor(recipe.workers, mp_context=ctx) as pool:
        futures = [pool.submit(_student_job, *args, m, b, seed) for m, b, seed in jobs]
        for fut in tqdm(as_completed(futures), total=len(futures), desc="students", disable=not progress):
            results.append(fut.result())
    return results


def summarize(recipe: Recipe, out: Path, trajectory: Trajectory, phases: Phases | None) -> dict[str, Any]:
    """summary.json: per method, per budget, per seed results; medians; the teacher's curve and phases."""
    s = recipe.students
    methods: dict[str, Any] = {}
    for method in s.methods:
        per_budget = {}
        for budget in s.steps:
            runs = {str(seed): read_json(student_folder(out, method.display, budget, seed) / "result.json")
                    for seed in s.seeds}
            budget_samples = budget * s.batch_size
            stt = [r["samples_to_target"] if r["samples_to_target"] is not None else budget_samples
                   for r in runs.values()]
            per_budget[str(budget)] = {
                "seeds": {seed: {k: r[k] for k in ("final_accuracy", "samples_to_target", "steps_to_target",
                                                   "teacher_checkpoints", "schedule")}
                          for seed, r in runs.items()},
                "median_final_accuracy": statistics.median(r["final_accuracy"] for r in runs.values()),
                "median_samples_to_target": int(statistics.median(stt)),
                "reached_target": sum(r["samples_to_target"] is not None for r in runs.values()),
            }
        methods[method.display] = {"method": method.model_dump(), "budgets": per_budget}
    auto_choice = None
    if phases is not None:
        from .schedule import resolve_checkpoint

        auto_choice = {ref: resolve_checkpoint(ref, trajectory.steps, phases)
                       for ref in ("before", "middle", "after")}
    summary = {
        "recipe": recipe.name, "target": recipe.report.target, "methods": methods,
        "teacher": {"curve": trajectory.curve(), "checkpoints": trajectory.steps,
                    "phases": phases.to_dict() if phases else None, "auto_checkpoint": auto_choice},
    }
    probe_file = out / "probes" / "teacher_monomials.json"
    if probe_file.is_file():
        from .probes.monomials import monomial_peak

        summary["teacher"]["monomial_peak"] = monomial_peak(read_json(probe_file))
    write_json(out / "summary.json", summary)
    return summary


def run_experiment(recipe: Recipe, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """The whole pipeline; returns the summary (also in out/summary.json, report in out/report.md)."""
    from .report import write_report

    _set_threads(recipe)
    out = prepare_run(recipe, out)
    trajectory = train_teacher(recipe, out, progress)
    phases = teacher_phases(recipe, trajectory, out)
    probe_trajectory(recipe, trajectory, out, progress)
    run_students(recipe, out, trajectory, phases, progress)
    summary = summarize(recipe, out, trajectory, phases)
    write_report(recipe, out, summary)
    return summary
