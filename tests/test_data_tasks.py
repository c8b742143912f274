"""TensorTask and DatasetTask: a user's own data, in seeded epochs, as a Task."""

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

import progdistill as pd
from progdistill.trainer import TrainConfig, train


def data(n=100, d=5, seed=0):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()


def test_batches_are_a_pure_function_of_seed_data_seed_step_and_batch_size():
    x, y = data()
    a = pd.TensorTask(x, y, eval_fraction=0.2, data_seed=1)
    b = pd.TensorTask(x, y, eval_fraction=0.2, data_seed=1)
    in_order = [a.train_batch(step, 16) for step in range(12)]
    for step in (11, 3, 7, 0, 5, 3):  # any order, any instance
        batch = b.train_batch(step, 16)
        assert torch.equal(batch.inputs, in_order[step].inputs) and torch.equal(batch.targets, in_order[step].targets)
    # 80 training examples, 5 batches of 16 per epoch: every epoch is a permutation of them, each its own
    rows = lambda batches: torch.cat([bt.inputs for bt in batches])  # noqa: E731
    for epoch in (0, 1):
        seen = rows(in_order[5 * epoch:5 * epoch + 5])
        assert len({tuple(r.tolist()) for r in seen}) == 80
    assert not torch.equal(rows(in_order[:5]), rows(in_order[5:10]))
    other = pd.TensorTask(x, y, eval_fraction=0.2, data_seed=2)
    assert not torch.equal(other.train_batch(0, 16).inputs, in_order[0].inputs)
    # the held-out split depends on `seed` only: teacher and students (other data seeds) share it
    assert torch.equal(other.eval_inputs, a.eval_inputs) and len(a.eval_inputs) == 20
    assert not torch.equal(pd.TensorTask(x, y, eval_fraction=0.2, seed=1).eval_inputs, a.eval_inputs)
    held = {tuple(r.tolist()) for r in a.eval_inputs}
    assert not held & {tuple(r.tolist()) for r in a.inputs}


def test_model_io_is_inferred_from_the_tensors_or_given():
    x, y = data()
    assert pd.TensorTask(x, y, eval_fraction=0.2).model_io() == {"input_dim": 5, "num_classes": 4}
    assert pd.TensorTask(x, y, eval_fraction=0.2, model_io={"num_classes": 6}).model_io() == {"input_dim": 5,
                                                                                            "num_classes": 6}
    tokens = torch.randint(0, 7, (40, 9), generator=torch.Generator().manual_seed(0))
    targets = torch.full_like(tokens, pd.IGNORE)
    targets[:, 4] = tokens[:, 4] % 3
    task = pd.TensorTask(tokens, targets, eval_fraction=0.25, model_io={"pad_id": 0})
    assert task.model_io() == {"seq_len": 9, "vocab_size": 7, "num_classes": 3, "pad_id": 0}
    seq = torch.randn(30, 4, 3)
    assert pd.TensorTask(seq, torch.zeros(30, dtype=torch.long), eval_fraction=0.1).model_io() == {
        "seq_len": 4, "input_dim": 3, "num_classes": 1}


