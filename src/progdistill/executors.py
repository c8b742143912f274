"""Where a recipe's independent jobs run: in this process, in local worker processes, or on Ray.

A job is a module-level function and arguments that pickle (plain data: the recipe as JSON, folder
paths); it rebuilds everything it needs and writes its own files in the run folder, so every executor
gives the same run folder, and a job whose files are finished is skipped when a run resumes. The
executor only decides where the jobs run and how many torch threads each gets (`threads_per_job`).
See docs/executors.md.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any, Callable, Sequence

from tqdm import tqdm as tqdm_std
from tqdm.auto import tqdm

from .processes import die_with_parent, keep_freed_memory

EXECUTORS = ("local", "ray")


class ExecutorError(ValueError):
    """A bad executor setting (unknown name, a missing optional extra, a bad --jobs)."""


def threads_per_job(jobs: int, threads: int | None = None, cores: int | None = None) -> int:
    """The torch (intra-op) threads each of `jobs` concurrent jobs uses: the threads in all (`threads`,
    the recipe key; default: the machine's cores, `cores` or os.cpu_count()) split evenly between the
    jobs, at least 1. Jobs that share cores therefore never ask for more threads than there are cores.
    Raises ExecutorError for jobs < 1."""
    if jobs < 1:
        raise ExecutorError(f"--jobs: must be at least 1, got {jobs}")
    return max(1, (threads or cores or os.cpu_count() or 1) // jobs)


def quiet_openmp() -> None:
    """Make OpenMP threads of processes started from now on sleep rather than spin while they wait
    (OMP_WAIT_POLICY=PASSIVE, unless the user set it): spinning threads of jobs that share cores slow
    each other down many times over."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _bar(calls: Sequence[Any], progress: bool, desc: str, sizes: Sequence[int] | None) -> tqdm:
    """The progress bar of a `map` (see `Executor.map`); `_bar(...).update(_size(sizes, i))` as job i ends."""
    if sizes is not None and len(sizes) != len(calls):
        raise ValueError(f"map: {len(sizes)} sizes for {len(calls)} calls")
    return tqdm(total=len(calls) if sizes is None else sum(sizes), desc=desc, disable=not progress)


def _size(sizes: Sequence[int] | None, i: int) -> int:
    return 1 if sizes is None else sizes[i]


class Executor:
    """Runs independent jobs; `jobs` is how many run at once. Subclasses implement `map`."""

    name = "local"
    jobs = 1
    runs_beside = False  # whether `submit` can run a job beside this process's own work

    def threads(self, threads: int | None) -> int:
        """Torch threads for each job, given the recipe's `threads` (total; None: all cores)."""
        return threads_per_job(self.jobs, threads)

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], progress: bool = False,
            desc: str = "jobs", sizes: Sequence[int] | None = None) -> list[Any]:
        """fn(*args) for every args in `calls`; returns the results in the order of `calls`. The first
        job's exception is raised (in this process, the job's own exception). `progress`: a progress bar
        that counts the jobs done, or, with `sizes`, the work done: a finished job i adds sizes[i] (the
        checkpoints a probe job probes)."""
        raise NotImplementedError

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future | None:
        """Start fn(*args) in the background and return its Future, where this executor can run a job
        beside this process's own work (local worker processes); None where it cannot (then nothing ran).
        `close` waits for a submitted job: it must end on its own."""
        return None

    def start(self) -> None:
        """Get ready for jobs ahead of the first `map` (start and warm up worker processes), so that this
        overlaps with work done meanwhile in this process (the teacher's training). Optional."""

    def close(self) -> None:
        """Release what the executor started (worker processes, a local Ray instance)."""


class InProcess(Executor):
    """Every job in this process, one after another (the default)."""

    def map(self, fn, calls, progress=False, desc="jobs", sizes=None):
        results = []
        with _bar(calls, progress, desc, sizes) as bar:
            for i, args in enumerate(calls):
                results.append(fn(*args))
                bar.update(_size(sizes, i))
        return results


