"""Runner for tests/test_kill_resume.py: `python kill_resume_runner.py RECIPE WORK KILLS SEED` prints one JSON line.

It imports progdistill once, then runs the CLI in forked children (each a real process that gets a real
SIGKILL): first an uninterrupted reference run that records every atomic file write (the rename of its
temporary file into place), then, in another folder, a chain of children each killed -9 at the write of a
chosen file (just before its rename, leaving a `.tmp` behind, or just after it), the next child resuming
where the last one died, and a last child that finishes the run. The chosen files are spread over the
teacher, the probes, the students and the report, by a seeded draw.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
from pathlib import Path


def child(argv: list[str], out: Path, kill: tuple[str, bool] | None, record: Path | None) -> int:
    """Fork a child running `progdistill` with `argv`; return its wait status. `kill`: (file relative to
    `out`, before its rename?) at which the child kills itself -9; `record`: file listing every write."""
    pid = os.fork()
    if pid:
        return os.waitpid(pid, 0)[1]
    code = 1
    try:
        import torch

        torch.set_num_threads(1)
        real_replace = os.replace
        root = str(out.resolve()) + os.sep

        def replace(src, dst, *args, **kwargs):
            rel = str(Path(dst).resolve())
            rel = rel[len(root):] if rel.startswith(root) else None
            if record is not None and rel is not None:
                with open(record, "a") as f:
                    f.write(rel + "\n")
            if kill is not None and rel == kill[0] and kill[1]:
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst, *args, **kwargs)
            if kill is not None and rel == kill[0] and not kill[1]:
                os.kill(os.getpid(), signal.SIGKILL)

        os.replace = replace
        sys.stdout = sys.stderr = open(os.devnull, "w")
        from progdistill.cli import main

        code = main(argv)
    finally:
        os._exit(code)


def stage(rel: str) -> str:
    if rel.startswith("teacher/"):
        return "teacher"
    if rel.startswith("probes/") or rel == "teacher_phases.json":
        return "probes"
    if rel.startswith(("students/", "teacher-outputs/")):
        return "students"
    return "report"


def main() -> None:
    recipe, work, kills, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    import progdistill.pipeline  # noqa: F401  (imported once, before the children fork)
    import progdistill.report  # noqa: F401
    import matplotlib.pyplot  # noqa: F401

    reference, record = work / "reference", work / "writes.txt"
    status = child(["run", recipe, "--out", str(reference), "--quiet"], reference, None, record)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"reference run failed: {status}"
    writes = record.read_text().split()
    once = [w for w in dict.fromkeys(writes) if writes.count(w) == 1 and w not in ("run.json", "config.yaml")]
    by_stage: dict[str, list[str]] = {}
    for w in once:
        by_stage.setdefault(stage(w), []).append(w)
    rng = random.Random(seed)
    share = {"teacher": 0.35, "probes": 0.1, "students": 0.45, "report": 0.1}
    chosen = set()
    for name, files in by_stage.items():
        chosen |= set(rng.sample(files, min(len(files), max(1, round(kills * share[name])))))
    rest = [w for w in once if w not in chosen]
    chosen |= set(rng.sample(rest, max(0, min(len(rest), kills - len(chosen)))))
    points = [(w, rng.random() < 0.5) for w in once if w in chosen]  # in the order the run writes them

    run = work / "killed"
    results = []
    for rel, before in points:
        status = child(["run", recipe, "--out", str(run), "--quiet"], run, (rel, before), None)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        tmp_left = [str(p.relative_to(run)) for p in run.rglob("*.tmp")]
        results.append({"file": rel, "stage": stage(rel), "before_rename": before, "killed": killed,
                        "tmp_left": len(tmp_left)})
    status = child(["run", recipe, "--out", str(run), "--quiet"], run, None, None)
    print(json.dumps({"points": results, "final_exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else -status,
                      "writes": len(writes)}))


if __name__ == "__main__":
    main()
