"""Atomic file writes, safetensors checkpoints and run metadata."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated or does not match what was asked for."""


class OutputError(ValueError):
    """A file or folder of a run cannot be written (read-only filesystem, full disk, a name too long, a
    file where a folder should be, ...). The message is `cannot write PATH: reason`."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp alone gives 0600


def output_error(path: str | Path, exc: BaseException) -> OutputError:
    """An OutputError naming `path` and the reason in `exc` (an OSError's strerror where there is one)."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return OutputError(f"cannot write {path}: {reason}")


NAME_MAX = 255  # bytes in one path component on Linux and macOS filesystems


def check_names(path: str | Path) -> None:
    """OutputError if a component of `path` is longer than a filesystem allows: checked before the first
    folder is made, so that a refused path leaves no parent folders behind."""
    if any(len(os.fsencode(part)) > NAME_MAX for part in Path(path).parts):
        raise OutputError(f"cannot write {path}: File name too long")


def make_dirs(path: str | Path) -> Path:
    """`mkdir -p path`, with filesystem errors as OutputError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(path, e) from None
    return path


def _atomic(path: Path, write, durable: bool = True) -> None:
    """Write `path` through a temporary file in the same folder, fsync it (unless not `durable`: a cache
    that is recomputed when unreadable), then rename it into place, so readers never see half a file. The
    file gets the mode of an ordinary new file (the user's umask). Filesystem errors (read-only, full
    disk, ...) raise OutputError; no temporary file is left behind."""
    make_dirs(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, _MODE)
        write(tmp)
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:
        raise output_error(path, e) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete the temporary files (`.NAME.*.tmp`) that an interrupted atomic write left under `folder`;
    only safe while no other process writes there (the run folder's lock). Returns how many."""
    removed = 0
    for tmp in Path(folder).rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink()
            removed += 1
    return removed


def _finite(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename), so readers never see half a file. Non-finite floats
    become null: strict JSON parsers reject NaN and Infinity."""
    text = json.dumps(_finite(_plain(obj)), indent=1, sort_keys=False, allow_nan=False)

    def write(tmp: str) -> None:
        Path(tmp).write_text(text + "\n")

    _atomic(Path(path), write)


def write_file(path: str | Path, write: Callable[[str], None]) -> None:
    """Write `path` atomically with `write(temporary_path)` (a library's own writer, e.g. savefig)."""
    _atomic(Path(path), write)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON (truncated or corrupt?): {e}") from None


def read_derived_json(file: str | Path, kind: type, then: str) -> Any:
    """The content of `file`, a derived file of the run folder, if it is readable JSON of type `kind`;
    None if it is missing, or unreadable (truncated, corrupt, another type), which is said on stderr in
    one line, `warning: FILE: what is wrong; THEN`.

    The rule for a run folder's files on resume: a derived file, one this run computes from its inputs
    and its stages' results (a probe's rows, probes/oracle.json, teacher_curve.json, teacher_phases.json,
    summary.json, the report), is a cache: unreadable, it is computed again (written anew), with this warning where it
    was read. Refused instead is what cannot be recomputed from the folder without redoing work the user
    asked to keep, or what says what the folder is: run.json (the run's identity), a model's training
    state and finished results (its checkpoints, state.json, result.json: a resume continues them), and
    the user's own inputs (a grammar, corpus, tensors or `teacher.path` files)."""
    file = Path(file)
    if not file.is_file():
        return None
    try:
        content = read_json(file)
    except CheckpointError as e:
        print(f"warning: {e}; {then}", file=sys.stderr)
        return None
    if not isinstance(content, kind):
        print(f"warning: {file}: not a JSON {'list' if kind is list else 'object'}; {then}", file=sys.stderr)
        return None
    return content


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _plain(obj: Any) -> Any:
    """`obj` with paths, tensors and NumPy scalars turned into JSON types (see `_json_default`)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return _plain(_json_default(obj))


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                 durable: bool = True) -> None:
    """Save tensors as safetensors, atomically; a tensor that shares memory with an earlier one (tied
    weights) is saved as a copy. `durable=False` skips the fsync (for a cache whose reader recomputes an
    unreadable file: a power cut may leave it empty, never half-written under its name)."""
    flat, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().contiguous().cpu()
        storage = v.untyped_storage().data_ptr() if v.numel() else None
        flat[k] = v.clone() if storage in seen else v
        seen.add(storage)
    def write(tmp: str) -> None:
        save_file(flat, tmp, metadata)
        _sort_header(tmp)

    _atomic(Path(path), write, durable)


def _sort_header(path: str) -> None:
    """Rewrite a safetensors file's JSON header with its keys sorted, in place. safetensors writes the
    metadata from a hash map, in an order that changes from one process to the next, so the same tensors
    and metadata saved twice gave different bytes (a resumed run's checkpoint differed from the
    uninterrupted run's by its header alone). The header has the same length either way (the same items,
    compact JSON); tensors are located by the offsets it holds, relative to its end, so no data moves."""
    import struct

    with open(path, "r+b") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        raw = f.read(size)
        text = raw.rstrip(b" ")
        header = json.loads(text)
        meta = header.pop("__metadata__", None)
        ordered = {"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}
        ordered |= dict(sorted(header.items()))
        new = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        if len(new) != len(text):  # not the compact JSON expected: leave the file as safetensors wrote it
            return
        f.seek(8)
        f.write(new)


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing or truncated file raises CheckpointError."""
    return load_tensors_and_metadata(path, device)[0]


def load_tensors_and_metadata(path: str | Path, device: str | torch.device = "cpu"
                              ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """`load_tensors` and the file's safetensors metadata ({} if it has none); raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read checkpoint (truncated or corrupt?): {e}") from None


def config_hash(config: Any) -> str:
    """Short stable hash of a JSON-serialisable config."""
    text = json.dumps(config, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    """Short hash of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def git_revision() -> str | None:
    """The git revision of the installed package's source tree, if it is a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if out.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8",
              "avx_vnni", "sve", "asimd", "bf16")


def machine_info() -> dict[str, Any]:
    """The machine a run's numbers come from: CPU model, the instruction-set flags that change float
    kernels and bf16 speed (avx512_bf16 / amx_bf16: native bf16 matrix units), the CPU capability PyTorch
    dispatches to, its BLAS and oneDNN builds, core and thread counts, and the GPU if one is used. Float
    rounding (and so a teacher's exact drop step) can differ between machines that differ here."""
    import re

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^(model name|Model|cpu model)\s*:\s*(.+)$", text, re.M)
        cpu = model.group(2).strip() if model else cpu
        found = re.search(r"^(flags|Features)\s*:\s*(.+)$", text, re.M)
        flags = set(found.group(2).split()) if found else set()
    except OSError:
        pass
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    onednn = re.search(r"MKL-DNN (v[\d.]+)", config)
    info: dict[str, Any] = {
        "cpu": cpu,
        "isa_flags": sorted(f for f in _ISA_FLAGS if f in flags),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": blas.group(1) if blas else None,
        "onednn": onednn.group(1) if onednn and torch.backends.mkldnn.is_available() else None,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def environment_info() -> dict[str, Any]:
    """Package versions, platform, git revision and the machine (`machine_info`), written beside every run."""
    import numpy

    from . import __version__

    return {
        "progdistill": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_revision": git_revision(),
        "torch_threads": torch.get_num_threads(),
        "machine": machine_info(),
    }
