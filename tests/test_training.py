import json
import math
import re

import numpy as np
import pytest
import torch

from progdistill.io import CheckpointError, read_json, save_tensors
from progdistill.models import build_model
from progdistill.schedule import make_schedule
from progdistill.tasks import ParityTask
from progdistill.trainer import DivergenceError, KDConfig, OptimConfig, TrainConfig, checkpoint_steps, lr_at, train
from progdistill.trajectory import Trajectory, detect_phases, load_checkpoint, save_checkpoint

ARCH = {"type": "mlp", "input_dim": 12, "num_classes": 2, "width": 32}


def fresh(seed=0, arch=ARCH):
    torch.manual_seed(seed)
    return build_model(arch)


def oracle_parity_mlp(d):
    """An exact 2-sparse parity MLP on coordinates 0, 1 (label 1 iff x0 * x1 = -1)."""
    arch = {"type": "mlp", "input_dim": d, "num_classes": 2, "width": 2}
    model = build_model(arch)
    with torch.no_grad():
        first, last = model.net[0], model.net[2]
        first.weight.zero_(), first.bias.zero_()
        first.weight[0, :2] = 1.0
        first.weight[1, :2] = -1.0
        last.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        last.bias.copy_(torch.tensor([-1.0, 0.0]))
    return model, arch


def test_tau_zero_distillation_from_perfect_teacher_equals_ce(tmp_path):
    task = ParityTask(d=12, k=2, eval_size=256, data_seed=4)
    oracle, arch = oracle_parity_mlp(12)
    assert task.evaluate(oracle)["accuracy"] == 1.0
    save_checkpoint(tmp_path / "teacher" / "checkpoint-0", oracle, {"model": arch, "step": 0})
    trajectory = Trajectory(tmp_path / "teacher")
    cfg = TrainConfig(steps=150, batch_size=16, optim=OptimConfig(lr=0.1), kd=KDConfig(alpha=0.0, tau=0.0),
                      eval_every=25)
    ce_model, kd_model = fresh(1), fresh(1)
    ce = train(ce_model, task, cfg, tmp_path / "ce", {"model": ARCH}, progress=False)
    kd = train(kd_model, task, cfg, tmp_path / "kd", {"model": ARCH},
               make_schedule({"name": "one-shot"}, trajectory.steps, None), trajectory, progress=False)
    assert [p["loss"] for p in ce["curve"]] == [p["loss"] for p in kd["curve"]]
    for a, b in zip(ce_model.parameters(), kd_model.parameters()):
        assert torch.equal(a, b)
    assert kd["supervision"] == [{"start": 0, "end": 150, "checkpoint": 0}]


@pytest.mark.parametrize("optim", [OptimConfig(name="sgd", lr=0.05),
                                   OptimConfig(name="adamw", lr=3e-3, schedule="cosine", warmup=0.1,
                                               grad_clip=1.0)])
def test_interrupted_run_resumes_to_identical_numbers(tmp_path, optim):
    task = ParityTask(d=12, k=2, eval_size=256, data_seed=1)
    cfg = TrainConfig(steps=120, batch_size=8, optim=optim, eval_every=20, checkpoint_every=40)
    full_model = fresh()
    full = train(full_model, task, cfg, tmp_path / "full", {"model": ARCH}, progress=False)
    part_model = fresh()
    train(part_model, task, cfg, tmp_path / "part", {"model": ARCH}, progress=False, stop_at=50)
    state = tmp_path / "part" / "state"
    assert sorted(f.name for f in state.iterdir()) == ["model-50.safetensors", "optimizer-50.safetensors",
                                                       "rng-50.safetensors", "state.json"]
    assert not (tmp_path / "part" / "curve.json").exists()
    # A kill after the next state's weights were written but before its state.json: they must be ignored.
    save_tensors(state / "model-60.safetensors", fresh(seed=7).state_dict())
    resumed_model = fresh(seed=99)  # a new process would start from another init: state must win
    resumed = train(resumed_model, task, cfg, tmp_path / "part", {"model": ARCH}, progress=False)
    assert resumed["curve"] == full["curve"]
    for a, b in zip(full_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    assert Trajectory(tmp_path / "part").steps == [0, 40, 80, 120]
    assert not (tmp_path / "part" / "state").exists()


def _one_adam_step():
    """A tiny parity task, a 10-step config, and a model with an optimizer after one Adam step (a state to save)."""
    task = ParityTask(d=12, k=2, eval_size=64)
    cfg = TrainConfig(steps=10, batch_size=4, eval_every=5)
    model = fresh()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.ones(3, 12)).sum().backward()
    opt.step()
    return task, cfg, model, opt


