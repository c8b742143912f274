"""Executors: the student group jobs and the probe jobs give the same run folder in this process, in
local processes and on a local Ray instance; bad executor settings stop before any file is written; the thread rule."""

import json
import shutil

import pytest

from progdistill.cli import main
from tiny import parity_workers  # noqa: E402
from progdistill.executors import ExecutorError, InProcess, LocalProcesses, make_executor, threads_per_job

SMALL = parity_workers()


def _summary(recipe, folder):
    """summary.json's methods (what `progdistill run` and `report` write, without the report's plots)."""
    from progdistill.config import load_recipe
    from progdistill.experiment import finished_teacher, summarize, teacher_phases

    r = load_recipe(str(recipe))
    trajectory = finished_teacher(r, folder)
    summarize(r, folder, trajectory, teacher_phases(r, trajectory, folder))
    return json.dumps(json.loads((folder / "summary.json").read_text())["methods"], sort_keys=True)


def _without_students(source, target):
    """A copy of a run folder with a finished teacher, before its students."""
    shutil.copytree(source, target)
    for name in ("students", "teacher-outputs"):
        shutil.rmtree(target / name, ignore_errors=True)
    (target / "summary.json").unlink(missing_ok=True)


def test_threads_per_job_splits_the_cores_between_jobs():
    assert threads_per_job(1, cores=8) == 8
    assert threads_per_job(2, cores=8) == 4
    assert threads_per_job(3, cores=8) == 2
    assert threads_per_job(16, cores=8) == 1  # never below one thread
    assert threads_per_job(2, threads=6, cores=64) == 3  # the recipe's `threads` is the total
    assert threads_per_job(4, threads=2, cores=64) == 1
    with pytest.raises(ExecutorError, match="--jobs: must be at least 1"):
        threads_per_job(0)


def test_make_executor_picks_and_checks():
    assert isinstance(make_executor(), InProcess)
    assert isinstance(make_executor("local", 1), InProcess)
    assert isinstance(make_executor("local", 3), LocalProcesses) and make_executor("local", 3).threads(6) == 2
    with pytest.raises(ExecutorError, match="unknown executor 'slurm'"):
        make_executor("slurm")
    with pytest.raises(ExecutorError, match="--ray-address: only with --executor ray"):
        make_executor("local", address="auto")


