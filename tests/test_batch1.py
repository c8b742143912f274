"""The batch-1 path (batch1.py): same training as the generic loop, used automatically where it applies."""

import json

import pytest
import torch
import torch.nn.functional as F

from progdistill import batch1_kernels
from progdistill.batch1 import Batch1Path, blocker, make_batch1_path
from progdistill.config import RecipeError, load_recipe
from progdistill.io import save_tensors
from progdistill.models import build_model
from progdistill.schedule import make_schedule
from progdistill.tasks import ParityTask
from progdistill.teacher_outputs import TeacherOutputs
from progdistill.trainer import KDConfig, OptimConfig, TrainConfig, train
from progdistill.trajectory import Trajectory

ARCH = {"type": "mlp", "input_dim": 12, "num_classes": 2, "width": 32}
BACKENDS = [pytest.param("numba", marks=pytest.mark.skipif(not batch1_kernels.NUMBA, reason="Numba not installed")),
            "torch"]


def fresh(seed=0, arch=ARCH):
    torch.manual_seed(seed)
    return build_model(arch)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A small teacher trajectory (batch 8, generic loop), checkpoints every 50 steps up to 200."""
    root = tmp_path_factory.mktemp("teacher")
    task = ParityTask(d=12, k=2, eval_size=256, data_seed=3)
    cfg = TrainConfig(steps=200, batch_size=8, optim=OptimConfig(lr=0.1), eval_every=50, checkpoint_every=50)
    train(fresh(5), task, cfg, root, {"model": ARCH}, progress=False)
    return Trajectory(root)


def chunks_counted(monkeypatch) -> list[int]:
    """Patch Batch1Path._chunk to record the first step of every chunk it runs."""
    seen: list[int] = []
    original = Batch1Path._chunk

    def counting(self, a, b, *args):
        seen.append(a)
        return original(self, a, b, *args)

    monkeypatch.setattr(Batch1Path, "_chunk", counting)
    return seen


CASES = {
    "ce-cosine": (OptimConfig(lr=0.05, schedule="cosine", warmup=0.06), KDConfig(), None),
    "ce-weight-decay": (OptimConfig(lr=0.05, weight_decay=0.1), KDConfig(), None),
    "progressive-tau0-cosine": (OptimConfig(lr=0.05, schedule="cosine", warmup=0.06), KDConfig(),
                                {"name": "progressive", "refresh": 40}),
    "two-shot-tau2-alpha": (OptimConfig(lr=0.05), KDConfig(alpha=0.3, tau=2.0, scale_tau2=True),
                            {"name": "two-shot", "checkpoint": 100, "switch": 130}),
}


@pytest.fixture(scope="module")
def generic_runs():
    return {}  # case -> (model, record) of the generic loop, shared by the backends


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_batch1_path_trains_like_the_generic_loop(tmp_path, teacher, backend, case, generic_runs, monkeypatch):
    optim, kd, method = CASES[case]
    task = ParityTask(d=12, k=2, eval_size=256, data_seed=4)

    def run(choice):
        model = fresh(1)
        cfg = TrainConfig(steps=240, batch_size=1, optim=optim, kd=kd, eval_every=80, batch1=choice)
        schedule = make_schedule(method, teacher.steps, None) if method else None
        record = train(model, task, cfg, tmp_path / choice, {"model": ARCH}, schedule, teacher if method else None,
                       progress=False)
        lines = [json.loads(x) for x in (tmp_path / choice / "metrics.jsonl").read_text().splitlines()]
        return model, record, lines

    if case not in generic_runs:
        generic_runs[case] = run("off")
    generic, generic_record, generic_lines = generic_runs[case]
    chunks = chunks_counted(monkeypatch)
    fast, fast_record, fast_lines = run(backend)
    assert chunks == [0, 80, 160]  # chunks end at the evaluation steps (T is 128)
    for a, b in zip(generic.parameters(), fast.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert fast_record["supervision"] == generic_record["supervision"]
    assert [p["step"] for p in fast_record["curve"]] == [p["step"] for p in generic_record["curve"]]
    assert [p["accuracy"] for p in fast_record["curve"]] == pytest.approx(
        [p["accuracy"] for p in generic_record["curve"]], abs=1 / 256)
    if method:
        assert len({s["checkpoint"] for s in fast_record["supervision"]}) > 1
    # metrics.jsonl: the training loss and KD term of each interval, as the generic loop logs them
    assert [x["step"] for x in fast_lines] == [x["step"] for x in generic_lines]
    for f, g in zip(fast_lines, generic_lines):
        for key in ("train/loss", "train/kd_loss"):
            assert (f[key] is None) == (g[key] is None), key
            if g[key] is not None:
                assert f[key] == pytest.approx(g[key], rel=1e-4, abs=1e-6), key
    assert fast_lines[-1]["train/loss"] is not None and (method is None) == (fast_lines[-1]["train/kd_loss"] is None)


def test_batch1_path_is_automatic_and_can_be_turned_off(tmp_path, monkeypatch):
    task = ParityTask(d=12, k=2, eval_size=64, data_seed=1)
    chunks = chunks_counted(monkeypatch)
    cfg = TrainConfig(steps=40, batch_size=1, optim=OptimConfig(lr=0.05), eval_every=20)
    train(fresh(), task, cfg, tmp_path / "auto", {"model": ARCH}, progress=False)
    assert chunks == [0, 20]
    off = TrainConfig(steps=40, batch_size=1, optim=OptimConfig(lr=0.05), eval_every=20, batch1="off")
    train(fresh(), task, off, tmp_path / "off", {"model": ARCH}, progress=False)
    momentum = TrainConfig(steps=40, batch_size=1, optim=OptimConfig(lr=0.05, momentum=0.9), eval_every=20)
    train(fresh(), task, momentum, tmp_path / "momentum", {"model": ARCH}, progress=False)
    assert chunks == [0, 20]  # neither ran on the batch-1 path


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch1_path_matches_a_float64_reference_as_closely_as_the_plain_float32_loop(backend):
    """Width 2000: rounding differs from the plain loop's; both must stay as close to float64 SGD."""
    task = ParityTask(d=20, k=3, eval_size=64, data_seed=2)
    arch = {"type": "mlp", "input_dim": 20, "num_classes": 2, "width": 2000}
    batch = task.train_examples(0, 200)

    def plain(dtype):
        model = fresh(3, arch).to(dtype)
        opt = torch.optim.SGD(model.parameters(), lr=0.02)
        for i in range(200):
            loss = F.cross_entropy(model.net(batch.inputs[i:i + 1].to(dtype)), batch.targets[i:i + 1])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model

    reference, plain32 = plain(torch.float64), plain(torch.float32)
    fast = fresh(3, arch)
    Batch1Path(fast, lambda step: 0.02, 0.0, 1.0, 0.0, False, backend, chunk=64, block=16).run(0, 200, task)
    for ref, a, b in zip(reference.parameters(), plain32.parameters(), fast.parameters()):
        plain_error = float((a.detach().double() - ref.detach()).abs().max())
        fast_error = float((b.detach().double() - ref.detach()).abs().max())
        assert fast_error <= 4 * plain_error + 1e-6, (fast_error, plain_error)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch1_run_resumes_bit_identically(tmp_path, teacher, backend):
    task = ParityTask(d=12, k=2, eval_size=128, data_seed=6)
    cfg = TrainConfig(steps=120, batch_size=1, optim=OptimConfig(lr=0.05, schedule="cosine", warmup=0.1),
                      eval_every=20, checkpoint_every=40, state_every=40, batch1=backend)
    schedule = lambda: make_schedule({"name": "progressive", "refresh": 30}, teacher.steps, None)  # noqa: E731
    full_model = fresh()
    full = train(full_model, task, cfg, tmp_path / "full", {"model": ARCH}, schedule(), teacher, progress=False)
    train(fresh(), task, cfg, tmp_path / "part", {"model": ARCH}, schedule(), teacher, progress=False, stop_at=50)
    state = tmp_path / "part" / "state"
    assert sorted(f.name for f in state.iterdir()) == ["model-60.safetensors", "optimizer-60.safetensors",
                                                       "rng-60.safetensors", "state.json"]  # the first boundary >= 50
    resumed_model = fresh(seed=99)
    resumed = train(resumed_model, task, cfg, tmp_path / "part", {"model": ARCH}, schedule(), teacher,
                    progress=False)
    assert resumed["curve"] == full["curve"] and resumed["supervision"] == full["supervision"]
    for a, b in zip(full_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    assert Trajectory(tmp_path / "part").steps == [0, 40, 80, 120]


def test_where_the_batch1_path_does_not_apply():
    task = ParityTask(d=12, k=2, eval_size=64)
    model = fresh()
    base = dict(steps=10, batch_size=1, optim=OptimConfig(lr=0.1))
    assert blocker(model, task, TrainConfig(**base)) is None
    assert blocker(model, task, TrainConfig(**{**base, "batch_size": 4})) == "batch size 4 (it needs 1)"
    assert blocker(model, task, TrainConfig(**{**base, "optim": OptimConfig(name="adam")})) == \
        "optimizer adam (it needs sgd)"
    assert blocker(model, task, TrainConfig(**{**base, "optim": OptimConfig(grad_clip=1.0)})) == "gradient clipping"
    assert blocker(model, task, TrainConfig(**{**base, "kd": KDConfig(tau=1.0, kind="reverse")})) == \
        "KD kind reverse"
    deep = fresh(arch={**ARCH, "depth": 2})
    assert blocker(deep, task, TrainConfig(**base)) == "a model other than a one-hidden-layer MLP"
    teachers = TeacherOutputs(None, task, 4, torch.device("cpu"))
    with pytest.raises(ValueError, match="batch1=torch: the batch-1 path does not apply to this training: "
                                         "batch size 4"):
        make_batch1_path(model, task, TrainConfig(**{**base, "batch_size": 4, "batch1": "torch"}), lambda s: 0.1,
                         teachers)
    assert make_batch1_path(model, task, TrainConfig(**{**base, "batch_size": 4}), lambda s: 0.1, teachers) is None
    with pytest.raises(ValueError, match="TrainConfig.batch1: Input should be 'auto', 'numba', 'torch' or 'off'"):
        make_batch1_path(model, task, TrainConfig(**{**base, "batch1": "fast"}), lambda s: 0.1, teachers)


def test_recipe_key_batch1(monkeypatch):
    assert load_recipe("parity-mlp-paper").batch1 == "auto"
    assert load_recipe("parity-mlp-paper", ["batch1=off"]).batch1 == "off"  # YAML reads off as false
    assert load_recipe("parity-mlp-paper", ["batch1=torch"]).batch1 == "torch"
    assert load_recipe("parity-mlp-small", ["batch1=off"]).batch1 == "off"
    with pytest.raises(RecipeError, match="batch1: Input should be 'auto', 'numba', 'torch' or 'off'"):
        load_recipe("parity-mlp-paper", ["batch1=fast"])
    with pytest.raises(RecipeError, match="override batch1=torch: batch1=torch forces the batch-1 path, which cannot train the teacher: "
                                          r"teacher.batch_size is 32 \(it needs 1\); use batch1=auto"):
        load_recipe("parity-mlp-small", ["batch1=torch"])
    with pytest.raises(RecipeError, match="cannot train the students: students.optim.momentum is 0.9"):
        load_recipe("parity-mlp-paper", ["batch1=torch", "students.optim.momentum=0.9"])
    with pytest.raises(RecipeError, match="batch1=numba runs on the CPU, not on device cuda"):
        load_recipe("parity-mlp-paper", ["batch1=numba"])
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None)
    with pytest.raises(RecipeError, match=r"batch1=numba: Numba is not installed \(pip install "
                                          r"'progdistill\[fast\]'\)"):
        load_recipe("parity-mlp-paper", ["batch1=numba", "device=cpu"])