def test_a_state_saved_before_its_files_were_named_by_step_resumes(tmp_path):
    """The earlier layout of `state/`: model.safetensors and optimizer.safetensors, no generator state,
    no losses, and no `files` entry in state.json."""
    from progdistill.io import write_json
    from progdistill.trainer import Run

    task, cfg, model, opt = _one_adam_step()
    run = Run(tmp_path, task, cfg, {"model": ARCH})
    run.record["curve"].append({"step": 5, "loss": 0.5, "accuracy": 0.75})
    run.save_state(5, model.state_dict(), opt)
    state = tmp_path / "state"
    saved = read_json(state / "state.json")
    del saved["files"], saved["losses"]
    write_json(state / "state.json", saved)
    (state / "model-5.safetensors").rename(state / "model.safetensors")
    (state / "optimizer-5.safetensors").rename(state / "optimizer.safetensors")
    (state / "rng-5.safetensors").unlink()
    again = Run(tmp_path, task, cfg, {"model": ARCH})
    step, weights, optimizer = again.resume()
    assert step == 5 and again.record == run.record
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    restored = torch.optim.Adam(fresh(1).parameters(), lr=0.01)
    restored.load_state_dict(optimizer)
    for a, b in zip(restored.state_dict()["state"].values(), opt.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in b)


def test_a_state_resumes_onto_the_device_asked_for(tmp_path, monkeypatch):
    """`Run.resume(device)` reads the model and optimizer tensors onto `device`, the generator state onto
    the CPU. The reads are recorded (safetensors reads only onto devices the machine has)."""
    from progdistill import trainer
    from progdistill.io import load_tensors
    from progdistill.trainer import Run, _read_optimizer

    task, cfg, model, opt = _one_adam_step()
    Run(tmp_path, task, cfg, {"model": ARCH}).save_state(5, model.state_dict(), opt)
    read = []
    monkeypatch.setattr(trainer, "load_tensors",
                        lambda path, device="cpu": read.append((path.name, device)) or load_tensors(path))
    step, weights, optimizer = Run(tmp_path, task, cfg, {"model": ARCH}).resume("cuda:1")
    assert step == 5 and all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert read == [("model-5.safetensors", "cuda:1"), ("optimizer-5.safetensors", "cuda:1"),
                    ("rng-5.safetensors", "cpu")]
    read.clear()
    info = read_json(tmp_path / "state" / "state.json")["optimizer"]
    assert _read_optimizer(tmp_path / "state" / "optimizer-5.safetensors", info, "cuda:1").keys() == {"state",
                                                                                                     "param_groups"}
    assert read == [("optimizer-5.safetensors", "cuda:1")]


def test_a_resumed_state_restores_the_global_generator_and_the_losses_since_the_last_evaluation(tmp_path):
    from progdistill.trainer import Run

    task = ParityTask(d=12, k=2, eval_size=64)
    cfg = TrainConfig(steps=10, batch_size=4, eval_every=5)
    model = fresh()
    run = Run(tmp_path, task, cfg, {"model": ARCH})
    run.losses.add(torch.tensor(0.5), torch.tensor(0.25))
    run.losses.add(torch.tensor(1.5), torch.tensor(0.75))
    torch.manual_seed(11)
    run.save_state(3, model.state_dict(), torch.optim.SGD(model.parameters(), lr=0.1))
    expected = torch.rand(3)
    torch.manual_seed(12)
    again = Run(tmp_path, task, cfg, {"model": ARCH})
    assert again.resume()[0] == 3
    assert torch.equal(torch.rand(3), expected)
    assert again.losses.means() == {"train/loss": 1.0, "train/kd_loss": 0.5}

def test_student_resume_keeps_adaptive_schedule_state(tmp_path):
    task = ParityTask(d=12, k=2, eval_size=256, data_seed=1)
    teacher_cfg = TrainConfig(steps=200, batch_size=16, optim=OptimConfig(lr=0.05), eval_every=20,
                              checkpoint_every=20)
    train(fresh(), task, teacher_cfg, tmp_path / "teacher", {"model": ARCH}, progress=False)
    trajectory = Trajectory(tmp_path / "teacher")
    method = {"name": "adaptive", "start": 0, "patience": 1, "min_delta": 0.05}
    cfg = TrainConfig(steps=100, batch_size=8, optim=OptimConfig(lr=0.05), eval_every=10)

    def run(folder, stop_at=None):
        return train(fresh(2), task, cfg, tmp_path / folder, {"model": ARCH},
                     make_schedule(method, trajectory.steps, None), trajectory, progress=False, stop_at=stop_at)

    full = run("full")
    run("part", stop_at=45)
    resumed = run("part")
    assert resumed["supervision"] == full["supervision"] and resumed["curve"] == full["curve"]
    assert len(full["supervision"]) > 1  # the schedule did advance


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    model = fresh()
    save_checkpoint(tmp_path / "checkpoint-7", model, {"model": ARCH, "step": 7})
    loaded = load_checkpoint(tmp_path / "checkpoint-7" / "model.safetensors")
    x = torch.randn(5, 12)
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "checkpoint-8")
    weights = tmp_path / "checkpoint-7" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "checkpoint-7")
    (tmp_path / "checkpoint-7" / "meta.json").write_text('{"model": ')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "checkpoint-7")
    with pytest.raises(CheckpointError, match="nowhere: no such trajectory folder"):
        Trajectory(tmp_path / "nowhere")