def test_a_dataset_task_gives_the_tensor_tasks_batches():
    x, y = data()
    tensors = pd.TensorTask(x, y, eval_fraction=0.2, data_seed=4)
    dataset = pd.DatasetTask(TensorDataset(x, y), eval_fraction=0.2, data_seed=4)
    for step in (0, 4, 5, 13):
        a, b = tensors.train_batch(step, 16), dataset.train_batch(step, 16)
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert torch.equal(torch.cat([bt.inputs for bt in dataset.eval_batches()]), tensors.eval_inputs)
    assert dataset.model_io() == tensors.model_io()

    class Dicts(Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return {"features": x[i], "label": int(y[i])}

    as_dicts = pd.DatasetTask(Dicts(), eval_fraction=0.2, data_seed=4, keys=("features", "label"))
    batch = as_dicts.train_batch(5, 16)
    assert torch.equal(batch.inputs, tensors.train_batch(5, 16).inputs) and batch.targets.dtype == torch.int64
    with pytest.raises(ValueError, match="items have no key 'inputs'"):
        pd.DatasetTask(Dicts(), eval_fraction=0.2).train_batch(0, 4)


def test_bad_data_is_refused_with_a_clear_error():
    x, y = data()
    with pytest.raises(ValueError, match="targets must be integer class ids"):
        pd.TensorTask(x, y.float(), eval_fraction=0.2)
    with pytest.raises(ValueError, match="inputs hold 100 examples but targets 99"):
        pd.TensorTask(x, y[:99], eval_fraction=0.2)
    with pytest.raises(ValueError, match="give the held-out set .* or eval_fraction, not both or neither"):
        pd.TensorTask(x, y)
    with pytest.raises(ValueError, match="target -3 is neither a class id >= 0 nor IGNORE"):
        pd.TensorTask(x, y - 3, eval_fraction=0.2)
    with pytest.raises(ValueError, match="batch_size 81 is larger than the 80 training examples"):
        pd.TensorTask(x, y, eval_fraction=0.2).train_batch(0, 81)
    with pytest.raises(ValueError, match="give eval_dataset or eval_fraction"):
        pd.DatasetTask(TensorDataset(x, y))


def test_a_tensor_task_trains_and_resumes_bit_identically(tmp_path):
    x, y = data(n=240)
    task = pd.TensorTask(x, y, x[:40] + 0.01, y[:40], data_seed=1)
    arch = pd.resolve_architecture({"type": "mlp", "width": 16}, task.model_io())
    cfg = TrainConfig(steps=40, batch_size=32, optim={"lr": 0.2}, eval_every=10)
    torch.manual_seed(0)
    full = train(pd.build_model(arch), task, cfg, tmp_path / "full", {"model": arch}, progress=False)
    torch.manual_seed(0)
    part = pd.build_model(arch)
    train(part, pd.TensorTask(x, y, x[:40] + 0.01, y[:40], data_seed=1), cfg, tmp_path / "part", {"model": arch},
          progress=False, stop_at=17)
    resumed = train(part, pd.TensorTask(x, y, x[:40] + 0.01, y[:40], data_seed=1), cfg, tmp_path / "part",
                    {"model": arch}, progress=False)
    assert resumed["curve"] == full["curve"] and full["curve"][-1]["accuracy"] > 0.6


class PoisonLM(torch.nn.Module):
    """Token logits [B, T, V] that are NaN at padding (id 0): any loss that reads a position without a
    target turns NaN."""

    def __init__(self, vocab_size: int, hidden: int = 16):
        super().__init__()
        self.emb, self.out = torch.nn.Embedding(vocab_size, hidden), torch.nn.Linear(hidden, vocab_size)

    def forward(self, x):
        return self.out(torch.tanh(self.emb(x))).masked_fill((x == 0).unsqueeze(-1), float("nan"))


@pytest.mark.parametrize("tau, kind, cache", [(0.0, "forward", False), (1.0, "forward", True), (2.0, "reverse", False)])
def test_token_kd_reads_only_positions_with_a_target(tmp_path, tau, kind, cache):
    """Teacher outputs (computed or cached), the student's loss and evaluation all keep to the positions
    whose target is not IGNORE."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 8, (200, 10), generator=g)
    lengths = torch.randint(4, 11, (200, 1), generator=g)
    tokens[torch.arange(10) >= lengths] = 0  # padding
    targets = torch.where((tokens > 0) & (torch.rand(200, 10, generator=g) < 0.5), (2 * tokens) % 7 + 1, pd.IGNORE)
    task = pd.TensorTask(tokens, targets, eval_fraction=0.2)
    arch = pd.resolve_architecture({"type": "test_data_tasks:PoisonLM"}, task.model_io())
    assert arch["vocab_size"] == 8
    torch.manual_seed(0)
    train(pd.build_model(arch), task, TrainConfig(steps=40, batch_size=16, optim={"name": "adam", "lr": 0.02},
                                                  eval_every=20, checkpoint_every=20), tmp_path / "teacher",
          {"model": arch}, progress=False)
    trajectory = pd.Trajectory(tmp_path / "teacher")
    cfg = TrainConfig(steps=30, batch_size=16, optim={"name": "adam", "lr": 0.02}, kd={"tau": tau, "kind": kind,
                                                                                        "alpha": 0.2}, eval_every=10)
    student = pd.build_model(arch)
    record = train(student, pd.TensorTask(tokens, targets, eval_fraction=0.2, data_seed=1), cfg, tmp_path / "student",
                   {"model": arch}, pd.make_schedule({"name": "progressive"}, trajectory.steps, None), trajectory,
                   progress=False, teacher_cache=tmp_path / "cache" if cache else None)
    losses = [p["loss"] for p in record["curve"]]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert all(torch.isfinite(p).all() for p in student.parameters())