@pytest.mark.parametrize("train_size", [None, 50])
def test_train_examples_are_the_batch_size_1_stream(train_size, monkeypatch):
    monkeypatch.setattr("progdistill.tasks.parity._CHUNK_SAMPLES", 64)  # cross generated chunks quickly
    task = ParityTask(d=12, k=2, eval_size=64, data_seed=5, train_size=train_size)
    rows = task.train_examples(30, 170)
    single = [task.train_batch(step, 1) for step in range(30, 170)]
    assert torch.equal(rows.inputs, torch.cat([b.inputs for b in single]))
    assert torch.equal(rows.targets, torch.cat([b.targets for b in single]))


@pytest.mark.parametrize("tau", [0.0, 1.5])
def test_teacher_outputs_for_a_range_of_steps(tmp_path, teacher, tau):
    task = ParityTask(d=12, k=2, eval_size=64, data_seed=7)
    cpu = torch.device("cpu")
    per_step = TeacherOutputs(teacher, task, 1, cpu, labels_only=tau == 0)
    cached = TeacherOutputs(teacher, task, 1, cpu, labels_only=tau == 0, cache=tmp_path, block=16)
    inputs = task.train_examples(10, 70).inputs
    expected = torch.cat([per_step.get(100, step, task.train_batch(step, 1)) for step in range(10, 70)])
    for outputs in (per_step.get_range(100, 10, 70, inputs), cached.get_range(100, 10, 70, inputs)):
        torch.testing.assert_close(outputs, expected)
    assert sorted(p.name for p in (tmp_path / "checkpoint-100").iterdir()) == [
        f"block-{i}.safetensors" for i in range(5)]