def test_lr_schedule_and_checkpoint_cadence():
    cfg = OptimConfig(lr=1.0, schedule="cosine", warmup=0.1)
    assert lr_at(0, 100, cfg) == pytest.approx(0.1)
    assert lr_at(9, 100, cfg) == pytest.approx(1.0)
    assert lr_at(55, 100, cfg) == pytest.approx(0.5, abs=0.02)
    assert lr_at(99, 100, cfg) < 0.01
    steps = checkpoint_steps(TrainConfig(steps=1000, batch_size=1, checkpoint_every=300, log_checkpoints=4))
    assert {0, 300, 600, 900, 1000} <= steps and {1, 300} <= steps and len(steps) > 5


def test_checkpoint_steps_by_hand():
    def steps(**kw):
        return checkpoint_steps(TrainConfig(batch_size=1, **kw))

    # log-spaced: round(300^(k/4)) = 1, 4 (4.16), 17 (17.3), 72 (72.1), 300
    assert steps(steps=1000, checkpoint_every=300, log_checkpoints=4) == {0, 1, 4, 17, 72, 300, 600, 900, 1000}
    # round(100^(k/3)) = 1, 5 (4.64), 22 (21.5), 100: the last is past the end
    assert steps(steps=50, checkpoint_every=100, log_checkpoints=3) == {0, 1, 5, 22, 50}
    assert steps(steps=90, checkpoint_every=30, log_checkpoints=1) == {0, 1, 30, 60, 90}
    assert steps(steps=100, checkpoint_every=30) == {0, 30, 60, 90, 100}  # and the last step
    assert steps(steps=91, checkpoint_every=30) == {0, 30, 60, 90, 91}
    assert steps(steps=100) == set()


def test_next_boundary_by_hand():
    """The first evaluation (every 20), state (every 30), checkpoint or end after a step."""
    from progdistill.trainer import next_boundary

    cfg = TrainConfig(steps=100, batch_size=1, eval_every=20)
    checkpoints = [0, 1, 5, 50, 100]
    expected = {0: 1, 1: 5, 4: 5, 5: 20, 19: 20, 20: 30, 30: 40, 40: 50, 45: 50, 50: 60, 60: 80, 80: 90, 90: 100,
                99: 100}
    assert {step: next_boundary(step, cfg, checkpoints, 30) for step in expected} == expected
    assert [next_boundary(step, cfg, [], 30) for step in (0, 20, 59, 60)] == [20, 30, 60, 80]
    assert [next_boundary(step, cfg, [0, 1, 5], 30) for step in (5, 10)] == [20, 20]  # past the last checkpoint
    short = TrainConfig(steps=25, batch_size=1, eval_every=20)
    assert next_boundary(20, short, [], 30) == 25  # the end comes first


def test_optimizer_state_files_round_trip(tmp_path):
    from progdistill.trainer import _read_optimizer, _save_optimizer

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    info = json.loads(json.dumps(_save_optimizer(tmp_path / "adam.safetensors", opt)))  # as in state.json
    read = _read_optimizer(tmp_path / "adam.safetensors", info)
    state = opt.state_dict()
    assert read["param_groups"] == json.loads(json.dumps(state["param_groups"])) and set(read["state"]) == {0, 1}
    for pid, entries in state["state"].items():
        assert set(read["state"][pid]) == set(entries)
        assert all(torch.equal(read["state"][pid][k], v) for k, v in entries.items())
    # no tensors at all (SGD without momentum has no state)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    info = json.loads(json.dumps(_save_optimizer(tmp_path / "sgd.safetensors", sgd)))
    assert _read_optimizer(tmp_path / "sgd.safetensors", info) == {"state": {}, "param_groups": info["param_groups"]}
    # a state dict with scalar entries and keys holding a dot
    buf, other = torch.arange(3.0), torch.ones(2, 2)
    plain = {"state": {0: {"step": 3, "a.b": buf, "c.d": 0.5}, 12: {"buf": other}, 5: {"scale": 0.25}},
             "param_groups": [{"lr": 0.1, "params": [0, 5, 12]}]}
    info = json.loads(json.dumps(_save_optimizer(tmp_path / "dict.safetensors", plain)))
    assert info["scalars"] == {"0.step": 3, "0.c.d": 0.5, "5.scale": 0.25}
    read = _read_optimizer(tmp_path / "dict.safetensors", info, "cpu")
    assert read["param_groups"] == plain["param_groups"] and set(read["state"]) == {0, 5, 12}
    assert read["state"][5] == {"scale": 0.25}  # a parameter with scalar entries only
    assert set(read["state"][0]) == {"step", "a.b", "c.d"}
    assert read["state"][0]["step"] == 3 and read["state"][0]["c.d"] == 0.5
    assert torch.equal(read["state"][0]["a.b"], buf) and torch.equal(read["state"][12]["buf"], other)


