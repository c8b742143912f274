"""A teacher trained data-parallel under torchrun (2 CPU processes, gloo) follows the single-process
held-out curve with the same global batch; only rank 0 writes; what torchrun cannot do is refused."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from progdistill.cli import main
from progdistill.distributed import check_batch_size, shard
from progdistill.tasks.base import Batch

RECIPE = textwrap.dedent("""
    name: tiny-ddp
    threads: 1
    task: {name: parity, d: 12, k: 2, eval_size: 256}
    teacher:
      model: {type: mlp, width: 64}
      steps: 200
      batch_size: 16
      optim: {lr: 0.1}
      eval_every: 25
      checkpoint_every: 50
    students:
      model: {type: mlp, width: 16}
      steps: 100
      batch_size: 16
      seeds: [0]
      methods: [ce]
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_teacher_follows_the_single_process_curve(tmp_path):
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(RECIPE)
    assert main(["teacher", str(recipe), "--out", str(tmp_path / "one"), "--quiet"]) == 0
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "progdistill",
                           "teacher", str(recipe), "--out", str(tmp_path / "two"), "--quiet"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "teacher" / "curve.json").read_text())
    two = json.loads((tmp_path / "two" / "teacher" / "curve.json").read_text())
    assert [p["step"] for p in two] == [p["step"] for p in one] and len(one) == 9
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6)
        assert b["accuracy"] == pytest.approx(a["accuracy"], abs=1 / 256 + 1e-9)
    assert one[-1]["loss"] < one[0]["loss"] * 0.9  # it trained: the comparison is not between two flat curves
    # only rank 0 wrote: one metrics line per evaluation, one run folder's files
    lines = (tmp_path / "two" / "teacher" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(one)
    assert sorted(p.name for p in (tmp_path / "two" / "teacher").iterdir()) == \
        sorted(p.name for p in (tmp_path / "one" / "teacher").iterdir())


def test_shard_gives_each_rank_its_slice(monkeypatch):
    import torch

    batch = Batch(torch.arange(24).reshape(8, 3), torch.arange(8))
    assert shard(batch) is batch
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    part = shard(batch)
    assert part.targets.tolist() == [4, 5, 6, 7] and part.inputs.tolist() == batch.inputs[4:].tolist()
    with pytest.raises(ValueError, match="teacher.batch_size: 15 is not divisible by torchrun's 2 processes"):
        check_batch_size(15, "teacher.batch_size")


def test_only_the_teacher_stage_runs_under_torchrun(tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(RECIPE)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: torchrun: only `progdistill teacher` trains data-parallel")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
