"""Plan a run before writing anything: sizes that cannot fit, probe options, a `teacher.path` trajectory's
files and the students' schedules, each refused with the recipe key (or file) and the estimate.

Estimates are deliberately simple and conservative (a model's float32 parameters, their gradients and
two optimizer moments; the held-out set's tensors; the saved checkpoints' bytes), compared with the memory
available now (`psutil` when installed, else `os.sysconf`) and the free disk under the run folder.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .config import Recipe, RecipeError
from .io import CheckpointError, read_json

MAX_THREADS_PER_CORE = 4  # `threads` beyond this many per core are refused
MAX_LAYERS = 4096  # model depth / layers beyond this are refused before a model is built
MAX_EVALUATIONS = 10**8  # evaluations of one training run (its curve is kept in memory)
MAX_BATCH = 2**24  # examples in one training batch
MAX_CHECKPOINTS = 10**6
MAX_PROBE_SETS = 10**6  # probe.monomials.off_support  # checkpoints of one teacher (their steps are planned in memory)
FLOAT_DTYPES = ("F32", "F16", "BF16")  # dtypes a checkpoint may hold (training is float32; fp16/bf16 AMP)
_PROBE_EVAL = 256  # held-out examples built to measure an example's bytes
_BYTES_PER_PARAMETER = 16  # float32 weights, gradients and two optimizer moments (AdamW)


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (psutil's `available`, else free + cached pages)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def free_disk(path: Path) -> int | None:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent); None where that
    filesystem reports no size at all (/proc, /sys: writing there fails with its own reason)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return None if usage.total == 0 else usage.free


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.3g}"


def model_parameters(key: str, arch: dict[str, Any], io: dict[str, Any]) -> int | None:
    """Parameters of a recipe's model (`key`: its recipe key) counted without allocating its weights (built
    on the meta device); None for a model loaded from outside (type hf). RecipeError for more than
    MAX_LAYERS layers."""
    from .models import build_model, resolve_architecture

    if arch.get("type") == "hf":
        return None
    for name in ("depth", "layers"):
        value = arch.get(name)
        if isinstance(value, int) and value > MAX_LAYERS:
            raise RecipeError(f"{key}.{name}: {value:,} layers is beyond the limit of {MAX_LAYERS:,}",
                              keys=(f"{key}.{name}",))
    resolved = resolve_architecture(arch, io)
    try:
        with torch.device("meta"):
            model = build_model(resolved)
    except (TypeError, OverflowError, RuntimeError) as e:  # sizes beyond what PyTorch can index
        raise RecipeError(f"{key}: cannot be built ({str(e).splitlines()[0][:200]})", keys=(key, "task")) from None
    return sum(p.numel() for p in model.parameters())


def check_threads(recipe: Recipe, cores: int | None = None) -> None:
    """Refuse `threads` above 4 times this machine's cores (`cores`, default os.cpu_count(), the count
    `executors.threads_per_job` splits): PyTorch gains nothing from more threads than cores, and OpenMP
    fails (or crashes the process) creating tens of thousands of them."""
    cores = cores or os.cpu_count() or 1
    if recipe.threads is not None and recipe.threads > MAX_THREADS_PER_CORE * cores:
        raise RecipeError(f"threads: {recipe.threads} is more than {MAX_THREADS_PER_CORE}x this machine's {cores} "
                          f"core{'s' if cores != 1 else ''} (more threads than cores only slow PyTorch down)",
                          keys=("threads",))


def check_sizes(recipe: Recipe, io: dict[str, Any], out: Path, memory: int | None = None,
                disk: int | None = None) -> None:
    """Refuse a model whose training state (16 bytes a parameter) exceeds the available memory, a teacher
    whose checkpoints (4 bytes a parameter each) exceed the free disk under `out`, and a training run with
    more than MAX_EVALUATIONS evaluations. `memory` / `disk`: bytes (default: measured now)."""
    memory = available_memory() if memory is None else memory
    sections = [("students.model", recipe.students.model)]
    if not recipe.teacher.path:
        sections.insert(0, ("teacher.model", recipe.teacher.model))
    parameters: dict[str, int | None] = {}
    for key, arch in sections:
        n = parameters[key] = model_parameters(key, arch.model_dump(), io)
        if n is not None and n * _BYTES_PER_PARAMETER > memory:
            raise RecipeError(f"{key}: {n:,} parameters need about {_size(n * _BYTES_PER_PARAMETER)} to train "
                              f"(weights, gradients, optimizer state), more than the {_size(memory)} of memory available",
                              keys=(key, "task"))
    sizes = [("students", recipe.students)] + ([] if recipe.teacher.path else [("teacher", recipe.teacher)])
    numbers = next((v for k, v in io.items() if k in ("input_dim", "seq_len") and isinstance(v, int)), 1)
    for name, section in sizes:
        batch = section.batch_size
        if batch > MAX_BATCH or batch * numbers * 4 > memory:
            raise RecipeError(f"{name}.batch_size: {batch:,} examples of {numbers:,} inputs a batch is about "
                              f"{_size(batch * numbers * 4)} before any activation, beyond the limit of {MAX_BATCH:,} "
                              f"examples or the {_size(memory)} of memory available",
                              keys=(f"{name}.batch_size", "task"))
    t = recipe.teacher
    if not t.path:
        evaluations = t.steps // t.eval_every
        if evaluations > MAX_EVALUATIONS:
            raise RecipeError(f"teacher.steps: {t.steps:,} steps evaluated every {t.eval_every:,} is {evaluations:,} "
                              f"evaluations, beyond the limit of {MAX_EVALUATIONS:,}",
                              keys=("teacher.steps", "teacher.eval_every"))
        if t.checkpoint_every:
            count = t.steps // t.checkpoint_every + 2 + (t.log_checkpoints or 0)
            if count > MAX_CHECKPOINTS:
                raise RecipeError(f"teacher.checkpoint_every: {t.steps:,} steps saved every {t.checkpoint_every:,} is "
                                  f"about {count:,} checkpoints, beyond the limit of {MAX_CHECKPOINTS:,}",
                                  keys=("teacher.checkpoint_every", "teacher.steps"))
            need = count * (parameters["teacher.model"] or 0) * 4
            disk = free_disk(out) if disk is None else disk
            if disk is not None and need > disk:
                raise RecipeError(f"teacher.checkpoint_every: {t.steps:,} steps saved every {t.checkpoint_every:,} is "
                                  f"about {count:,} checkpoints of {_size((parameters['teacher.model'] or 0) * 4)}, "
                                  f"{_size(need)} in all, more than the {_size(disk)} free under {out}",
                                  keys=("teacher.checkpoint_every", "teacher.steps", "teacher.model"))
    s = recipe.students
    for budget in s.steps:
        if budget // s.eval_every > MAX_EVALUATIONS:
            raise RecipeError(f"students.steps: budget {budget:,} evaluated every {s.eval_every:,} is beyond the "
                              f"limit of {MAX_EVALUATIONS:,} evaluations",
                              keys=("students.steps", "students.eval_every"))


def check_eval_size(recipe: Recipe, memory: int | None = None) -> None:
    """Refuse a `task.eval_size` whose held-out tensors exceed the available memory, measured on a copy of
    the task with a small held-out set (only when eval_size is large)."""
    from .tasks import build_task

    size = getattr(recipe.task, "eval_size", None)
    if not isinstance(size, int) or size <= 10**6:
        return
    memory = available_memory() if memory is None else memory
    small = None
    for probe in (_PROBE_EVAL, 16):  # a small task may not hold 256 held-out examples (parity with d = 8)
        try:
            small = build_task(recipe.task.model_copy(update={"eval_size": probe}))
            break
        except ValueError:
            continue
    if small is None:
        return  # the task's own checks refuse it, with its reason

    held = sum(v.element_size() * v.numel() for k, v in vars(small).items()
               if k.startswith("eval") and isinstance(v, torch.Tensor))
    per_example = held / max(1, min(_PROBE_EVAL, len(getattr(small, "eval_inputs", [])) or _PROBE_EVAL))
    if per_example * size > memory:
        raise RecipeError(f"task.eval_size: {size:,} held-out examples need about {_size(per_example * size)}, more "
                          f"than the {_size(memory)} of memory available", keys=("task",))


def check_probe_options(recipe: Recipe) -> None:
    """Probe options the task decides, for the parity task: `probe.monomials.degrees` within 1..k, at most
    MAX_PROBE_SETS off-support sets, probe inputs that fit in memory."""
    monomials = recipe.probe.monomials
    if monomials is not None and recipe.task.name == "parity":
        if monomials.off_support > MAX_PROBE_SETS:
            raise RecipeError(f"probe.monomials.off_support: {monomials.off_support:,} sets per degree is beyond the "
                              f"limit of {MAX_PROBE_SETS:,}", keys=("probe.monomials.off_support",))
        need = monomials.samples * recipe.task.d * 4
        if need > available_memory():
            raise RecipeError(f"probe.monomials.samples x task.d: {monomials.samples:,} inputs of {recipe.task.d:,} "
                              f"signs need about {_size(need)}, more than the {_size(available_memory())} of memory "
                              "available", keys=("probe.monomials.samples", "task.d"))
    if monomials is not None and monomials.degrees is not None and recipe.task.name == "parity":
        k = recipe.task.k
        bad = [j for j in monomials.degrees if not 1 <= j <= k]
        if bad:
            raise RecipeError(f"probe.monomials.degrees: {bad} outside 1..{k} (the degrees of task.k = {k})",
                              keys=("probe.monomials.degrees", "task.k"))


def check_trajectory(trajectory) -> None:
    """A progdistill trajectory folder, read before anything is written: its checkpoints' files
    (`check_checkpoint_files`), each meta.json an object whose `model` rebuilds (on the meta device), and
    its curve (curve.json, or the metas' `eval`) a non-empty list of objects with a step, a loss and an accuracy. Raises CheckpointError
    naming the file."""
    from .io import read_json
    from .models import build_model

    root = trajectory.root
    check_checkpoint_files(root, trajectory.steps)
    for step in trajectory.steps:
        file = root / f"checkpoint-{step}" / "meta.json"
        meta = read_json(file)
        arch = meta.get("model") if isinstance(meta, dict) else None
        if not isinstance(arch, dict) or not isinstance(arch.get("type"), str):
            raise CheckpointError(f"{file}: expected an object with a 'model' architecture object (with a 'type')")
        if arch["type"] == "hf":
            continue
        try:
            with torch.device("meta"):
                build_model(arch)
        except Exception as e:  # a user's model class may raise anything
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{file}: cannot rebuild its model: {why}") from None
    trajectory.curve()  # checks its shape (Trajectory.curve)


def check_checkpoint_files(root: Path, steps: list[int]) -> None:
    """Every checkpoint of a trajectory folder: at least two, each model.safetensors with a readable
    header (not truncated, not a pickle) and floating-point tensors of a training dtype (an int8 or float64
    re-save is refused, not cast). Raises CheckpointError naming the file."""
    from safetensors import safe_open

    if len(steps) < 2:
        raise CheckpointError(f"{root}: a trajectory needs at least 2 checkpoints, found {len(steps)} "
                              f"(checkpoint-{steps[0]})")
    for step in steps:
        file = root / f"checkpoint-{step}" / "model.safetensors"
        if not file.is_file():
            raise CheckpointError(f"{file}: checkpoint file not found")
        size = file.stat().st_size
        try:
            with open(file, "rb") as f:
                header = int.from_bytes(f.read(8), "little")
            if header <= 0 or 8 + header > size:
                raise ValueError("its header runs past the end of the file")
            with safe_open(str(file), framework="pt") as st:
                dtypes = {str(st.get_slice(name).get_dtype()) for name in st.keys()}
                end = 8 + header + sum(_nbytes(st.get_slice(name)) for name in st.keys())
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{file}: cannot read checkpoint (truncated or not safetensors?): "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        if end > size:
            raise CheckpointError(f"{file}: truncated ({size:,} bytes, its header describes {end:,})")
        wrong = sorted(dtypes - set(FLOAT_DTYPES))
        if wrong:
            raise CheckpointError(f"{file}: tensors of dtype {', '.join(wrong)}; a teacher checkpoint holds "
                                  f"{'/'.join(FLOAT_DTYPES)} tensors (re-save it as float32; it is not cast silently)")


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


def _nbytes(tensor_slice) -> int:
    n = 1
    for dim in tensor_slice.get_shape():
        n *= dim
    return n * _DTYPE_BYTES.get(str(tensor_slice.get_dtype()), 1)


def check_schedules(recipe: Recipe, trajectory) -> None:
    """Every student method's schedule built over a `teacher.path` trajectory's checkpoints (with its phases
    detected from its curve, as the run will), so that `two-shot checkpoint: 99999` is refused up front."""
    from .schedule import make_schedule
    from .trajectory import Trajectory, detect_phases

    if type(trajectory) is not Trajectory:  # a trajectory from outside: its curve may need evaluating first
        return
    curve = trajectory.curve()
    p = recipe.phases
    try:
        phases = detect_phases(curve, p.metric, p.window, p.threshold, p.skip, p.sharpness, p.noise)
    except (ValueError, KeyError, TypeError):
        phases = None
    for method in recipe.students.methods:
        for budget in recipe.students.steps:
            try:
                make_schedule(method.model_dump(), trajectory.steps, phases, curve, budget)
            except ValueError as e:
                raise RecipeError(schedule_error(method, e)) from None


def check_resume_files(out: Path) -> None:
    """What a resume of the run folder `out` reads and does not recompute must be readable, checked here,
    before run.json or any other file is rewritten, so that a refusal leaves the folder as it was: each
    saved training state (`teacher/state/state.json`, a student's `state/state.json`: a JSON object; the
    error says how to restart that model) and each finished student's result.json and curve.json (a JSON
    object, a list). Raises CheckpointError naming the file."""
    from .trainer import read_state

    for state in [out / "teacher" / "state" / "state.json",
                  *sorted((out / "students").rglob("state/state.json"))]:
        if state.is_file():
            read_state(state.parent)
    students = out / "students"
    if not students.is_dir():
        return
    for result in sorted(students.rglob("result.json")):
        _finished_file(result, dict, "an object")
        if (curve := result.with_name("curve.json")).is_file():
            _finished_file(curve, list, "a list")


def _finished_file(path: Path, kind: type, what: str) -> None:
    """A finished student's file must be readable JSON of `kind`; CheckpointError with the way out otherwise."""
    hint = "delete that student's folder to train it again"
    try:
        content = read_json(path)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; {hint}") from None
    if not isinstance(content, kind):
        raise CheckpointError(f"{path}: expected {what}, got {type(content).__name__}; {hint}")