def test_global_generator_state_round_trip():
    from progdistill.trainer import _rng_state, _set_rng_state

    torch.manual_seed(3)
    state = _rng_state()
    assert torch.equal(state["cpu"], torch.get_rng_state())
    first = torch.rand(5)
    torch.manual_seed(4)
    _set_rng_state(state)
    assert torch.equal(torch.rand(5), first)


def test_generator_states_of_gpus_are_saved_once_cuda_is_in_use(monkeypatch):
    """Simulated GPUs: their generator states join the CPU's only once CUDA is initialised (in use)."""
    from progdistill.trainer import _rng_state

    gpu = [torch.full((4,), 7, dtype=torch.uint8), torch.full((4,), 8, dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert set(_rng_state()) == {"cpu"}
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    state = _rng_state()
    assert set(state) == {"cpu", "cuda.0", "cuda.1"} and state["cuda.1"] is gpu[1]


def test_generator_states_of_several_gpus_are_restored_in_device_order(monkeypatch):
    """On a machine with GPUs (simulated): the states of cuda.0, cuda.2 and cuda.10 go back to
    `torch.cuda.set_rng_state_all` in device order, not in text order; without GPU states nothing does."""
    from progdistill.trainer import _set_rng_state

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append([int(s[0]) for s in states]))
    cpu = torch.get_rng_state()
    gpu = {f"cuda.{i}": torch.full((4,), i, dtype=torch.uint8) for i in (10, 0, 2)}
    _set_rng_state({"cpu": cpu, **gpu})
    assert restored == [[0, 2, 10]]
    _set_rng_state({"cpu": cpu})
    assert restored == [[0, 2, 10]]


def sigmoid_curve(mid, width, n=200, total=10_000, noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    steps = torch.linspace(0, total, n)
    loss = 0.7 - 0.6 * torch.sigmoid((steps - mid) / width) + noise * torch.randn(n, generator=g)
    return [{"step": int(s), "loss": float(v), "accuracy": float(1.2 - v)} for s, v in zip(steps, loss)]


@pytest.mark.parametrize("mid, width, noise", [(6000, 200, 0.0), (2500, 400, 0.01), (8000, 100, 0.02)])
def test_phase_detection_finds_the_sharp_drop(mid, width, noise):
    for metric in ("loss", "accuracy"):
        phases = detect_phases(sigmoid_curve(mid, width, noise=noise), metric)
        assert abs(phases.middle - mid) <= 2 * width
        assert phases.drop_start < mid < phases.drop_end
        assert phases.drop_end - phases.drop_start < 16 * width + 1000


def test_phase_detection_ignores_a_fast_initial_drop_when_asked_for_accuracy():
    curve = sigmoid_curve(6000, 200)
    for p in curve[:5]:
        p["loss"] += 1.0  # loss starts high and falls quickly, accuracy stays at chance
    assert abs(detect_phases(curve, "accuracy").middle - 6000) <= 400
    with pytest.raises(ValueError, match=re.escape("need >= 4 finite points of 'loss' to detect phases, got 1")):
        detect_phases([{"step": 0, "loss": 1.0}, {"step": 1, "loss": 1.0}], "loss")


def test_run_files_are_json(tmp_path):
    task = ParityTask(d=12, k=2, eval_size=64)
    train(fresh(), task, TrainConfig(steps=10, batch_size=4, eval_every=5), tmp_path, {"model": ARCH},
          progress=False)
    assert [p["step"] for p in read_json(tmp_path / "curve.json")] == [0, 5, 10]
    assert json.loads((tmp_path / "checkpoint-10" / "meta.json").read_text())["step"] == 10


def test_divergence_is_a_clear_error(tmp_path):
    task = ParityTask(d=12, k=2, eval_size=64)
    with pytest.raises(ValueError, match="OptimConfig.lr: Input should be a finite number"):
        OptimConfig(lr=float("nan"))  # refused up front, as in a recipe
    cfg = TrainConfig(steps=10, batch_size=4, optim=OptimConfig(lr=1e30), eval_every=5)
    with pytest.raises(DivergenceError, match="held-out loss is (nan|inf) at step 5: training diverged"):
        train(fresh(), task, cfg, tmp_path, {"model": ARCH}, progress=False, desc="teacher")


@pytest.mark.parametrize("tau", [0.0, 2.0])
def test_cached_teacher_outputs_give_identical_students_and_are_reused(tmp_path, tau, monkeypatch):
    from progdistill.teacher_outputs import TeacherOutputs

    task = ParityTask(d=12, k=2, eval_size=256, data_seed=3)
    teacher_cfg = TrainConfig(steps=120, batch_size=16, optim=OptimConfig(lr=0.1), eval_every=40, checkpoint_every=40)
    train(fresh(5), task, teacher_cfg, tmp_path / "teacher", {"model": ARCH}, progress=False)
    trajectory = Trajectory(tmp_path / "teacher")
    cfg = TrainConfig(steps=90, batch_size=16, optim=OptimConfig(lr=0.1), kd=KDConfig(alpha=0.0, tau=tau),
                      eval_every=30)

    def student(folder, cache):
        model = fresh(1)
        record = train(model, task, cfg, tmp_path / folder, {"model": ARCH},
                       make_schedule({"name": "progressive", "refresh": 20}, trajectory.steps, None),
                       trajectory, progress=False, teacher_cache=cache)
        return model, record

    plain, plain_record = student("plain", None)
    cached, cached_record = student("cached", tmp_path / "cache")
    blocks = sorted(p.relative_to(tmp_path / "cache").as_posix() for p in (tmp_path / "cache").rglob("*.safetensors"))
    assert blocks == ["checkpoint-120/block-1.safetensors", "checkpoint-40/block-0.safetensors",
                      "checkpoint-80/block-0.safetensors", "checkpoint-80/block-1.safetensors"]
    assert plain_record["curve"] == cached_record["curve"]
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), cached.parameters()))

    def no_teacher(*args):
        raise AssertionError("the teacher ran although its outputs were cached")

    with monkeypatch.context() as patch:
        patch.setattr(TeacherOutputs, "_compute", no_teacher)
        again, _ = student("again", tmp_path / "cache")
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), again.parameters()))

    truncated = tmp_path / "cache" / "checkpoint-40" / "block-0.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:20])
    repaired, _ = student("repaired", tmp_path / "cache")
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), repaired.parameters()))


