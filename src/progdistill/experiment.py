"""Experiment stages: teacher -> phases -> probes -> students (methods x budgets x seeds) -> summary.

Every stage writes its results atomically and is skipped when its results exist, so an interrupted
run resumes where it stopped (a half-trained model resumes from its last saved state).
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .config import (METHOD, STUDENT_SEED_OFFSET, TASK_PROBES, Recipe, RecipeError, TeacherSection, TwoShotMethod,
                     validate)
from .config import HFModelConfig
from .external import ExternalTrajectory, open_trajectory, trajectory_kind
from .io import (CheckpointError, check_names, config_hash, environment_info, file_hash, read_derived_json,
                 read_json, remove_stale_temporaries, write_json, write_text)
from .layout import read_run_json, student_folder
from .metric_logging import require_backends
from .group import (GROUP_SIZE, Member, balance_groups, group_key, grouping_pays, memory_per_student, plan_groups,
                    train_group)
from .models import build_model, count_parameters, io_mismatches, resolve_architecture
from .probing import EarlyProbes, probe_rows, probe_steps
from .preflight import (check_eval_size, check_phase_evaluations, check_probe_options, check_schedules,
                        check_sizes, check_resume_files, check_threads, check_trajectory, schedule_error)
from .probes.monomials import monomial_peak, transition_window
from . import distributed
from .executors import Executor, InProcess, make_executor, threads_per_job
from .runlock import lock_run_folder, unlock_run_folder
from .schedule import make_schedule, resolve_checkpoint
from .tasks import Task, build_task
from .trainer import KDConfig, OptimConfig, TrainConfig, checkpoint_steps, read_state, train
from .trajectory import Phases, Trajectory, detect_phases, loss_spikes


def _set_threads(recipe: Recipe) -> None:
    check_threads(recipe)  # before torch starts that many threads
    if recipe.threads:
        torch.set_num_threads(recipe.threads)


def require_device(device: str) -> None:
    """Refuse, with the fix in the message, a device this machine's PyTorch cannot use."""
    kind, _, index = device.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count <= int(index or 0):
            why = (f"this PyTorch ({torch.__version__}) is built without CUDA" if torch.version.cuda is None
                   else f"{count} CUDA device(s) visible")
            raise RecipeError(f"device: {device!r} is not available: {why}; override device=cpu (small sizes) or "
                              'install a CUDA build of PyTorch (README, section "Two commands")', keys=("device",))
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise RecipeError("device: 'mps' is not available on this machine; override device=cpu", keys=("device",))


def teacher_trajectory(recipe: Recipe, io: dict[str, Any]) -> Trajectory:
    """The trajectory at `teacher.path`, checked against the task's model io `io`: a progdistill teacher folder, or
    one from outside (`external.open_trajectory`: a Trainer folder or hub revisions; its curve may still need
    evaluating). Raises RecipeError or CheckpointError."""
    t = recipe.teacher
    if trajectory_kind(t.path) != "native":
        model_class = t.model.model_class if isinstance(t.model, HFModelConfig) else None
        return open_trajectory(t.path, io, t.revision_steps, model_class)
    if (Path(t.path) / "state").is_dir() and not (Path(t.path) / "curve.json").is_file():  # an interrupted training
        raise RecipeError(f"teacher.path {t.path}: this teacher's training was interrupted; finish "
                          "it first (run its recipe again with the same --out)")
    trajectory = Trajectory(t.path)
    check_trajectory(trajectory)
    wrong = list(dict.fromkeys(w for step in trajectory.steps  # every checkpoint, each problem once
                               for w in io_mismatches(trajectory.meta(step)["model"], io)))
    if wrong:
        raise RecipeError(f"teacher.path {t.path}: its checkpoints were not trained for this task ({'; '.join(wrong)})")
    return trajectory