def _start_worker() -> None:
    """Initializer of a local worker process: die with the parent, and import what every job imports
    (torch and progdistill's stages, ~2 s of CPU), so that a pool started early has it done."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches a worker only inside a job (`_job`)
    die_with_parent()
    keep_freed_memory()
    # jobs draw no progress bar: a thread lock for tqdm, not its default multiprocessing one, a named
    # semaphore that a worker ended by SIGTERM (to the process group: Slurm) leaves to the resource
    # tracker's "leaked semaphore" warning
    tqdm_std.set_lock(threading.RLock())
    import progdistill.experiment  # noqa: F401
    import torch._dynamo  # noqa: F401  (what a job's first torch optimizer would import: ~2 s)


def _job(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a local worker, where Ctrl-C interrupts it as it would in the main process (an idle
    worker ignores it: the main process shuts the pool down, with no traceback from a waiting worker)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return fn(*args)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def _spawning_without_sigint():
    """Workers spawned inside start with Ctrl-C ignored (an ignored signal stays ignored across exec, and
    Python then installs no KeyboardInterrupt handler), so that one pressed while they import torch
    leaves no traceback; the main process ignores it for the moment of the spawn only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class LocalProcesses(Executor):
    """`jobs` spawned worker processes on this machine (`--jobs N`); they die with this process. One pool
    serves every `map` until `close`: the probe and student stages of a run share its workers, and
    `start` spawns them while the teacher trains."""

    runs_beside = True

    def __init__(self, jobs: int) -> None:
        threads_per_job(jobs)  # validates jobs
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None

    def _workers(self) -> ProcessPoolExecutor:
        if self._pool is None:
            quiet_openmp()
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker)
        return self._pool

    def start(self) -> None:
        pool = self._workers()
        with _spawning_without_sigint():
            for _ in range(self.jobs):  # a pool spawns a worker per job waiting for one, up to `jobs`
                pool.submit(int)

    def submit(self, fn, *args):
        pool = self._workers()
        with _spawning_without_sigint():
            return pool.submit(_job, fn, *args)

    def map(self, fn, calls, progress=False, desc="jobs", sizes=None):
        bar = _bar(calls, progress, desc, sizes)
        pool = self._workers()
        with _spawning_without_sigint():
            futures = {pool.submit(_job, fn, *args): i for i, args in enumerate(calls)}
        results: list[Any] = [None] * len(calls)
        try:
            with bar:
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update(_size(sizes, futures[fut]))
        except BaseException:
            self.close()  # a failed job (or Ctrl-C): no more jobs of this map start; the pool is gone
            raise
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor(Executor):
    """Jobs as Ray tasks (`--executor ray`): on the cluster at `address` (`--ray-address`, e.g.
    "ray://head:10001" or "auto"), or on a local Ray instance started here (none given, and no Ray
    instance in this process yet). Each task reserves as many Ray CPUs as it uses torch threads:
    `threads_per_job(jobs, threads, the cluster's CPUs)`, where `jobs` defaults to the cluster's CPUs
    (one thread per job). The run folder must be on a file system every node sees at the same path."""

    name = "ray"

    def __init__(self, jobs: int | None = None, address: str | None = None) -> None:
        if importlib.util.find_spec("ray") is None:
            raise ExecutorError("--executor ray: Ray is not installed; pip install 'progdistill[ray]'")
        if jobs is not None:
            threads_per_job(jobs)
        self.requested, self.address, self.started = jobs, address, False
        self.cores = 1

    def _init(self) -> None:
        import ray

        quiet_openmp()
        if not ray.is_initialized():
            env = {"OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"]}
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env}, **({} if self.address else {"num_cpus": os.cpu_count()}))
            self.started = True
        self.cores = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.jobs = self.requested or self.cores

    def threads(self, threads: int | None) -> int:
        self._init()
        return threads_per_job(self.jobs, threads, self.cores)

    def map(self, fn, calls, progress=False, desc="jobs", sizes=None):
        import ray

        bar = _bar(calls, progress, desc, sizes)
        self._init()
        task = ray.remote(fn).options(num_cpus=min(self.cores, threads_per_job(self.jobs, None, self.cores)),
                                      max_retries=0)
        refs = {task.remote(*args): i for i, args in enumerate(calls)}
        results: list[Any] = [None] * len(calls)
        pending = list(refs)
        with bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                results[refs[done[0]]] = ray.get(done[0])
                bar.update(_size(sizes, refs[done[0]]))
        return results

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


def make_executor(name: str | None = None, jobs: int | None = None, address: str | None = None) -> Executor:
    """The executor `name` ("local": in this process, or `jobs` local processes when jobs > 1; "ray")
    with `jobs` concurrent jobs (None: 1 locally, the cluster's CPUs on Ray); `address`: a Ray cluster
    (only with "ray"). Checks everything without starting anything. Raises ExecutorError."""
    name = name or "local"
    if jobs is not None:
        threads_per_job(jobs)  # jobs >= 1
    if name not in EXECUTORS:
        raise ExecutorError(f"--executor: unknown executor {name!r} (choose {' or '.join(EXECUTORS)})")
    if address is not None and name != "ray":
        raise ExecutorError("--ray-address: only with --executor ray")
    if name == "ray":
        return RayExecutor(jobs, address)
    jobs = jobs or 1
    return LocalProcesses(jobs) if jobs > 1 else InProcess()
