"""Helpers for the processes progdistill runs in: workers must not outlive the process that started
them, and the C allocator should not hand every freed activation back to the kernel."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator


def die_with_parent() -> None:
    """Make this (worker) process exit when its parent dies, kill -9 included. On Linux the kernel
    sends SIGKILL (prctl PR_SET_PDEATHSIG); elsewhere a daemon thread polls the parent's pid."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, `docker stop`, Slurm) received by the main process, raised in its main
    thread (`sigterm_as_interrupt`). A KeyboardInterrupt, so that it unwinds as Ctrl-C does: every
    `finally` and context manager runs (worker processes stop, temporary folders go, the lock is freed)."""


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM handler: do what a terminal's Ctrl-C does to the process group, SIGINT to this process's
    worker processes (a job running in one is interrupted, an idle one ignores it: see executors), so the
    pools shut down at once, then raise Terminated here."""
    mp = sys.modules.get("multiprocessing")
    for child in mp.active_children() if mp is not None else []:
        try:
            os.kill(child.pid, signal.SIGINT)
        except OSError:  # exited meanwhile
            pass
    raise Terminated


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """For the length of a `with` block in the main thread, SIGTERM raises Terminated (see `_terminated`)
    instead of ending the process at once; the previous handler is restored afterwards. Elsewhere (another
    thread, where Python cannot set handlers) it changes nothing. Worker processes spawned meanwhile start
    with SIGTERM's default action (exec resets a handled signal), which a broken pool's shutdown relies on."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 64 << 20  # bytes: blocks at least this large still get their own mapping
TRIM_THRESHOLD = 256 << 20  # bytes of free memory at the heap's top kept for reuse


def keep_freed_memory() -> bool:
    """Tune glibc's allocator for training loops (Linux with glibc only; a no-op elsewhere, or where the
    user set MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_): blocks under 64 MiB come from the heap
    and up to 256 MiB of freed memory stays there for reuse. By default glibc maps a block of a few
    hundred KiB (a batch's activations) afresh on each allocation and unmaps it when freed, so every
    training step pays page faults for the pages it touches (a parity run: 3.3 million faults, 8 s of
    system time). Changes no number (torch aligns its tensors itself). Returns whether it was applied."""
    if not sys.platform.startswith("linux") or any(
            os.environ.get(name) for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