def test_bf16_autocast_trains_close_to_fp32_and_keeps_fp32_weights(tmp_path):
    from progdistill.grammar import generate_grammar
    from progdistill.tasks.pcfg import PCFGMLMTask

    task = PCFGMLMTask(generate_grammar(levels=2, seed=0), eval_size=200, seed=1, data_seed=2)
    io = task.model_io()
    arch = {"type": "bert", "vocab_size": io["vocab_size"], "seq_len": io["seq_len"], "layers": 1, "heads": 2,
            "head_dim": 8, "pad_id": io["pad_id"]}
    save_checkpoint(tmp_path / "teacher" / "checkpoint-0", fresh(5, arch), {"model": arch, "step": 0})
    teacher = Trajectory(tmp_path / "teacher")
    records, models = {}, {}
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(steps=40, batch_size=32, precision=precision, optim=OptimConfig(name="adamw", lr=5e-3),
                          kd=KDConfig(alpha=0.5, tau=2.0), eval_every=20)
        models[precision] = fresh(1, arch)
        records[precision] = train(models[precision], task, cfg, tmp_path / precision, {"model": arch},
                                   make_schedule({"name": "one-shot"}, teacher.steps, None), teacher,
                                   progress=False)
    fp32, bf16 = ([p["loss"] for p in records[k]["curve"]] for k in ("fp32", "bf16"))
    assert fp32 != bf16, "autocast is not on"
    assert all(abs(a - b) < 0.05 * a for a, b in zip(fp32, bf16))
    assert bf16[-1] < bf16[0] - 0.3
    assert all(p.dtype == torch.float32 for p in models["bf16"].parameters())
    with pytest.raises(ValueError, match="TrainConfig.precision: Input should be 'fp32' or 'bf16'"):
        train(fresh(1, arch), task, TrainConfig(steps=1, batch_size=4, precision="fp8"), tmp_path / "x",
              {"model": arch}, progress=False)