def test_teacher_outputs_of_a_range_load_only_their_blocks_once_and_batched(tmp_path, teacher, monkeypatch):
    """Steps [40, 64) with blocks of 16 are blocks 2 and 3; step 64 opens block 4. A block held for one
    checkpoint stays held while another checkpoint loads the same block; the batched blocks never run
    the per-batch forward (`_compute`)."""
    task = ParityTask(d=12, k=2, eval_size=64, data_seed=7)
    cpu = torch.device("cpu")
    per_step = TeacherOutputs(teacher, task, 1, cpu)
    expected = torch.cat([per_step.get(100, step, task.train_batch(step, 1)) for step in range(40, 66)])
    loads = []
    original = TeacherOutputs._load_block

    def counting(self, checkpoint, index, *args, **kwargs):
        loads.append((checkpoint, index))
        return original(self, checkpoint, index, *args, **kwargs)

    def per_batch(*args):
        raise AssertionError("a batched block ran the per-batch forward")

    monkeypatch.setattr(TeacherOutputs, "_load_block", counting)
    monkeypatch.setattr(TeacherOutputs, "_compute", per_batch)
    cached = TeacherOutputs(teacher, task, 1, cpu, cache=tmp_path, block=16)

    def outputs(checkpoint, start, stop):
        return cached.get_range(checkpoint, start, stop, task.train_examples(start, stop).inputs)

    def files(checkpoint):
        return sorted(p.name for p in (tmp_path / f"checkpoint-{checkpoint}").iterdir())

    torch.testing.assert_close(outputs(100, 40, 64), expected[:24])
    assert files(100) == ["block-2.safetensors", "block-3.safetensors"]
    torch.testing.assert_close(outputs(100, 40, 65), expected[:25])
    assert files(100) == ["block-2.safetensors", "block-3.safetensors", "block-4.safetensors"]
    assert loads == [(100, 2), (100, 3), (100, 2), (100, 3), (100, 4)]
    loads.clear()
    torch.testing.assert_close(outputs(100, 64, 66), expected[24:])
    outputs(150, 64, 66)
    torch.testing.assert_close(outputs(100, 65, 66), expected[25:])
    assert loads == [(150, 4)]


