import pytest
import torch

from progdistill.probes.monomials import all_signs, monomial_probe
from progdistill.tasks import ParityTask


def brute_label(x, blocks, num_labels):
    node = 1
    while node < num_labels:
        prod = 1.0
        for i in blocks[node - 1]:
            prod *= float(x[i])
        node = 2 * node + (0 if prod > 0 else 1)
    return node - num_labels


@pytest.mark.parametrize("num_labels, support", [(2, "first"), (2, "random"), (4, "random"), (8, "first")])
def test_labels_match_brute_force(num_labels, support):
    task = ParityTask(d=24, k=3, support=support, num_labels=num_labels, eval_size=256, seed=3)
    x = task.train_batch(0, 64).inputs
    blocks = task.blocks.tolist()
    assert len({i for b in blocks for i in b}) == 3 * (num_labels - 1)  # disjoint blocks
    expected = [brute_label(row, blocks, num_labels) for row in x]
    assert task.label(x).tolist() == expected


def test_stream_is_seeded_and_heldout_is_disjoint():
    a = ParityTask(d=16, k=3, eval_size=512, seed=1, data_seed=7)
    b = ParityTask(d=16, k=3, eval_size=512, seed=1, data_seed=7)
    c = ParityTask(d=16, k=3, eval_size=512, seed=1, data_seed=8)
    assert torch.equal(a.train_batch(123, 32).inputs, b.train_batch(123, 32).inputs)
    assert not torch.equal(a.train_batch(123, 32).inputs, c.train_batch(123, 32).inputs)
    assert torch.equal(a.eval_x, c.eval_x)  # held-out set belongs to the problem, not the data seed
    held = {tuple(r.tolist()) for r in a.eval_x}
    train = torch.cat([a.train_batch(s, 256).inputs for s in range(300)])  # > the whole cube's size
    assert not any(tuple(r.tolist()) in held for r in train)


def test_finite_sample_mode_visits_each_example_once_per_epoch():
    task = ParityTask(d=20, k=3, train_size=96, eval_size=64, data_seed=2)
    epoch = torch.cat([task.train_batch(s, 32).inputs for s in range(3)])
    assert sorted(map(tuple, epoch.tolist())) == sorted(map(tuple, task.train_x.tolist()))
    next_epoch = torch.cat([task.train_batch(s, 32).inputs for s in range(3, 6)])
    assert not torch.equal(epoch, next_epoch)  # reshuffled


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="k="):
        ParityTask(d=4, k=5)
    with pytest.raises(ValueError, match="power of 2"):
        ParityTask(d=20, k=2, num_labels=3)


class Linear2(torch.nn.Module):
    """p1 = sigmoid(w . x + v * x0 x1): known low-degree structure."""

    def __init__(self, d):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(d, generator=g))
        self.v = torch.nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        z = x @ self.w * 0.3 + self.v * x[:, 0] * x[:, 1]
        return torch.stack([torch.zeros_like(z), z], -1)


def test_monomial_correlations_match_brute_force():
    d = 8
    task = ParityTask(d=d, k=3, support="random", eval_size=32, seed=5)
    model = Linear2(d)
    probe = monomial_probe(model, task, samples=1 << 12, off_support=4, seed=0)
    assert probe["exact"]
    x = all_signs(d)
    p1 = torch.softmax(model(x), -1)[:, 1].double().detach()
    for j, entry in probe["degrees"].items():
        for kind in ("in", "off"):
            for sets, corr in zip(entry[f"{kind}_sets"], entry[kind]):
                chi = torch.ones(len(x), dtype=torch.float64)
                for i in sets:
                    chi = chi * x[:, i].double()
                assert corr == pytest.approx(float((chi * p1).mean().abs()), abs=1e-6)
        for s in entry["off_sets"]:
            assert not set(s) & set(task.support)
    assert len(probe["degrees"]["1"]["in"]) == 3 and len(probe["degrees"]["2"]["in"]) == 3


def test_sampled_monomial_estimate_is_close_to_exact():
    d = 14
    task = ParityTask(d=d, k=2, eval_size=64)
    model = Linear2(d)
    exact = monomial_probe(model, task, samples=1 << 14, seed=1)
    sampled = monomial_probe(model, task, samples=100_000, exact_max_d=0, seed=1)
    assert exact["exact"] and not sampled["exact"]
    assert exact["degrees"]["2"]["in"][0] > 0.05  # the x0 x1 term is found
    for j in ("1", "2"):
        for kind in ("in", "off"):
            assert sampled["degrees"][j][f"{kind}_sets"] == exact["degrees"][j][f"{kind}_sets"]
            for a, b in zip(sampled["degrees"][j][kind], exact["degrees"][j][kind]):
                assert a == pytest.approx(b, abs=0.004)