def test_loss_spikes_are_found_and_reported():
    import numpy as np

    from progdistill.report.curves import SeedCurves
    from progdistill.report.health import health
    from progdistill.trajectory import loss_spikes

    losses = [2.1, 0.9, 0.85, 10.4, 0.84, 0.8, 1.5, 0.5, 1.01]
    curve = [{"step": 50 * i, "loss": x, "accuracy": 0.5 + 0.05 * i} for i, x in enumerate(losses)]
    assert loss_spikes(curve) == [{"step": 150, "loss": 10.4, "best_before": 0.85},
                                  {"step": 400, "loss": 1.01, "best_before": 0.5}]
    assert loss_spikes(curve[:3]) == [] and loss_spikes(curve, factor=20) == []
    seeds = {"0": {"loss_spikes": [], "final_accuracy": 0.9}, "1": {"loss_spikes": loss_spikes(curve)[:1],
                                                                   "final_accuracy": 0.9}}
    teacher = {"curve": curve, "checkpoints": [0, 100, 400], "phases": {"drop_start": 100, "drop_end": 200, "middle": 150,
                                                                  "metric": "loss"}, "loss_spikes": []}
    summary = {"teacher": teacher, "methods": {"ce": {"budgets": {"300": {"seeds": seeds}}}}}
    acc = np.array([[p["accuracy"] for p in curve]] * 2)
    recovered = SeedCurves(np.arange(9.0), acc, np.array([[2.0, 1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9], losses[:8] + [0.8]]))
    text = health(summary, {("ce", 300): recovered}, 2)
    assert text.startswith("**Run health: the numbers can be trusted.** The teacher left its plateau (sharp drop at "
                           "steps 100–200)") and "1 of 2 students had a held-out loss spike" in text
    lasting = SeedCurves(np.arange(9.0), acc, np.array([[2.0, 1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9], losses]))
    text = health(summary, {("ce", 300): lasting}, 2)  # ends at 1.01 after a best of 0.5: not recovered
    assert text.startswith("**Run health: read the numbers with care.** 1 student(s) ended well below their own best "
                           "(held-out loss above twice its best, or accuracy more than 0.05 below its best): `ce` at "
                           "budget 300 (seed 1)")
    seeds["1"]["teacher_checkpoints"] = [100]  # still taught by an intermediate checkpoint at the end: expected
    text = health(summary, {("ce", 300): lasting}, 2)
    assert text.startswith("**Run health: the numbers can be trusted.**")
    assert "1 student(s) ended below their own best while still taught by an intermediate checkpoint" in text
    del seeds["1"]["teacher_checkpoints"]
    teacher["loss_spikes"] = loss_spikes(curve)
    text = health(summary, {("ce", 300): recovered}, 3)
    assert ("teacher's held-out loss spiked above twice its best so far at 2 evaluation(s) from step 150 (highest "
            "10.4 after a best of 0.85) and had not recovered at the end") in text
    assert "some students have not finished: `ce` at budget 300 (2 of 3)" in text


@pytest.mark.parametrize("a, b, window, threshold, skip", [
    (4000, 6000, 0.05, 0.25, 0.05), (4000, 6000, 0.05, 0.125, 0.05), (3000, 7000, 0.1, 0.3, 0.05),
    (2500, 5500, 0.05, 0.41, 0.0),
    (2000, 4560, 0.064, 0.25, 0.0),  # exact binary values: the rate at the drop start is exactly threshold x peak
    (4000, 6000, 0.002, 0.05, 0.05),  # the smallest window: one grid point either side
    (4000, 6000, 0.09899, 0.05, 0.05),  # window x 1000 / 2 = 49.495: 49 grid points either side
])
def test_phase_boundaries_of_a_linear_drop_match_the_hand_derivation(a, b, window, threshold, skip):
    """Loss 1 until step a, a straight line to 0 at step b, 0 after, evaluated every 10 steps to 10,000.
    On the detector's grid (1001 points from the first step kept after `skip`, spacing dx) the ramp runs
    from index ia to ib. The fall over a window of 2h grid points centred at i is s * (the overlap of
    [i-h, i+h] with [ia, ib]), s = the slope, peaking at 2h*s once ib - ia > 2h. The drop phase is where
    that is at least threshold * the peak: overlap >= 2h*threshold, i.e. i from ia - h + 2h*threshold to
    ib + h - 2h*threshold; the middle is the first grid point at or below the mean of the loss at the two
    ends (1 and 0)."""
    curve = [{"step": s, "loss": 1.0 if s <= a else 0.0 if s >= b else 1.0 - (s - a) / (b - a)}
             for s in range(0, 10001, 10)]
    for point in curve:
        point["accuracy"] = 1.0 - point["loss"] / 2
    first = skip * 10000
    dx = (10000 - first) / 1000
    ia, ib, h = (a - first) / dx, (b - first) / dx, round(window * 1000 / 2)
    assert ib - ia > 2 * h
    start, end = math.ceil(ia - h + 2 * h * threshold), math.floor(ib + h - 2 * h * threshold)
    middle = math.ceil(ia + (ib - ia) / 2)
    expected = [int(round(first + dx * i)) for i in (start, end, middle)]
    for metric in ("loss", "accuracy"):
        phases = detect_phases(curve, metric, window, threshold, skip)
        assert [phases.drop_start, phases.drop_end, phases.middle] == expected


