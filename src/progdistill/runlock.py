"""One process per run folder: an advisory lock (`fcntl.flock` on RUN/.lock) that the operating system
releases when the process ends, however it ends (kill -9 included), so a stale lock never blocks a
resume. A second process on the same folder is refused with the pid of the first."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .io import make_dirs, output_error

_HELD: dict[Path, int] = {}  # folder -> open file descriptor holding its lock in this process


class FolderInUseError(ValueError):
    """Another process is running in this run folder."""


def lock_run_folder(out: str | Path) -> Path:
    """Take the run folder's lock for this process (a no-op if it already holds it); creates the folder.
    Raises FolderInUseError naming the other process's pid, or OutputError if the folder cannot be written."""
    out = Path(out)
    try:
        key = out.resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop (Python < 3.13)
        raise output_error(out, e) from None
    if key in _HELD:
        return out
    make_dirs(out)
    path = out / ".lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise output_error(path, e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise FolderInUseError(f"{out} is in use by progdistill (pid {pid}); wait for it to finish or stop it "
                               "(an interrupted run resumes when run again)") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = fd
    return out


def unlock_run_folder(out: str | Path) -> None:
    """Release this process's lock on the folder (if it holds one)."""
    fd = _HELD.pop(Path(out).resolve(), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def run_folder_locked(out: str | Path) -> Iterator[Path]:
    """`lock_run_folder` for the length of a `with` block, for a command that writes into an existing run
    folder without running its stages (`progdistill report`): refused like a second `run` while another
    process holds the folder. The lock is released at the end only if this block took it (a caller that
    already held it keeps it)."""
    out = Path(out)
    try:
        held = out.resolve() in _HELD
    except (OSError, RuntimeError):
        held = False  # lock_run_folder raises the error
    lock_run_folder(out)
    try:
        yield out
    finally:
        if not held:
            unlock_run_folder(out)