def test_bad_executor_stops_before_any_file(tmp_path, capsys, monkeypatch):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(SMALL)
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--executor", "slurm", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --executor: unknown executor 'slurm'") and len(err.splitlines()) == 1
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert main(["distill", str(recipe), "--out", str(out), "--executor", "ray", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'progdistill[ray]'" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_every_executor_gives_the_same_summary(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(SMALL)
    teacher = tmp_path / "teacher"
    assert main(["teacher", str(recipe), "--out", str(teacher), "--quiet"]) == 0

    default = tmp_path / "default"
    _without_students(teacher, default)
    assert main(["distill", str(recipe), "--out", str(default), "--quiet"]) == 0
    expected = _summary(recipe, default)
    assert len(json.loads(expected)) == 2
    assert main(["probe", str(recipe), "--out", str(default), "--quiet"]) == 0
    probes = (default / "probes" / "teacher_monomials.json").read_bytes()
    assert len(json.loads(probes)) == 13  # every checkpoint, 0 to 600

    processes = tmp_path / "jobs"
    _without_students(teacher, processes)
    assert main(["distill", str(recipe), "--out", str(processes), "--jobs", "2", "--quiet"]) == 0
    assert _summary(recipe, processes) == expected
    assert main(["probe", str(recipe), "--out", str(processes), "--jobs", "2", "--quiet"]) == 0
    assert (processes / "probes" / "teacher_monomials.json").read_bytes() == probes  # checkpoints split in 2 jobs
    # resumable: `run` finds every student finished and trains none
    before = {p: p.stat().st_mtime_ns for p in (processes / "students").rglob("*.json")}
    assert main(["run", str(recipe), "--out", str(processes), "--jobs", "2", "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (processes / "students").rglob("*.json")} == before
    assert json.dumps(json.loads((processes / "summary.json").read_text())["methods"], sort_keys=True) == expected

    ray = pytest.importorskip("ray")
    on_ray = tmp_path / "ray"
    _without_students(teacher, on_ray)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        assert main(["distill", str(recipe), "--out", str(on_ray), "--executor", "ray", "--quiet"]) == 0
        assert main(["probe", str(recipe), "--out", str(on_ray), "--executor", "ray", "--jobs", "2", "--quiet"]) == 0
    finally:
        ray.shutdown()
    assert _summary(recipe, on_ray) == expected
    assert (on_ray / "probes" / "teacher_monomials.json").read_bytes() == probes


def test_local_workers_start_early_and_serve_every_map():
    import os

    executor = LocalProcesses(2)
    try:
        executor.start()  # spawned now (while a teacher would train), before any job
        assert len(executor._pool._processes) == 2
        first = set(executor.map(os.getpid, [()] * 6))
        second = set(executor.map(os.getpid, [()] * 6))
        assert os.getpid() not in first and len(first | second) <= 2  # the same two workers serve both maps
        with pytest.raises(ValueError, match="invalid literal for int"):
            executor.map(int, [("not a number",)])  # a failed job: its pool is closed ...
        assert executor._pool is None
        third = set(executor.map(os.getpid, [()] * 4))  # ... and the next map gets a new one
        assert third and not third & (first | second)
    finally:
        executor.close()
    assert executor._pool is None
    for pid in third:  # closed: the workers have exited
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_ctrl_c_interrupts_a_job_and_an_idle_worker_ignores_it(capfd):
    import os
    import signal
    import threading
    import time

    executor = LocalProcesses(2)
    try:
        executor.start()
        workers = list(executor._pool._processes)
        time.sleep(3)  # the workers are importing, then idle: Ctrl-C (SIGINT to each) leaves them be
        for pid in workers:
            os.kill(pid, signal.SIGINT)
        assert set(executor.map(os.getpid, [()] * 4)) <= set(workers)
        threading.Timer(2.0, lambda: [os.kill(pid, signal.SIGINT) for pid in workers]).start()
        began = time.monotonic()
        with pytest.raises(KeyboardInterrupt):  # inside a job, Ctrl-C interrupts it as in the main process
            executor.map(time.sleep, [(60,)])
        assert time.monotonic() - began < 30
    finally:
        executor.close()
    assert "Traceback" not in capfd.readouterr().err


def test_sigterm_interrupts_a_running_job_so_the_pool_shuts_down_at_once(capfd):
    """SIGTERM to the main process alone (`kill PID`): Terminated there, and the job running in a worker is
    interrupted too (SIGINT forwarded, as Ctrl-C sends it to every process), so closing the pool does not
    wait for the job to end."""
    import os
    import signal
    import threading
    import time

    from progdistill.processes import Terminated, sigterm_as_interrupt

    executor = LocalProcesses(2)
    try:
        with sigterm_as_interrupt():
            executor.start()
            workers = list(executor._pool._processes)
            assert set(executor.map(os.getpid, [()] * 4)) <= set(workers)  # started: a job starts at once
            began = time.monotonic()
            threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
            with pytest.raises(Terminated):
                executor.map(time.sleep, [(60,)])
    finally:
        executor.close()
    assert time.monotonic() - began < 30
    for pid in workers:  # closed: the workers have exited
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "Traceback" not in capfd.readouterr().err


def test_probes_run_beside_the_teacher_and_give_the_same_file(tmp_path, monkeypatch):
    """With local workers and a core free beside the teacher's, `run` probes the teacher's checkpoints
    while it trains (EarlyProbes); the probe file is the one probing after the teacher gives."""
    from progdistill import probing

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(SMALL)
    after = tmp_path / "after"
    assert main(["teacher", str(recipe), "--out", str(after), "--quiet"]) == 0
    assert main(["probe", str(recipe), "--out", str(after), "--quiet"]) == 0
    expected = (after / "probes" / "teacher_monomials.json").read_bytes()

    started = []
    original = probing.EarlyProbes.start.__func__
    monkeypatch.setattr(probing.EarlyProbes, "start",
                        classmethod(lambda cls, *a: started.append(original(cls, *a)) or started[-1]))
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    beside = tmp_path / "beside"
    assert main(["run", str(recipe), "--out", str(beside), "--jobs", "2", "--quiet"]) == 0
    assert len(started) == 1 and started[0].future is not None  # the probe job ran beside the teacher
    assert not started[0].stop.parent.exists()  # its stop file's folder (outside the run folder) is gone
    assert (beside / "probes" / "teacher_monomials.json").read_bytes() == expected


def test_early_probe_job_probes_what_exists_until_told_to_stop(tmp_path):
    """The job itself: every asked-for checkpoint once it exists, rows as `probe_rows` gives them; it
    returns what it has once the stop file appears (a checkpoint that never comes is not waited for)."""
    import threading
    import time

    from progdistill.config import load_recipe
    from progdistill.probing import _probe_follow_job, probe_rows
    from progdistill.tasks import build_task
    from progdistill.trajectory import Trajectory

    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(SMALL)
    out = tmp_path / "run"
    assert main(["teacher", str(recipe_file), "--out", str(out), "--quiet"]) == 0
    recipe = load_recipe(str(recipe_file))
    task = build_task(recipe.task, folder=out)
    options = recipe.probe.enabled()["monomials"]
    expected = probe_rows(task.probes()["monomials"], options, Trajectory(out / "teacher"), [0, 300, 600], "cpu")
    stop = tmp_path / "stop"
    threading.Timer(1.0, stop.touch).start()
    began = time.monotonic()
    rows = _probe_follow_job(recipe.model_dump(mode="json"), str(out), [0, 300, 600, 650], str(stop), 1)
    assert time.monotonic() - began < 30
    assert rows == {"monomials": expected}  # checkpoint-650 never came: the stop file ended the wait
    assert _probe_follow_job(recipe.model_dump(mode="json"), str(out), [0, 300], str(stop), 1) == {"monomials": []}


def test_no_early_probes_without_a_free_core_or_workers(tmp_path, monkeypatch):
    import torch

    from progdistill.config import load_recipe
    from progdistill.probing import EarlyProbes

    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(SMALL)
    recipe = load_recipe(str(recipe_file))
    assert InProcess().submit(print, "never") is None
    assert EarlyProbes.start(recipe, tmp_path, InProcess(), [0, 300, 600]).finish() == {}  # nothing ran
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # the teacher takes both cores
    executor = LocalProcesses(2)
    try:
        assert EarlyProbes.start(recipe, tmp_path, executor, [0, 300, 600]).future is None
        assert executor._pool is None  # no worker was started for it
    finally:
        executor.close()


def test_a_teacher_that_fails_with_probes_beside_it_ends_the_run_at_once(tmp_path):
    """A teacher that fails (here: diverges) while the early probe job waits for its checkpoints, or has
    not started yet, must not leave `run` waiting for that job: the job ends when the main process
    removes its stop file's folder, and the run stops with its one-line error."""
    import os
    import subprocess
    import sys

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(SMALL)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "progdistill", "run", str(recipe), "--out", str(out), "--jobs", "2",
                           "--quiet", "teacher.optim.lr=1e8"], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert done.returncode == 2, done.stderr
    assert "training diverged" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_early_probe_job_ends_when_its_stop_folder_is_removed(tmp_path):
    from progdistill.config import load_recipe
    from progdistill.probing import _probe_follow_job

    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(SMALL)
    recipe = load_recipe(str(recipe_file))
    gone = tmp_path / "removed" / "stop"  # its folder does not exist: cleaned up before the job started
    rows = _probe_follow_job(recipe.model_dump(mode="json"), str(tmp_path / "run"), [0, 50], str(gone), 1)
    assert rows == {"monomials": []}


def test_keep_freed_memory_applies_on_glibc_unless_the_user_tuned_malloc(monkeypatch):
    import platform
    import sys

    from progdistill.processes import keep_freed_memory

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert keep_freed_memory() is False  # the user's own setting stands


class _Bar:
    """A progress bar that records its total and what it was told was done."""

    made: list["_Bar"] = []

    def __init__(self, iterable=None, desc=None, total=None, disable=False, **kwargs):
        self.iterable, self.desc, self.done = iterable, desc, []
        self.total = len(iterable) if total is None and iterable is not None else total
        _Bar.made.append(self)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n=1):
        self.done.append(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("executor", [InProcess, lambda: LocalProcesses(2)], ids=["in-process", "processes"])
def test_a_map_bar_counts_jobs_or_the_sizes_given(executor, monkeypatch):
    from progdistill import executors

    monkeypatch.setattr(executors, "tqdm", _Bar)
    _Bar.made = []
    pool = executor()
    try:
        assert pool.map(abs, [(-1,), (-2,), (-3,)], True, "three") == [1, 2, 3]
        assert pool.map(abs, [(-1,), (-2,)], True, "sized", sizes=[4, 1]) == [1, 2]
        with pytest.raises(ValueError, match="^map: 1 sizes for 2 calls$"):
            pool.map(abs, [(-1,), (-2,)], sizes=[4])
    finally:
        pool.close()
    three, sized = _Bar.made[:2]
    assert (three.desc, three.total, three.done) == ("three", 3, [1, 1, 1])
    assert (sized.desc, sized.total, sorted(sized.done)) == ("sized", 5, [1, 4])  # in the order jobs end


def test_the_probe_stage_bar_counts_checkpoints_not_jobs(tmp_path, monkeypatch):
    from progdistill import executors

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(SMALL)
    out = tmp_path / "run"
    assert main(["teacher", str(recipe), "--out", str(out), "--quiet", "teacher.steps=150"]) == 0  # 0, 50, 100, 150
    monkeypatch.setattr(executors, "tqdm", _Bar)
    _Bar.made = []
    assert main(["probe", str(recipe), "--out", str(out), "--jobs", "2", "teacher.steps=150"]) == 0
    assert len(json.loads((out / "probes" / "teacher_monomials.json").read_text())) == 4
    [bar] = [b for b in _Bar.made if b.desc == "probe monomials"]
    assert bar.total == 4 and sorted(bar.done) == [2, 2]  # 4 checkpoints in 2 jobs of 2


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_students_bar_counts_students_not_group_jobs(jobs, tmp_path, monkeypatch):
    """2 methods x 2 seeds = 4 students: one group of 4 in this process, or 2 groups of 2 over 2 workers;
    either way the bar's total is 4 and what it was told adds up to 4."""
    from progdistill import executors

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(SMALL)
    out = tmp_path / "run"
    monkeypatch.setattr(executors, "tqdm", _Bar)
    _Bar.made = []
    small = ["teacher.steps=150", "students.steps=50", "students.methods=[ce, one-shot]"]
    assert main(["run", str(recipe), "--out", str(out), "--jobs", str(jobs), *small]) == 0
    [bar] = [b for b in _Bar.made if b.desc == "students"]
    assert bar.total == 4 and sum(bar.done) == 4 and len(bar.done) == (1 if jobs == 1 else 2), bar.done