def test_phase_detection_edge_cases_by_hand():
    """Curves whose phases are derived by hand (evaluations every 10 steps, so grid point i is step 10 i;
    window 0.05: h = 25 grid points either side). The curve is padded with its first and last values,
    so a drop at either end of the run is found where it is."""
    steps = range(0, 10001, 10)
    linear = [{"step": s, "loss": 1 - s / 10000} for s in steps]  # falls at the same rate everywhere
    # the windowed fall is the same everywhere, so the drop phase is the whole run: as steep as the curve
    # on average (1.00x), no sharp drop
    with pytest.raises(ValueError, match=r"^'loss' declines without a sharp drop: its steepest stretch \(steps "
                                         r"0–10,000\) falls 1\.00x as fast as the curve on average \(phases\."
                                         r"sharpness needs 2x\): no phase transition to detect$"):
        detect_phases(linear, skip=0.0)  # metric defaults to the loss
    assert detect_phases(linear, skip=0.0, sharpness=1.0).to_dict() == {"drop_start": 0, "drop_end": 10000,
                                                                         "middle": 5000, "metric": "loss"}
    first = [{"step": s, "loss": 1.0 if s == 0 else 0.0} for s in steps]  # all of it between steps 0 and 10
    # rate(i) = v[i - h] - v[i + h] = 1 for i in [0, h]; the loss is at or below 1/2 from grid point 1
    assert detect_phases(first, "loss", skip=0.0).to_dict() == {"drop_start": 0, "drop_end": 250, "middle": 10,
                                                                 "metric": "loss"}
    last = [{"step": s, "loss": 0.0 if s == 10000 else 1.0, "accuracy": 0.5} for s in steps]
    # rate(i) = 1 for i in [1000 - h, 1000]; the loss reaches 1/2 only at the last point
    assert detect_phases(last, skip=0.0).to_dict() == {"drop_start": 9750, "drop_end": 10000, "middle": 10000,
                                                        "metric": "loss"}
    with pytest.raises(ValueError, match=r"^'accuracy' never rises: no phase transition to detect$"):
        detect_phases(last, "accuracy")  # constant
    rising = [{"step": s, "loss": s / 10000} for s in steps]
    with pytest.raises(ValueError, match=r"^'loss' never falls: no phase transition to detect$"):
        detect_phases(rising, skip=0.0)
    step = [{"step": s, "loss": 1.0 if s < 5000 else 0.0} for s in steps]
    assert detect_phases(step[::250], skip=0.0).metric == "loss"  # 5 points: enough
    # 4 points: enough. Loss 1, 1, 0, 0 at 0, 3000, 6000, 9000: a ramp from grid point 333.3 to 666.7
    # (9 steps a point), phase from ceil(333.3 - 25 + 12.5) = 321 to floor(666.7 + 25 - 12.5) = 679
    assert (detect_phases(step[::300], skip=0.0).drop_start, detect_phases(step[::300], skip=0.0).drop_end) == (
        2889, 6111)
    broken = [dict(p) for p in linear[::100]]
    broken[3]["loss"] = float("nan")
    with pytest.raises(ValueError, match=r"^need >= 4 finite points of 'loss' to detect phases, got 10$"):  # 11 minus the skipped head
        detect_phases(broken)


def test_phase_detection_is_translation_invariant():
    """A run that starts at step 1000 (say, resumed) has its phases shifted by exactly 1000 steps: the
    skipped head is a fraction of the run's length, not of its last step."""
    curve = [{"step": s, "loss": 1.0 if s <= 4000 else 0.0 if s >= 6000 else 1.0 - (s - 4000) / 2000}
             for s in range(0, 10001, 10)]
    shifted = [{"step": p["step"] + 1000, "loss": p["loss"]} for p in curve]
    for skip in (0.05, 0.2):
        base, moved = detect_phases(curve, skip=skip), detect_phases(shifted, skip=skip)
        assert (moved.drop_start, moved.drop_end, moved.middle) == (base.drop_start + 1000, base.drop_end + 1000,
                                                                     base.middle + 1000)


def flat_curve(n, seed, level=0.693, noise=1e-3, total=10_000):
    g = np.random.default_rng(seed)
    return [{"step": int(s), "loss": level + noise * float(g.standard_normal()), "accuracy": 0.5 + noise * float(
        g.standard_normal())} for s in np.linspace(0, total, n)]


