"""Kill -9 at seeded points over the teacher, probes, students and report (before and after a file's rename),
resume each time: the results equal an uninterrupted run's byte for byte (issue: reliability)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import parity_tiny  # noqa: E402
from progdistill.config import load_recipe
from progdistill.experiment import finished_teacher

KILLS = int(os.environ.get("PROGDISTILL_KILLS", "20"))
SEED = int(os.environ.get("PROGDISTILL_KILL_SEED", "0"))

TINY = parity_tiny(teacher_steps=40, checkpoint_every=20, two_shot_checkpoint=20)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the runner forks its children")
def test_kill_9_anywhere_then_resume_gives_identical_results(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, str(Path(__file__).with_name("kill_resume_runner.py")), str(recipe),
                          str(tmp_path), str(KILLS), str(SEED)], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    points = report["points"]
    assert len(points) >= KILLS and all(p["killed"] for p in points), points
    assert {p["stage"] for p in points} == {"teacher", "probes", "students", "report"}
    assert any(p["before_rename"] for p in points) and any(p["tmp_left"] for p in points)  # mid-write kills
    assert report["final_exit"] == 0
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    results = sorted(p.relative_to(reference) for p in reference.rglob("result.json"))
    assert len(results) == 3
    weights = sorted(p.relative_to(reference) for p in reference.rglob("model.safetensors"))
    assert len(weights) >= 6  # the teacher's 3 checkpoints and each student's last
    weights += sorted(p.relative_to(reference) for p in reference.rglob("block-*.safetensors"))  # teacher outputs
    assert any(p.name.startswith("block-") for p in weights)
    for rel in [Path("summary.json"), *results, *weights]:  # checkpoints too, byte for byte
        assert (killed / rel).read_bytes() == (reference / rel).read_bytes(), rel
    assert not list(killed.rglob("*.tmp"))
    teacher = load_recipe(str(recipe), [f"teacher.path={killed / 'teacher'}"])
    assert finished_teacher(teacher, tmp_path / "reuse").steps == [0, 20, 40]
    print(f"kill points {len(points)}, identical: all, unreusable folders: 0")