def schedule_error(method, error: ValueError) -> str:
    """`students: method 'LABEL': ...` for a schedule `make_schedule` refused, without saying the method
    twice where the schedule's message already starts with it (an unlabelled method)."""
    message = str(error)
    if method.display == method.name and message.startswith(f"method {method.name!r} "):
        return f"students: {message}"
    return f"students: method {method.display!r}: {message}"


def check_phase_evaluations(recipe: Recipe) -> None:
    """A teacher trained by this run must be evaluated often enough for its phases to be detected
    (`detect_phases` needs >= 4 evaluations after the first `phases.skip` of the run) when a student
    method needs them (a checkpoint given relative to the drop, or `auto`); RecipeError naming
    `teacher.eval_every` otherwise, before the teacher trains rather than after."""
    from .schedule import make_schedule
    from .trainer import checkpoint_steps

    t = recipe.teacher
    if t.path:
        return
    first = math.ceil(recipe.phases.skip * t.steps)

    def multiples(every: int) -> int:  # of `every` in [first, steps], without listing them (steps may be huge)
        return t.steps // every - (first + every - 1) // every + 1

    if multiples(t.eval_every) >= 4 or (t.checkpoint_every and multiples(t.checkpoint_every) >= 4):
        return
    saved = sorted(checkpoint_steps(t))  # few: fewer than 4 multiples of checkpoint_every
    evals = {0, t.steps} | set(range(-(-first // t.eval_every) * t.eval_every, t.steps + 1, t.eval_every)) | set(saved)
    count = sum(step >= first for step in evals)
    if count >= 4:
        return
    for method in recipe.students.methods:
        for budget in recipe.students.steps:
            try:
                make_schedule(method.model_dump(), saved, None, None, budget)
            except (ValueError, TypeError) as e:
                if "needs the teacher's phases" in str(e):
                    raise RecipeError(
                        f"teacher.eval_every: method {method.display!r} needs the teacher's phases, found from >= 4 "
                        f"evaluations after the first {recipe.phases.skip:.0%} of the run (phases.skip); teacher.steps={t.steps} with "
                        f"teacher.eval_every={t.eval_every} gives {count}: lower teacher.eval_every",
                        keys=("teacher.eval_every", "teacher.steps", "phases.skip")) from None