@pytest.mark.parametrize("n", [20, 100, 1000])
def test_phase_detection_finds_no_drop_in_the_noise_of_a_flat_curve(n):
    """A loss of 0.693 (an accuracy of 0.5) plus Gaussian noise of 1e-3 never changes: its running best
    falls a few noise levels at most, below the 8 x noise needed."""
    for seed in range(5):
        for metric, verb in (("loss", "falls"), ("accuracy", "rises")):
            with pytest.raises(ValueError, match=rf"^'{metric}' {verb} by only .* its evaluation noise .*"
                                                 r"\(phases\.noise needs 8x\): no phase transition to detect$"):
                detect_phases(flat_curve(n, seed), metric)


def test_phase_detection_finds_no_drop_in_a_slow_decline():
    """Monotone declines without a sharp drop (a straight line, an exponential with the run's half
    length as its time constant, each with noise 1e-3) are no phase transition; a sigmoid drop of the
    same height over them is found."""
    g = np.random.default_rng(0)
    steps = np.linspace(0, 10_000, 200)
    for decline in (0.7 - 0.3 * steps / 10_000, 0.7 * np.exp(-steps / 5000)):
        curve = [{"step": int(s), "loss": float(v + 1e-3 * g.standard_normal())} for s, v in zip(steps, decline)]
        with pytest.raises(ValueError, match=r"^'loss' declines without a sharp drop: .*no phase transition"):
            detect_phases(curve)
        rising = [{"step": p["step"], "accuracy": 1 - p["loss"]} for p in curve]
        with pytest.raises(ValueError, match=r"^'accuracy' rises without a sharp rise: its steepest stretch \(steps "
                                             r"[0-9,]+–[0-9,]+\) rises [0-9.]+x as fast as the curve on average"):
            detect_phases(rising, "accuracy")
        sharp = [{"step": p["step"], "loss": p["loss"] - 0.3 / (1 + np.exp(-(p["step"] - 6000) / 100))}
                 for p in curve]
        phases = detect_phases(sharp)
        assert phases.drop_start < 6000 < phases.drop_end and abs(phases.middle - 6000) <= 300


@pytest.mark.parametrize("height, found", [(17.0, True), (16.5, False)])
def test_phase_detection_noise_boundary_by_hand(height, found):
    """A plateau at `height` x e with deterministic noise +-e (alternating), then a step down to 0 (same
    noise) at step 5,000; evaluations every 10 steps, no skip. Every step-to-step change but the step's
    is 2e, so sigma = 2e / (sqrt(2) x 0.6745) = 2.0967e and 8 sigma = 16.77e. The running best is height
    x e - e on the plateau and -e after the step: the drop falls height x e, found above 16.77e."""
    e = 1e-3
    curve = [{"step": s, "loss": (height * e if s < 5000 else 0.0) + e * (-1) ** (s // 10)}
             for s in range(0, 10001, 10)]
    if found:
        phases = detect_phases(curve, skip=0.0)
        assert phases.drop_start < 5000 <= phases.drop_end
    else:
        with pytest.raises(ValueError, match=r"^'loss' falls by only 0\.0165 in its steepest stretch \(steps "
                                             r"4,750–5,240\), 7\.9x its evaluation noise 0\.0021 \(phases"):
            detect_phases(curve, skip=0.0)


@pytest.mark.parametrize("length, found", [(4700, True), (4800, False)])
def test_phase_detection_sharpness_boundary_by_hand(length, found):
    """Loss 1, a straight ramp to 0 over `length` steps from step 2,500, 0 after; evaluations every 10
    steps, no skip (grid point i = step 10 i). As in the linear-drop derivation (h = 25, threshold 0.25)
    the phase runs from ceil(ia - 12.5) to floor(ib + 12.5): length / 10 + 24 grid points of 1000, over
    which the whole fall happens, so it is 1000 / (length / 10 + 24) times as steep as the curve on
    average: 2.03 for 4,700 steps (found), 1.98 for 4,800 (not: below 2)."""
    a, b = 2500, 2500 + length
    curve = [{"step": s, "loss": 1.0 if s <= a else 0.0 if s >= b else 1.0 - (s - a) / (b - a)}
             for s in range(0, 10001, 10)]
    if found:
        phases = detect_phases(curve, skip=0.0)
        assert (phases.drop_start, phases.drop_end) == (2380, 7320)
    else:
        with pytest.raises(ValueError, match=r"^'loss' declines without a sharp drop: its steepest stretch \(steps "
                                             r"2,380–7,420\) falls 1\.98x as fast"):
            detect_phases(curve, skip=0.0)