def prepare_run(recipe: Recipe, out: str | Path) -> Path:
    """Check the device, the task, the models and `teacher.path`, create the run folder and write run.json (and the
    files the task derives from its inputs, such as a text task's tokenizer.json); refuse a folder that holds a
    different recipe, unless this one only adds students to it (`grows`), or that was written from other input
    files (a grammar, tensors file or corpus whose contents changed), or a folder of other files without run.json
    (a user's folder given as --out by mistake). A folder written by an older version is the
    same recipe if its config, read by this version (which fills in keys added since with their defaults), equals
    this one. Nothing is written before every check has passed."""
    require_device(recipe.device)
    check_threads(recipe)
    out = Path(out)
    check_names(out)
    if out.exists() and not out.is_dir():
        raise RecipeError(f"--out {out} is a file, not a run folder")
    if out.is_dir() and not (out / "run.json").is_file():
        others = sorted(p.name for p in out.iterdir() if p.name not in (".lock", ".keep", ".gitkeep") and not
                        (p.name.startswith(".") and p.name.endswith(".tmp")))
        if others:
            raise RecipeError(f"--out {out} is not a run folder (no run.json) and holds other files "
                              f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); choose a new or empty folder")
    resolved = recipe.model_dump(mode="json")
    digest = config_hash(resolved)
    run_file = out / "run.json"
    previous = read_run_json(out) if run_file.is_file() else {"config_hash": digest}
    if previous.get("config_hash") != digest:
        readable = _as_read_now(previous.get("config", {}))
        stored = readable or _experiment(previous.get("config", {}))
        if stored != _experiment(resolved) and not (readable and grows(readable, _experiment(resolved))):
            changes = config_changes(stored, _experiment(resolved))
            same_teacher = not any(c.startswith(("task", "teacher", "seed", "device", "precision")) for c in changes)
            reuse = (f", or reuse its teacher in a new folder: teacher.path={out / 'teacher'} --out NEW"
                     if same_teacher and (out / "teacher" / "curve.json").is_file() else "")
            raise RecipeError(f"{out} holds a run of a different config ({'; '.join(changes[:8])}"
                              f"{'; ...' if len(changes) > 8 else ''}); choose another --out or delete it{reuse}")
    # the task's errors (a grammar or corpus missing or unreadable, ...) come before anything is written; a
    # run folder of this recipe lends the task what it derived before (a text task's tokenizer)
    task = check_task_and_models(recipe, folder=out if run_file.is_file() else None)
    check_sizes(recipe, task.model_io(), out)
    if not recipe.teacher.path and (out / "teacher" / "curve.json").is_file():  # a finished teacher is reused:
        check_trajectory(Trajectory(out / "teacher"))  # a damaged one is refused before run.json is rewritten
    check_resume_files(out)
    grammar_file = getattr(getattr(recipe.task, "grammar", None), "path", None)
    inputs = {"task.grammar.path": file_hash(grammar_file)} if grammar_file else {}
    inputs.update(task.input_hashes())
    if recipe.task.name == "tensors":
        inputs["task.path"] = file_hash(recipe.task.path)
    before = previous.get("inputs", inputs)
    changed = [key for key in sorted(set(before) | set(inputs)) if before.get(key) != inputs.get(key)]
    if changed:
        what = {"task.grammar.path": f"grammar file {grammar_file}", "task.corpus": "corpus", "task.path": f"tensors file (task.path) {getattr(recipe.task, 'path', '')}"}
        raise RecipeError(f"{out} was written with another version of the {what.get(changed[0], changed[0])} (its "
                          "contents changed since); choose another --out or delete it")
    artifacts = task.artifacts()
    if isinstance(recipe.teacher.path, str):
        theirs = Path(recipe.teacher.path).parent
        for name, content in artifacts.items():
            if isinstance(content, str) and (theirs / name).is_file() and (theirs / name).read_text(
                    encoding="utf-8") != content:
                raise RecipeError(f"teacher.path {recipe.teacher.path}: its run used another {name} ({theirs / name} "
                                  "differs from this run's); use the same task settings and corpus as that run")
    if not distributed.writes():  # a torchrun rank other than 0: rank 0 writes the folder
        return out
    lock_run_folder(out)  # everything is checked: from here on this process owns the folder
    remove_stale_temporaries(out)  # left by writes that a kill interrupted
    write_json(run_file, {"config_hash": digest, "config": resolved, "inputs": inputs,
                          "environment": environment_info()})
    write_text(out / "config.yaml", _yaml(resolved))
    for name, content in artifacts.items():
        if not (out / name).is_file():
            (write_text if isinstance(content, str) else write_json)(out / name, content)
    return out


def check_task_and_models(recipe: Recipe, folder: Path | None = None) -> Task:
    """Build the recipe's task and resolve its models against the task's io (the keywords of a model
    imported by path, with the task's values filled in), and check that a task imported by path has
    the probes the recipe asks for: every error is a RecipeError naming the recipe key, before any
    file is written. Returns the task (data seed 0, on the CPU; `folder`: see `build_task`)."""
    check_probe_options(recipe)
    check_eval_size(recipe)
    check_phase_evaluations(recipe)
    try:
        task = build_task(recipe.task, folder=folder)
    except ValueError as e:
        raise RecipeError(f"task: {e}") from None
    io = task.model_io()
    sections = [("students.model", recipe.students.model)] + ([] if recipe.teacher.path else
                                                              [("teacher.model", recipe.teacher.model)])
    for key, arch in sections:
        try:
            resolve_architecture(arch.model_dump(), io)
        except ValueError as e:
            raise RecipeError(f"{key}: {e}") from None
    if recipe.task.name not in TASK_PROBES:
        available = task.probes()
        for name in recipe.probe.enabled():
            if name not in available:
                raise RecipeError(f"probe.{name}: task {recipe.task.name} has no probe {name!r} (its probes(): "
                                  f"{sorted(available) or 'none'})")
    if recipe.teacher.path:
        check_schedules(recipe, teacher_trajectory(recipe, io))
    return task