def test_teacher_outputs_under_bf16_autocast(teacher):
    task = ParityTask(d=12, k=2, eval_size=64, data_seed=7)
    cpu = torch.device("cpu")
    model = teacher.load(100, cpu)
    inputs, batch = task.train_examples(0, 8).inputs, task.train_batch(3, 4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference, on_batch = model(inputs).float(), model(batch.inputs).float()
    with torch.no_grad():
        assert not torch.equal(reference, model(inputs))  # bf16 rounds differently from fp32
    outputs = TeacherOutputs(teacher, task, 4, cpu, precision="bf16")
    assert torch.equal(outputs.get_range(100, 0, 8, inputs), reference)
    assert torch.equal(outputs.get(100, 3, batch), on_batch)  # every parity example carries a loss


def test_teacher_outputs_without_a_trajectory():
    task = ParityTask(d=12, k=2, eval_size=64)
    outputs = TeacherOutputs(None, task, 4, torch.device("cpu"))
    assert outputs.get(None, 0, task.train_batch(0, 4)) is None  # no teacher at this step
    with pytest.raises(AssertionError, match="^a teacher schedule needs a trajectory$"):
        outputs.get(50, 0, task.train_batch(0, 4))


def test_teacher_outputs_load_onto_their_device_and_fork_only_that_gpus_generator(tmp_path, monkeypatch):
    """The teacher and a cached block are read onto the outputs' device, and loading the teacher forks the
    global generators: the CPU's, and on a GPU that GPU's too. GPUs are simulated: the fork and the loads
    are recorded (safetensors reads only onto devices the machine has)."""
    import contextlib

    from progdistill import teacher_outputs
    from progdistill.io import load_tensors_and_metadata

    forked, loaded, read = [], [], []

    @contextlib.contextmanager
    def fork(devices=None, enabled=True):
        forked.append(devices)
        yield

    class Recorded:
        def load(self, step, device="cpu"):
            loaded.append((step, device))
            return torch.nn.Identity()

        def meta(self, step):
            return {"step": step}

        def path(self, step):
            return None

    monkeypatch.setattr(torch.random, "fork_rng", fork)
    monkeypatch.setattr(teacher_outputs, "load_tensors_and_metadata",
                        lambda path, device="cpu": read.append(device) or load_tensors_and_metadata(path))
    task = ParityTask(d=12, k=2, eval_size=64)
    for device, devices in ((torch.device("cuda", 1), [torch.device("cuda", 1)]), (torch.device("cpu"), [])):
        forked.clear(), loaded.clear()
        outputs = TeacherOutputs(Recorded(), task, 4, device)
        assert outputs.model(30) is outputs.model(30)  # loaded once
        assert forked == [devices] and loaded == [(30, device)]
    cached = TeacherOutputs(Recorded(), task, 4, torch.device("cuda", 1), cache=tmp_path, block=2)
    save_tensors(tmp_path / "checkpoint-30" / "block-0.safetensors",
                 {"outputs": torch.tensor([[1.0], [2.0], [3.0]]), "offsets": torch.tensor([0, 1, 3])},
                 cached.block_metadata(30, 0))
    assert cached.get(30, 1, task.train_batch(1, 4)).tolist() == [[2.0], [3.0]]
    assert read == [torch.device("cuda", 1)] and loaded == [(30, torch.device("cpu"))]


def test_teacher_outputs_per_step_hold_their_block_and_their_model(tmp_path, teacher, monkeypatch):
    """`get` with a cache: the default block is 50 steps (step 50 opens block 1), a held block is not read
    again, also while another checkpoint loads the same block, and each checkpoint is loaded once while
    it stays the same. Without `labels_only` the outputs are logits."""
    task = ParityTask(d=12, k=2, eval_size=64, data_seed=7)
    cpu = torch.device("cpu")
    plain = TeacherOutputs(teacher, task, 4, cpu)
    batches = {step: task.train_batch(step, 4) for step in (50, 51)}
    expected = {step: plain.get(100, step, batch) for step, batch in batches.items()}
    assert expected[50].shape == (4, 2) and expected[50].dtype == torch.float32
    loads, models = [], []
    load_block, load_model = TeacherOutputs._load_block, Trajectory.load

    def counting_blocks(self, checkpoint, index, *args, **kwargs):
        loads.append((checkpoint, index))
        return load_block(self, checkpoint, index, *args, **kwargs)

    def counting_models(self, step, *args, **kwargs):
        models.append(step)
        return load_model(self, step, *args, **kwargs)

    monkeypatch.setattr(TeacherOutputs, "_load_block", counting_blocks)
    monkeypatch.setattr(Trajectory, "load", counting_models)
    cached = TeacherOutputs(teacher, task, 4, cpu, cache=tmp_path)
    torch.testing.assert_close(cached.get(100, 50, batches[50]), expected[50])
    assert sorted(p.name for p in (tmp_path / "checkpoint-100").iterdir()) == ["block-1.safetensors"]
    cached.get(150, 50, batches[50])
    torch.testing.assert_close(cached.get(100, 51, batches[51]), expected[51])
    assert loads == [(100, 1), (150, 1)]
    assert models == [100, 150]  # each block computed once, each checkpoint loaded for its block
    fresh = TeacherOutputs(teacher, task, 4, cpu)
    models.clear()
    for step in (50, 51, 50):
        fresh.get(100, step, batches[step])
    fresh.get(150, 50, batches[50])
    assert models == [100, 150]


def test_a_cache_block_of_another_checkpoint_or_seed_or_without_metadata_is_computed_again(tmp_path, teacher,
                                                                                             monkeypatch):
    """A block copied into a checkpoint's cache folder from another checkpoint's folder, or from the cache
    of another data seed or of labels, or one written before blocks carried metadata, is not used: the
    outputs are those computed afresh, and the block is overwritten with them; a block of its own is read."""
    import shutil

    from progdistill.io import load_tensors_and_metadata

    cpu = torch.device("cpu")
    task, other_seed = (ParityTask(d=12, k=2, eval_size=64, data_seed=seed) for seed in (7, 8))

    def outputs(data, checkpoint, cache, labels_only=False):
        source = TeacherOutputs(teacher, data, 4, cpu, labels_only=labels_only, cache=cache, block=10)
        return [source.get(checkpoint, step, data.train_batch(step, 4)) for step in range(10)]

    def same(a, b):
        return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))

    expected = outputs(task, 100, None)
    assert not same(outputs(task, 150, None), expected) and not same(outputs(other_seed, 100, None), expected)
    outputs(task, 150, tmp_path / "a")
    outputs(other_seed, 100, tmp_path / "b")
    outputs(task, 100, tmp_path / "c", labels_only=True)
    block = tmp_path / "a" / "checkpoint-100" / "block-0.safetensors"
    block.parent.mkdir()

    def rewritten():
        saved, metadata = load_tensors_and_metadata(block)
        return torch.equal(saved["outputs"], torch.cat(expected)) and metadata["checkpoint"] == "100" and \
            metadata["data_seed"] == "7" and metadata["outputs"] == "logits"

    for foreign in (tmp_path / "a" / "checkpoint-150" / "block-0.safetensors",  # another checkpoint
                    tmp_path / "b" / "checkpoint-100" / "block-0.safetensors",  # another data seed
                    tmp_path / "c" / "checkpoint-100" / "block-0.safetensors"):  # labels, not logits
        shutil.copyfile(foreign, block)
        assert not rewritten()
        assert same(outputs(task, 100, tmp_path / "a"), expected), foreign
        assert rewritten(), foreign
    saved, _ = load_tensors_and_metadata(block)
    save_tensors(block, {"outputs": saved["outputs"] + 1, "offsets": saved["offsets"]})  # no metadata
    assert same(outputs(task, 100, tmp_path / "a"), expected) and rewritten()

    def no_teacher(*args):
        raise AssertionError("the teacher ran although its outputs were cached")

    monkeypatch.setattr(TeacherOutputs, "_compute_many", no_teacher)
    assert same(outputs(task, 100, tmp_path / "a"), expected)  # its own block is read


