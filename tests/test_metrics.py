"""Live metrics: metrics.jsonl in every run folder, consistent with resume; TensorBoard and W&B (offline)."""

import json
import sys

import pytest
import torch

import progdistill as pd
from progdistill.cli import main
from progdistill.trainer import TrainConfig, train

NAMES = ["step", "samples", "train/loss", "train/kd_loss", "teacher/checkpoint_step", "eval/loss", "eval/accuracy",
         "lr"]
ARCH = {"type": "mlp", "input_dim": 12, "num_classes": 2, "width": 16}


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    train(pd.build_model(ARCH), pd.ParityTask(d=12, k=2, eval_size=128), TrainConfig(
        steps=80, batch_size=16, optim={"lr": 0.1}, eval_every=20, checkpoint_every=20), folder, {"model": ARCH},
        progress=False)
    return pd.Trajectory(folder)


def student(folder, trajectory, method="progressive", stop_at=None, log=(), steps=60, **cfg):
    torch.manual_seed(1)
    model = pd.build_model(ARCH)
    cfg = TrainConfig(steps=steps, batch_size=16, optim={"name": "adamw", "lr": 3e-3, "schedule": "cosine",
                                                         "warmup": 0.1}, eval_every=20, **cfg)
    schedule = pd.make_schedule({"name": method}, trajectory.steps, None)
    return train(model, pd.ParityTask(d=12, k=2, eval_size=128, data_seed=5), cfg, folder, {"model": ARCH}, schedule,
                 trajectory, progress=False, stop_at=stop_at, log=log)


def test_every_evaluation_is_one_line_with_the_documented_names(teacher, tmp_path):
    record = student(tmp_path / "kd", teacher, kd={"tau": 1.0, "alpha": 0.5})
    rows = lines(tmp_path / "kd" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [p["step"] for p in record["curve"]] == [0, 20, 40, 60]
    assert all(list(r) == NAMES for r in rows)
    assert rows[0]["train/loss"] is None and rows[0]["train/kd_loss"] is None
    assert [r["teacher/checkpoint_step"] for r in rows] == [20, 20, 40, 60]
    assert [r["samples"] for r in rows] == [0, 320, 640, 960]
    assert [(r["eval/loss"], r["eval/accuracy"]) for r in rows] == [(p["loss"], p["accuracy"]) for p in record["curve"]]
    assert all(r["train/loss"] > 0 and r["train/kd_loss"] > 0 and r["train/loss"] != r["train/kd_loss"] for r in rows[1:])
    assert rows[1]["lr"] == pytest.approx(3e-3 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 13 / 54)).item()))
    ce = lines(student(tmp_path / "ce", teacher, method="ce") and tmp_path / "ce" / "metrics.jsonl")
    assert all(r["train/kd_loss"] is None and r["teacher/checkpoint_step"] is None for r in ce)
    assert all(r["train/loss"] > 0 for r in ce[1:])
    assert [r["teacher/checkpoint_step"] for r in lines(teacher.root / "metrics.jsonl")] == [None] * 5


def test_a_resumed_run_writes_the_same_metrics_line_for_line(teacher, tmp_path):
    full = tmp_path / "full"
    student(full, teacher, kd={"tau": 1.0})
    part = tmp_path / "part"
    student(part, teacher, stop_at=50, kd={"tau": 1.0})  # state at 50: train losses of steps 41-50 are pending
    assert [r["step"] for r in lines(part / "metrics.jsonl")] == [0, 20, 40]
    # a kill after the next evaluation was logged but before its state was saved, mid-way through a line
    logged = (full / "metrics.jsonl").read_text().splitlines()
    (part / "metrics.jsonl").write_text("\n".join(logged[:4]) + "\n" + logged[3][:25])
    student(part, teacher, kd={"tau": 1.0})
    assert (part / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()
    # a run started again from scratch in the same folder starts a new file
    student(part, teacher, steps=20, kd={"tau": 1.0})
    assert [r["step"] for r in lines(part / "metrics.jsonl")] == [0, 20]


def test_tensorboard_events_hold_the_same_scalars_and_change_no_number(teacher, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import shutil

    plain = student(tmp_path / "plain", teacher, steps=80, kd={"tau": 1.0})
    part = tmp_path / "tb"
    student(part, teacher, steps=80, stop_at=50, kd={"tau": 1.0}, log=["tensorboard"])
    shutil.copytree(part / "state", tmp_path / "state-50")
    student(part, teacher, steps=80, stop_at=70, kd={"tau": 1.0}, log=["tensorboard"])  # logs step 60 ...
    shutil.rmtree(part / "state")
    shutil.copytree(tmp_path / "state-50", part / "state")  # ... and is killed before a later state is kept
    record = student(part, teacher, steps=80, kd={"tau": 1.0}, log=["tensorboard"])
    assert record["curve"] == plain["curve"]
    assert (part / "metrics.jsonl").read_text() == (tmp_path / "plain" / "metrics.jsonl").read_text()
    events = EventAccumulator(str(part / "tensorboard"))
    events.Reload()
    rows = lines(part / "metrics.jsonl")
    assert set(events.Tags()["scalars"]) == set(NAMES) - {"step"}
    for name in NAMES[1:]:
        logged = [(r["step"], r[name]) for r in rows if r[name] is not None]
        scalars = [(e.step, e.value) for e in events.Scalars(name)]
        assert [s for s, _ in scalars] == [s for s, _ in logged], name
        assert [v for _, v in scalars] == pytest.approx([v for _, v in logged], rel=1e-6), name


def test_wandb_runs_offline_into_the_run_folder(teacher, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    student(tmp_path / "wb", teacher, kd={"tau": 1.0}, log=["wandb"])
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert (tmp_path / "wb" / "wandb-run-id").read_text().strip() in runs[0].name


def test_a_backend_without_its_extra_is_a_one_line_error_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the extra were not installed
    out = tmp_path / "run"
    assert main(["run", "parity-mlp-small", "--out", str(out), "--log", "tensorboard"]) == 2
    assert capsys.readouterr().err == ("error: --log tensorboard needs the 'tensorboard' extra: pip install "
                                       "'progdistill[tensorboard]'\n")
    assert not out.exists()
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert main(["distill", "parity-mlp-small", "--out", str(out), "--log", "wandb"]) == 2
    assert "needs the 'wandb' extra" in capsys.readouterr().err and not out.exists()
    with pytest.raises(ValueError, match="--log tensorboard needs the 'tensorboard' extra"):
        pd.run_experiment(pd.load_recipe("parity-mlp-small"), out, log=["tensorboard"])


def test_logging_is_not_part_of_the_recipe(tmp_path):
    """--log goes through the CLI and the Python API, never the recipe: the config (and its hash) is the same."""
    with pytest.raises(pd.RecipeError, match="log: unknown key"):
        pd.load_recipe("parity-mlp-small", ["log=[tensorboard]"])