def grows(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether `new` only adds students to `old` (seeds, budgets, methods, sweep checkpoints or seeds),
    so that every student already in a run folder of `old` is one that `new` would train, unchanged."""
    def rest(config: dict[str, Any]) -> dict[str, Any]:
        students = {k: v for k, v in config["students"].items() if k not in ("seeds", "steps", "methods", "sweep")}
        return {**config, "students": students}

    def sweep(students: dict[str, Any]) -> dict[str, Any] | None:
        s = students.get("sweep")
        return None if s is None else {"switch": s["switch"], "budget": s["budget"] or students["steps"][0],
                                       "seeds": set(s["seeds"] or students["seeds"]), "checkpoints": s["checkpoints"]}

    def by_label(students: dict[str, Any]) -> dict[str, Any]:
        return {m.get("label") or m["name"]: m for m in students["methods"]}

    if rest(old) != rest(new):
        return False
    a, b = old["students"], new["students"]
    kept = by_label(b)
    if not (set(a["seeds"]) <= set(b["seeds"]) and set(a["steps"]) <= set(b["steps"])
            and all(kept.get(label) == m for label, m in by_label(a).items())):
        return False
    before, after = sweep(a), sweep(b)
    if before is None:
        return True
    if after is None or (before["switch"], before["budget"]) != (after["switch"], after["budget"]):
        return False
    every_saved = after["checkpoints"] is None  # None: every saved checkpoint, a superset of any list
    return before["seeds"] <= after["seeds"] and (every_saved or (
        before["checkpoints"] is not None and set(before["checkpoints"]) <= set(after["checkpoints"])))


EXECUTION_KEYS = ("group_size", "group_memory_mb")  # students.*: how students are run, not which


def _experiment(config: dict[str, Any]) -> dict[str, Any]:
    """What defines the experiment: the resolved config without its prose description, the students'
    execution settings (a folder resumes under another group size) and the report section (a finished run
    re-reported with another `report.target` is scored anew from the students' curves)."""
    students = {k: v for k, v in config.get("students", {}).items() if k not in EXECUTION_KEYS}
    return {k: (students if k == "students" else v) for k, v in config.items() if k not in ("description", "report")}


def _as_read_now(config: dict[str, Any]) -> dict[str, Any] | None:
    """A stored resolved config as this version resolves it (None if it no longer validates)."""
    try:
        return _experiment(validate(config).model_dump(mode="json"))
    except RecipeError:
        return None


def config_changes(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs, as 'key: old -> new'."""
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        old, new = dict(enumerate(old)), dict(enumerate(new))
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for k in sorted(set(old) | set(new), key=str)
                for c in config_changes(old.get(k, "(absent)"), new.get(k, "(absent)"), f"{path}.{k}" if path else str(k))]
    return [] if old == new else [f"{path or 'config'}: {_brief(old)} -> {_brief(new)}"]


def _brief(value: Any) -> str:
    """A config value as `config_changes` shows it: a list of methods by their labels, not every key."""
    if isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        return "[" + ", ".join(str(v.get("label") or v["name"]) for v in value) + "]"
    return repr(value)


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


def finished_teacher(recipe: Recipe, out: Path, progress: bool = False) -> Trajectory | None:
    """The run's teacher trajectory (`teacher.path` or out/teacher) if its training has finished. A `teacher.path`
    may be any folder of progdistill checkpoints (without progdistill's curve.json too), but not an interrupted
    training, or a trajectory from outside (a Trainer folder, hub revisions): its curve comes from its
    trainer_state.json, or is evaluated on the task once and cached in out/teacher_curve.json."""
    if recipe.teacher.path:
        task = build_task(recipe.task, device=recipe.device, folder=out)
        trajectory = teacher_trajectory(recipe, task.model_io())
        if isinstance(trajectory, ExternalTrajectory):
            trajectory.evaluate_curve(task, out / "teacher_curve.json", recipe.device, progress)
        return trajectory
    folder = out / "teacher"
    return Trajectory(folder) if (folder / "curve.json").is_file() else None


def train_teacher(recipe: Recipe, out: Path, progress: bool = True, log: Sequence[str] = ()) -> Trajectory:
    """Train (or resume) the teacher, saving its trajectory under out/teacher (`log`: metric backends
    besides out/teacher/metrics.jsonl, see `trainer.train`)."""
    t: TeacherSection = recipe.teacher
    done = finished_teacher(recipe, out, progress)
    if done is not None:
        if not t.path and (out / "teacher" / "state").is_dir():  # a kill between its last two writes
            shutil.rmtree(out / "teacher" / "state")
        return done
    folder = out / "teacher"
    device = distributed.local_device(recipe.device)  # under torchrun: data-parallel, see distributed.py
    if distributed.is_distributed():
        distributed.setup(device)
        distributed.barrier()  # rank 0 has prepared the run folder
    task = build_task(recipe.task, data_seed=t.seed, device=device, folder=out)
    model, arch = make_model(t.model, task, t.seed, device)
    cfg = teacher_train_config(recipe)
    meta = {"model": arch, "role": "teacher", "parameters": count_parameters(model),
            "config_hash": config_hash(recipe.model_dump(mode="json")["teacher"])}
    train(model, task, cfg, folder, meta, progress=progress, desc="teacher", log=log)
    distributed.barrier()  # under torchrun: rank 0 has written the trajectory
    return Trajectory(folder)


def teacher_train_config(recipe: Recipe) -> TrainConfig:
    """The training loop's settings for the recipe's own teacher."""
    t: TeacherSection = recipe.teacher
    return TrainConfig(steps=t.steps, batch_size=t.batch_size, optim=optim_config(t.optim), precision=recipe.precision,
                       eval_every=t.eval_every, checkpoint_every=t.checkpoint_every,
                       log_checkpoints=t.log_checkpoints, batch1=recipe.batch1)


def teacher_phases(recipe: Recipe, trajectory: Trajectory, out: Path) -> Phases | None:
    """Detect the teacher's phase transition from its curve; None if its metric never improves."""
    p = recipe.phases
    curve = trajectory.curve()  # a damaged curve.json is an error (CheckpointError), not "no phases"
    try:
        phases = detect_phases(curve, p.metric, p.window, p.threshold, p.skip, p.sharpness, p.noise)
    except ValueError as e:
        write_json(out / "teacher_phases.json", {"error": str(e)})
        return None
    write_json(out / "teacher_phases.json", phases.to_dict())
    return phases


def probe_trajectory(recipe: Recipe, trajectory: Trajectory, out: Path, phases: Phases | None = None,
                     progress: bool = True, executor: Executor | None = None,
                     ready: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Run the task's configured probes on the teacher's checkpoints (results in out/probes/). The
    checkpoints of a probe are split between the jobs of `executor` (default: the recipe's `workers`
    local processes, or this process when 1; see executors.py); each job probes its checkpoints and
    returns their rows, and this process writes the probe's file once every checkpoint is done. `ready`:
    rows already computed, by probe name (`EarlyProbes`); those of checkpoints this probe needs are used."""
    task = build_task(recipe.task, device=recipe.device, folder=out)
    available = task.probes()
    steps = probe_steps(recipe, trajectory, phases)
    source = source_probes(recipe)
    results: dict[str, Any] = {}
    for name, options in recipe.probe.enabled().items():  # available: checked when the recipe was validated
        file = out / "probes" / f"teacher_{name}.json"
        done = _done_or_reused(file, source, lambda rows: [row.get("step") for row in rows] == steps, list)
        if done is not None:
            results[name] = done
            continue
        by_step = {row["step"]: row for row in (ready or {}).get(name, []) if row["step"] in steps}
        todo = [step for step in steps if step not in by_step]
        executor = executor or make_executor("local", recipe.workers)
        if isinstance(executor, InProcess) or len(todo) < 2:
            found = [probe_rows(available[name], options, trajectory, todo, recipe.device, progress, f"probe {name}")]
        else:
            parts = [todo[i::executor.jobs] for i in range(min(executor.jobs, len(todo)))]
            threads = executor.threads(recipe.threads)
            args = (recipe.model_dump(mode="json"), str(out), str(trajectory.root), name)
            found = executor.map(_probe_job, [(*args, part, threads) for part in parts], progress, f"probe {name}",
                                 sizes=[len(part) for part in parts])  # the bar counts checkpoints, not jobs
        by_step.update({row["step"]: row for part in found for row in part})
        rows = [by_step[step] for step in steps]
        write_json(file, rows)
        results[name] = rows
    if recipe.probe.oracle:
        results["oracle"] = probe_oracle(recipe, task, out, source)
    return results


def _job_trajectory(recipe: Recipe, out: Path, trajectory_root: str) -> Trajectory:
    """The teacher trajectory as a job in another process opens it again: `teacher.path` (a progdistill
    folder, a Trainer folder or hub revisions, whose curve is cached in the run folder) or the run's
    own teacher folder at `trajectory_root`."""
    if recipe.teacher.path:
        found = finished_teacher(recipe, out)
        assert found is not None  # a teacher.path is finished by definition
        return found
    return Trajectory(trajectory_root)


def _probe_job(recipe_json: dict[str, Any], out: str, trajectory_root: str, name: str, steps: list[int],
               threads: int) -> list[dict[str, Any]]:
    """One probe job as an executor runs it: the probe `name` on the teacher checkpoints `steps`, with
    `threads` torch threads; returns the rows (see `probe_rows`)."""
    recipe = validate(recipe_json)
    torch.set_num_threads(threads)
    task = build_task(recipe.task, device=recipe.device, folder=Path(out))
    trajectory = _job_trajectory(recipe, Path(out), trajectory_root)
    return probe_rows(task.probes()[name], recipe.probe.enabled()[name], trajectory, steps, recipe.device)


def source_probes(recipe: Recipe) -> Path | None:
    """The probes/ folder of the run that trained `teacher.path`, if that run had the same task, probe
    settings and device: its probe files are then what this run would compute, and are reused."""
    if not recipe.teacher.path or isinstance(recipe.teacher.path, list):
        return None
    teacher = Path(recipe.teacher.path).resolve()
    previous = _readable(teacher.parent / "run.json")
    if teacher.name != "teacher" or not isinstance(previous, dict):
        return None
    stored = _as_read_now(previous.get("config", {}))
    ours = recipe.model_dump(mode="json")
    if stored is None or stored["teacher"]["path"] or any(stored[k] != ours[k] for k in ("task", "probe", "device")):
        return None
    return teacher.parent / "probes"


def _readable(path: Path) -> Any:
    """The JSON content of `path`, or None if it is missing or unreadable."""
    try:
        return read_json(path)
    except CheckpointError:
        return None


def _done_or_reused(file: Path, source: Path | None, fits: Callable[[Any], bool], kind: type) -> Any:
    """The content of `file` if this run wrote it (and it is readable, see `io.read_derived_json`: else it is
    computed again); else that of the same file under `source` if it is a `kind` that `fits` (copied
    into this run); else None (to be computed)."""
    done = read_derived_json(file, kind, "computing it again")
    if done is not None:
        return done
    reused = _readable(source / file.name) if source else None
    if isinstance(reused, kind) and fits(reused):
        write_json(file, reused)
        return reused
    return None


def probe_oracle(recipe: Recipe, task: Task, out: Path, source: Path | None = None) -> dict[str, Any]:
    """The task's Bayes-optimal predictor scored like a teacher checkpoint: held-out loss and accuracy,
    and the n-gram probe if configured (out/probes/oracle.json; reused from `source` if there)."""
    file = out / "probes" / "oracle.json"
    done = _done_or_reused(file, source, lambda result: True, dict)
    if done is not None:
        return done
    result = score_oracle(task, recipe.probe.ngram.model_dump() if recipe.probe.ngram else None)
    write_json(file, result)
    return result


def score_oracle(task: Task, ngram: dict[str, Any] | None) -> dict[str, Any]:
    """Held-out loss and accuracy of the task's Bayes-optimal predictor; its n-gram probe with options
    `ngram` unless None."""
    oracle = task.oracle()
    result: dict[str, Any] = {"eval": task.evaluate(oracle)}
    if ngram is not None:
        result["ngram"] = task.probes()["ngram"](oracle, **ngram)
    return result


def sweep_methods(recipe: Recipe, trajectory: Trajectory) -> list[TwoShotMethod]:
    """The two-shot students of the (2, T) sweep, one per intermediate checkpoint."""
    sweep = recipe.students.sweep
    if sweep is None:
        return []
    steps = sweep.checkpoints or [s for s in trajectory.steps if 0 < s < trajectory.final_step]
    return [TwoShotMethod(checkpoint=step, switch=sweep.switch, label=f"two-shot@{step}") for step in steps]


def student_jobs(recipe: Recipe, trajectory: Trajectory) -> list[tuple[Any, int, int]]:
    """Every (method, budget, seed) to train: the methods at every budget, then the sweep."""
    s = recipe.students
    jobs = [(m, b, seed) for b in s.steps for m in s.methods for seed in s.seeds]
    if s.sweep is not None:
        budget = s.sweep.budget or s.steps[0]
        jobs += [(m, budget, seed) for m in sweep_methods(recipe, trajectory) for seed in (s.sweep.seeds or s.seeds)]
    return jobs


def _student(recipe: Recipe, out: Path, trajectory: Trajectory, phases: Phases | None, method, budget: int,
             seed: int, task: Task | None = None) -> Member:
    """One student (a method entry of the recipe) ready to train: fresh model, its data stream (`task`, or
    a new one of its seed), schedule, config, run folder and teacher-output cache."""
    s = recipe.students
    task = task or build_task(recipe.task, data_seed=STUDENT_SEED_OFFSET + seed, device=recipe.device, folder=out)
    model, arch = make_model(s.model, task, STUDENT_SEED_OFFSET + seed, recipe.device)
    schedule = make_schedule(method.model_dump(), trajectory.steps, phases, trajectory.curve(), budget)
    cfg = TrainConfig(steps=budget, batch_size=s.batch_size, optim=optim_config(s.optim), precision=recipe.precision,
                      kd=KDConfig(**s.kd.model_dump()), eval_every=s.eval_every, batch1=recipe.batch1)
    meta = {"model": arch, "role": "student", "method": method.model_dump(), "seed": seed, "budget": budget}
    outputs = "labels" if cfg.kd.tau == 0 else "logits"
    cache = out / "teacher-outputs" / f"seed-{seed}-batch-{s.batch_size}-{outputs}"
    return Member(model, task, cfg, student_folder(out, method.display, budget, seed), meta, schedule, cache,
                  f"{method.display} s{seed}")


def first_at_target(curve: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first evaluation of a student's curve at or above `target` accuracy (None if none is)."""
    return next((p for p in curve if p["accuracy"] is not None and p["accuracy"] >= target), None)


def _student_result(recipe: Recipe, student: Member, record: dict[str, Any], method, budget: int,
                    seed: int) -> dict[str, Any]:
    """Write the result.json of a trained student (its final model in `student.model`)."""
    s = recipe.students
    curve = record["curve"]
    reached = first_at_target(curve, recipe.report.target)
    assert student.schedule is not None
    result = {
        "label": method.display, "method": method.model_dump(), "budget": budget, "seed": seed,
        "final_accuracy": curve[-1]["accuracy"], "final_loss": curve[-1]["loss"],
        "samples_to_target": reached["samples"] if reached else None,
        "steps_to_target": reached["step"] if reached else None,
        "teacher_checkpoints": sorted({seg["checkpoint"] for seg in record["supervision"]
                                       if seg["checkpoint"] is not None}),
        "schedule": student.schedule.state_dict(),
        "loss_spikes": loss_spikes(curve),
    }
    if s.probe_final:
        probes, enabled = student.task.probes(), recipe.probe.enabled()  # both checked when the recipe was validated
        result["probes"] = {name: probes[name](student.model, **enabled[name]) for name in s.probe_final}
    write_json(Path(student.out) / "result.json", result)
    return result


def train_student(recipe: Recipe, out: Path, trajectory: Trajectory, phases: Phases | None, method,
                  budget: int, seed: int, progress: bool = True, stop_at: int | None = None,
                  log: Sequence[str] = ()) -> dict[str, Any]:
    """Train one student (a method entry of the recipe) and write its result.json; resumes if interrupted.
    `log`: metric backends besides the student folder's metrics.jsonl (see `trainer.train`)."""
    folder = student_folder(out, method.display, budget, seed)
    if (folder / "result.json").is_file():
        return read_json(folder / "result.json")
    m = _student(recipe, out, trajectory, phases, method, budget, seed)
    record = train(m.model, m.task, m.cfg, m.out, m.meta, m.schedule, trajectory, progress=progress, stop_at=stop_at,
                   desc=m.desc, teacher_cache=m.teacher_cache, log=log)
    if stop_at is not None and stop_at < budget:
        return {}
    return _student_result(recipe, m, record, method, budget, seed)


def train_students(recipe: Recipe, out: Path, trajectory: Trajectory, phases: Phases | None,
                   jobs: list[tuple[Any, int, int]], progress: bool = True, stop_at: int | None = None,
                   eval_chunk: int | None = None, log: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One group job: train the (method, budget, seed) students `jobs` together as one batched model
    (`group.train_group`; students of a seed share its data stream), each writing the files
    `train_student` writes; the finished ones are skipped. Returns their results ([] when stopped
    early by `stop_at`)."""
    pending = [job for job in jobs if not (student_folder(out, job[0].display, job[1], job[2]) / "result.json").is_file()]
    if len(pending) <= 1:
        return [train_student(recipe, out, trajectory, phases, *job, progress=progress, stop_at=stop_at, log=log)
                for job in jobs]
    tasks: dict[int, Task] = {}
    for _, _, seed in pending:
        if seed not in tasks:
            tasks[seed] = build_task(recipe.task, data_seed=STUDENT_SEED_OFFSET + seed, device=recipe.device, folder=out)
    members = [_student(recipe, out, trajectory, phases, m, b, seed, tasks[seed]) for m, b, seed in pending]
    if group_key(members[0]) is None:
        return [train_student(recipe, out, trajectory, phases, *job, progress=progress, stop_at=stop_at, log=log)
                for job in jobs]
    records = train_group(members, trajectory, progress=progress, stop_at=stop_at, eval_chunk=eval_chunk, log=log,
                          desc=f"{len(members)} students")
    for member, record, (m, b, seed) in zip(members, records, pending):
        if stop_at is None or b <= stop_at:  # finished (the others stopped early, their state saved)
            _student_result(recipe, member, record, m, b, seed)
    if stop_at is not None and stop_at < max(b for _, b, _ in pending):
        return []
    return [read_json(student_folder(out, m.display, b, seed) / "result.json") for m, b, seed in jobs]


def _student_job(recipe_json: dict[str, Any], out: str, trajectory_root: str, phases: dict | None,
                 jobs: list[tuple[dict[str, Any], int, int]], eval_chunk: int | None,
                 log: Sequence[str] = (), threads: int | None = None) -> list[dict[str, Any]]:
    """One group job as an executor runs it: everything rebuilt from plain data (the recipe as JSON, folder
    paths), `threads` torch threads (default: `threads_per_job(recipe.workers, recipe.threads)`)."""
    recipe = validate(recipe_json)
    torch.set_num_threads(threads or threads_per_job(recipe.workers, recipe.threads))
    ph = Phases(**phases) if phases else None
    return train_students(recipe, Path(out), _job_trajectory(recipe, Path(out), trajectory_root), ph,
                          [(METHOD.validate_python(m), b, seed) for m, b, seed in jobs], progress=False,
                          eval_chunk=eval_chunk, log=log)


def student_groups(recipe: Recipe, out: Path, trajectory: Trajectory, phases: Phases | None,
                   jobs: list[tuple[Any, int, int]], workers: int | None = None
                   ) -> tuple[list[list[tuple[Any, int, int]]], int | None]:
    """The unfinished students split into group jobs: at most `students.group_size` each (unset: 16 where
    `grouping_pays`, else 1; fewer where
    `students.group_memory_mb` says so); only students that resume from the same step together, and,
    where batches are padded to a common width (tasks with a padding token and no `fixed_width`), only
    students of one seed, whose batches have one width; ordered by seed (students of a seed share each
    step's batch and teacher outputs), budget and method; then split further while that shortens the
    run on `workers` concurrent jobs (default: the recipe's `workers`; `group.balance_groups`, a
    group's cost its students' steps), at least `workers` groups where there are enough students,
    costliest first.
    Also returns the most students one held-out forward pass may evaluate at once (None: all of a group)."""
    s = recipe.students
    pending = [job for job in jobs if not (student_folder(out, job[0].display, job[1], job[2]) / "result.json").is_file()]
    size, eval_chunk, padded = s.group_size or GROUP_SIZE, None, False
    if size > 1 and pending:
        probe = _student(recipe, out, trajectory, phases, *pending[0])
        if group_key(probe) is None or (s.group_size is None and not grouping_pays(probe.model)):
            size = 1
        else:
            train_bytes, eval_bytes = memory_per_student(probe.model, probe.task, s.batch_size)
            budget = s.group_memory_mb * 2**20
            size = max(1, min(size, budget // train_bytes))
            eval_chunk = max(1, budget // eval_bytes)
            padded = "pad_id" in probe.task.model_io() and not getattr(probe.task, "fixed_width", False)
    if size == 1:
        return [[job] for job in pending], None
    parts: dict[tuple[int, ...], list[tuple[Any, int, int]]] = {}
    for job in pending:
        state = student_folder(out, job[0].display, job[1], job[2]) / "state" / "state.json"
        start = read_state(state.parent).get("step", 0) if state.is_file() else 0  # unreadable: refused, as resume
        parts.setdefault((start, job[2]) if padded else (start,), []).append(job)
    order = {m.display: i for i, m in enumerate(s.methods)}
    groups = []
    for _, part in sorted(parts.items()):
        keys = [(seed, b, order.get(m.display, len(order)), m.display) for m, b, seed in part]
        groups += [[part[i] for i in group] for group in plan_groups(keys, size)]
    return balance_groups(groups, lambda job: job[1], workers or recipe.workers), eval_chunk


def run_students(recipe: Recipe, out: Path, trajectory: Trajectory, phases: Phases | None,
                 progress: bool = True, log: Sequence[str] = (),
                 executor: Executor | None = None) -> list[dict[str, Any]]:
    """Every (method, budget, seed) student, in groups trained as one batched model (`student_groups`),
    the groups run by `executor` (default: `recipe.workers` local processes, or this process when 1;
    see executors.py); each group job writes its students' files, and finished students are skipped
    (`log`: see `train_student`)."""
    jobs = student_jobs(recipe, trajectory)
    curve = trajectory.curve()
    for method, budget in {(m.display, b): (m, b) for m, b, _ in jobs}.values():  # refuse a bad schedule up front
        try:
            make_schedule(method.model_dump(), trajectory.steps, phases, curve, budget)
        except ValueError as e:
            why = ""
            if phases is None and "phases" in str(e):  # say why they were not found
                saved = _readable(out / "teacher_phases.json")
                found = saved.get("error") if isinstance(saved, dict) else None
                why = f" ({found}; teacher_phases.json)" if found else ""
                why += (f"; the teacher is kept: `progdistill report {out}` says how to train other methods on it"
                        if not recipe.teacher.path else "")
            raise RecipeError(schedule_error(method, e) + why) from None
    if all((student_folder(out, m.display, b, seed) / "result.json").is_file() for m, b, seed in jobs):
        return [read_json(student_folder(out, m.display, b, seed) / "result.json") for m, b, seed in jobs]
    executor = executor or make_executor("local", recipe.workers)
    threads = executor.threads(recipe.threads)  # (starts a local Ray instance: it knows the cluster's CPUs)
    groups, eval_chunk = student_groups(recipe, out, trajectory, phases, jobs, executor.jobs)
    sizes = [len(group) for group in groups]  # the bar counts students, not group jobs
    if isinstance(executor, InProcess):  # the objects themselves (a trajectory from outside has no folder)
        executor.map(lambda group: train_students(recipe, out, trajectory, phases, group, progress,
                                                  eval_chunk=eval_chunk, log=log),
                     [(group,) for group in groups], progress, "students", sizes)
    else:
        args = (recipe.model_dump(mode="json"), str(out), str(trajectory.root), phases.to_dict() if phases else None)
        executor.map(_student_job, [(*args, [(m.model_dump(), b, seed) for m, b, seed in group], eval_chunk,
                                     tuple(log), threads) for group in groups], progress, "students", sizes)
    return [read_json(student_folder(out, m.display, b, seed) / "result.json") for m, b, seed in jobs]


def _method_summary(out: Path, label: str, budget: int, seeds: list[int], batch_size: int,
                    target: float) -> dict[str, Any] | None:
    """Results of the seeds that have finished (None if none has); samples / steps to `target` are read
    off each student's curve.json, so a run re-reported with another `report.target` is scored anew."""
    folders = {str(seed): student_folder(out, label, budget, seed) for seed in seeds}
    runs = {seed: read_json(f / "result.json") for seed, f in folders.items() if (f / "result.json").is_file()}
    if not runs:
        return None
    for seed, r in runs.items():
        curve_file = folders[seed] / "curve.json"
        if curve_file.is_file():
            reached = first_at_target(read_json(curve_file), target)
            r["samples_to_target"] = reached["samples"] if reached else None
            r["steps_to_target"] = reached["step"] if reached else None
    never = budget * batch_size  # a run that never reaches the target counts as the whole budget ...
    stt = [r["samples_to_target"] if r["samples_to_target"] is not None else never for r in runs.values()]
    reached = sum(r["samples_to_target"] is not None for r in runs.values())
    keys = ("final_accuracy", "samples_to_target", "steps_to_target", "teacher_checkpoints", "schedule", "probes",
            "loss_spikes")
    return {
        "seeds": {seed: {k: r[k] for k in keys if k in r} for seed, r in runs.items()},
        "median_final_accuracy": statistics.median(r["final_accuracy"] for r in runs.values()),
        "median_samples_to_target": int(statistics.median(stt)),
        # ... so the median is only a lower bound unless more than half the seeds reached it
        "median_samples_is_lower_bound": reached <= len(runs) // 2,
        "reached_target": reached,
    }


def sweep_best(sweep: list[dict[str, Any]], saved: list[int], phases: Phases | None,
               auto_choice: dict[str, int] | None) -> dict[str, Any]:
    """The (2, T) sweep's best T (highest median): on how many of the seeds every T ran it is the best T,
    where it lies against the detected drop, the best T inside the drop, how many saved checkpoints
    `auto`'s choice is from it, and the other T whose best seed reaches its worst seed."""
    best = max(sweep, key=lambda e: e["median_final_accuracy"])
    t, floor = best["checkpoint"], min(best["final_accuracies"])
    by_seed = [dict(zip(e["seeds"], e["final_accuracies"])) for e in sweep]  # per T: seed -> accuracy
    common = set.intersection(*(set(accuracies) for accuracies in by_seed))
    wins = sum(max(range(len(sweep)), key=lambda i: by_seed[i][seed]) == sweep.index(best) for seed in common)
    result: dict[str, Any] = {
        "checkpoint": t, "median_final_accuracy": best["median_final_accuracy"],
        "best_on_seeds": wins, "seeds_compared": len(common),
        "overlapping": [e["checkpoint"] for e in sweep if e is not best and max(e["final_accuracies"]) >= floor]}
    if phases is not None:
        result["phase"] = ("before the drop" if t < phases.drop_start else "after the drop"
                           if t > phases.drop_end else "inside the drop")
        inside = [e for e in sweep if phases.drop_start <= e["checkpoint"] <= phases.drop_end]
        if inside:
            top = max(inside, key=lambda e: e["median_final_accuracy"])
            result["best_inside_drop"] = {"checkpoint": top["checkpoint"],
                                          "median_final_accuracy": top["median_final_accuracy"]}
    if auto_choice is not None and t in saved:
        result["auto"] = auto_choice["middle"]
        result["checkpoints_from_auto"] = abs(saved.index(t) - saved.index(auto_choice["middle"]))
    return result


def summarize(recipe: Recipe, out: Path, trajectory: Trajectory, phases: Phases | None) -> dict[str, Any]:
    """summary.json: per method, per budget, per seed results and medians; the (2, T) sweep; the teacher's
    curve, phases, the checkpoints before / in the middle of (auto's choice) / after its transition.
    Students that have not finished are left out, so a run folder can be reported at any stage."""
    s = recipe.students
    methods = {}
    for m in s.methods:
        budgets = {str(b): entry for b in s.steps if (entry := _method_summary(
            out, m.display, b, s.seeds, s.batch_size, recipe.report.target)) is not None}
        if budgets:
            methods[m.display] = {"method": m.model_dump(), "budgets": budgets}
    sweep = []
    if s.sweep is not None:
        budget = s.sweep.budget or s.steps[0]
        for m in sweep_methods(recipe, trajectory):
            entry = _method_summary(out, m.display, budget, s.sweep.seeds or s.seeds, s.batch_size,
                                           recipe.report.target)
            if entry is None:
                continue
            sweep.append({"checkpoint": m.checkpoint, "switch": m.switch, "budget": budget,
                          "seeds": [int(seed) for seed in entry["seeds"]],
                          "final_accuracies": [r["final_accuracy"] for r in entry["seeds"].values()],
                          "median_final_accuracy": entry["median_final_accuracy"]})
    auto_choice = None
    if phases is not None:
        auto_choice = {ref: resolve_checkpoint(ref, trajectory.steps, phases) for ref in ("before", "middle", "after")}
    curve = trajectory.curve()
    phases_file = out / "teacher_phases.json"
    phases_error = read_json(phases_file).get("error") if phases is None and phases_file.is_file() else None
    summary = {
        "recipe": recipe.name, "target": recipe.report.target, "methods": methods, "sweep": sweep,
        "teacher": {"curve": curve, "checkpoints": trajectory.steps,
                    "phases": phases.to_dict() if phases else None, "phases_error": phases_error,
                    "auto_checkpoint": auto_choice,
                    "loss_spikes": loss_spikes(curve)},
    }
    if sweep:
        summary["sweep_best"] = sweep_best(sweep, trajectory.steps, phases, auto_choice)
    later = "left out of the summary (the run's probe stage computes it again)"
    oracle = read_derived_json(out / "probes" / "oracle.json", dict, later)
    if oracle is not None:
        summary["oracle"] = oracle
    if (out / "corpus.json").is_file():
        summary["corpus"] = read_json(out / "corpus.json")
    rows = read_derived_json(out / "probes" / "teacher_monomials.json", list, later)
    if rows is not None:
        summary["teacher"]["monomial_peak"] = {
            "transition": monomial_peak(rows, window=transition_window(summary["teacher"]["phases"])),
            "whole_trajectory": monomial_peak(rows)}
    write_json(out / "summary.json", summary)
    return summary


def run_stages(recipe: Recipe, out: str | Path, progress: bool = True, log: Sequence[str] = (),
               then: Callable[[Recipe, Path, dict[str, Any]], Any] | None = None,
               executor: Executor | None = None) -> dict[str, Any]:
    """Every stage but the report (teacher, phases, probes, students, summary); returns the summary, also
    in out/summary.json. `then(recipe, out, summary)` runs before the run folder is unlocked:
    `progdistill.run_experiment` (module `pipeline`) writes the report there. `log`: metric backends
    ("tensorboard", "wandb") besides every model's metrics.jsonl; they change no number and are not part
    of the recipe. `executor`: where the student group jobs run (see `run_students`)."""
    _set_threads(recipe)
    require_backends(log)
    out = prepare_run(recipe, out)
    own = executor is None
    executor = executor or make_executor("local", recipe.workers)
    try:
        early = EarlyProbes()
        if not recipe.teacher.path and not (out / "teacher" / "curve.json").is_file():
            executor.start()  # worker processes start (imports) while the teacher trains
            early = EarlyProbes.start(recipe, out, executor, sorted(checkpoint_steps(teacher_train_config(recipe))))
        try:
            trajectory = train_teacher(recipe, out, progress, log)
        except BaseException:
            early.finish(wanted=False)
            raise
        ready = early.finish()
        phases = teacher_phases(recipe, trajectory, out)
        probe_trajectory(recipe, trajectory, out, phases, progress, executor, ready)
        run_students(recipe, out, trajectory, phases, progress, log, executor)
        summary = summarize(recipe, out, trajectory, phases)
        if then is not None:
            then(recipe, out, summary)
    finally:
        if own:
            executor.close()
        unlock_run_folder(out)
    return summary