def test_teacher_outputs_block_sizes(tmp_path, teacher):
    task = ParityTask(d=12, k=2, eval_size=64, data_seed=7)
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="^block must be >= 1, got 0$"):
        TeacherOutputs(teacher, task, 1, cpu, cache=tmp_path, block=0)
    single = TeacherOutputs(teacher, task, 1, cpu, cache=tmp_path, block=1)
    outputs = single.get_range(100, 3, 6, task.train_examples(3, 6).inputs)
    plain = TeacherOutputs(teacher, task, 1, cpu).get_range(100, 3, 6, task.train_examples(3, 6).inputs)
    torch.testing.assert_close(outputs, plain)
    blocks = sorted(p.name for p in (tmp_path / "checkpoint-100").iterdir())
    assert blocks == [f"block-{i}.safetensors" for i in (3, 4, 5)]


@pytest.mark.parametrize("tau", [0.0, 1.5])
def test_cached_blocks_stack_batches_into_forwards_of_eval_rows_with_the_same_outputs(tmp_path, teacher, tau,
                                                                                      monkeypatch):
    """A task with `eval_rows` (rows computed independently) gets a block's batches in forwards of up to
    eval_rows rows: the same outputs as one forward per batch, in fewer forwards."""
    task = ParityTask(d=12, k=2, eval_size=64, data_seed=7)
    cpu = torch.device("cpu")
    plain = TeacherOutputs(teacher, task, 8, cpu, labels_only=tau == 0)
    expected = [plain.get(150, step, task.train_batch(step, 8)) for step in range(40)]
    model = teacher.load(150, cpu)
    rows_seen = []
    monkeypatch.setattr(Trajectory, "load", lambda self, step, device="cpu": _Recording(model, rows_seen))
    task.eval_rows = 32  # 4 batches of 8 per forward
    cached = TeacherOutputs(teacher, task, 8, cpu, labels_only=tau == 0, cache=tmp_path, block=20)
    got = [cached.get(150, step, task.train_batch(step, 8)) for step in range(40)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert rows_seen == [32] * 10  # two blocks of 20 batches: 5 forwards of 32 rows each


class _Recording(torch.nn.Module):
    def __init__(self, model, seen):
        super().__init__()
        self.model, self.seen = model, seen

    def forward(self, x):
        self.seen.append(len(x))
        return self.model(x)


def test_teacher_checkpoints_stay_loaded_while_they_fit(teacher, monkeypatch):
    """Students trained together ask for several checkpoints in turn: each is loaded once while the
    loaded ones fit in KEEP_MODELS_BYTES, and the least recently used is dropped when they do not."""
    from progdistill import teacher_outputs

    loads = []
    original = Trajectory.load
    monkeypatch.setattr(Trajectory, "load", lambda self, step, device="cpu": loads.append(step) or original(self, step, device))
    task = ParityTask(d=12, k=2, eval_size=64, data_seed=7)
    outputs = TeacherOutputs(teacher, task, 4, torch.device("cpu"))
    for step in range(6):
        for checkpoint in (50, 100, 150):
            outputs.get(checkpoint, step, task.train_batch(step, 4))
    assert loads == [50, 100, 150]
    size = sum(p.numel() * 4 for p in teacher.load(50).parameters())
    monkeypatch.setattr(teacher_outputs, "KEEP_MODELS_BYTES", 2 * size)  # room for two
    loads.clear()
    outputs = TeacherOutputs(teacher, task, 4, torch.device("cpu"))
    for checkpoint in (50, 100, 50, 150, 100, 50):
        outputs.get(checkpoint, 0, task.train_batch(0, 4))
    assert loads == [50, 100, 150, 100, 50]  # 150 drops 100 (least recent), 100 drops 50, 50 drops 150


def test_selected_keeps_the_positions_with_a_loss():
    from progdistill.tasks.base import IGNORE, selected

    logits = torch.randn(2, 3, 5)
    every = torch.tensor([[1, 2, 3], [4, 0, 1]])
    kept, targets = selected(logits, every)
    assert torch.equal(kept, logits.reshape(6, 5)) and torch.equal(targets, every.reshape(6))
    some = torch.tensor([[1, IGNORE, 3], [IGNORE, 0, 1]])
    kept, targets = selected(logits, some)
    assert torch.equal(kept, logits[torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.bool)])
    assert targets.tolist() == [1, 3, 0, 1]
