import math

import pytest
import torch

from progdistill.probes.monomials import (_PROBE, all_signs, monomial_correlations, monomial_peak, monomial_probe,
                                          monomial_series, off_support_sets, tidy_rows, transition_window)
from progdistill.tasks import ParityTask
from progdistill.tasks.base import seeded_generator


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


class Three(torch.nn.Module):
    """Three classes: logits (0, w . x, x0 x1): the probability of each class has its own correlations."""

    def __init__(self, d):
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(-1.0, 1.0, d))

    def forward(self, x):
        return torch.stack([torch.zeros(len(x)), x @ self.w, 2.0 * x[:, 0] * x[:, 1]], -1)


def test_monomial_probe_by_hand_on_a_three_class_model():
    d = 6
    task = ParityTask(d=d, k=2, support="first", eval_size=8)  # support (0, 1)
    model, x = Three(d), torch.tensor([[1.0 - 2.0 * ((i >> j) & 1) for j in range(d)] for i in range(2**d)])
    for target in (0, 2):
        p = torch.softmax(model(x).double(), -1)[:, target].detach()
        probe = monomial_probe(model, task, samples=2**d, off_support=3, target_class=target, exact_max_d=d)
        assert probe["exact"] and probe["samples"] == 2**d
        for j, entry in probe["degrees"].items():
            assert len(entry["off"]) == len(entry["off_sets"]) == 3 and len(entry["in"]) == math.comb(2, int(j))
            for kind in ("in", "off"):
                for s, corr in zip(entry[f"{kind}_sets"], entry[kind]):
                    chi = x[:, list(s)].prod(-1).double()
                    assert corr == pytest.approx(float((chi * p).mean().abs()), abs=1e-6)
            assert entry["in_mean"] == pytest.approx(sum(entry["in"]) / len(entry["in"]), rel=1e-12)
            assert entry["off_mean"] == pytest.approx(sum(entry["off"]) / 3, rel=1e-12)


def test_monomial_probe_exact_or_sampled_at_the_boundaries():
    task, model = ParityTask(d=8, k=2, eval_size=8), Linear2(8)
    # d == exact_max_d and 2^d == samples: still exact
    assert monomial_probe(model, task, samples=256, exact_max_d=8, degrees=[1])["exact"]
    assert not monomial_probe(model, task, samples=256, exact_max_d=7, degrees=[1])["exact"]
    sampled = monomial_probe(model, task, samples=255, exact_max_d=8, degrees=[1])
    assert not sampled["exact"] and sampled["samples"] == 255


def test_sampled_monomial_probe_is_seeded_and_leaves_the_global_generator_alone():
    task, model = ParityTask(d=10, k=2, eval_size=8), Linear2(10)
    torch.manual_seed(1)
    first = monomial_probe(model, task, samples=500, exact_max_d=0, seed=3, degrees=[1, 2])
    state = torch.get_rng_state()
    torch.manual_seed(2)
    assert monomial_probe(model, task, samples=500, exact_max_d=0, seed=3, degrees=[1, 2]) == first
    torch.set_rng_state(state)
    assert monomial_probe(model, task, samples=500, exact_max_d=0, seed=4, degrees=[1, 2]) != first


def test_monomial_probe_defaults():
    """samples=100_000, off_support=100, seed=0, exact_max_d=16: d = 17 is sampled (as is 2^17 samples),
    and degree 2 has 105 > 100 off-support pairs."""
    task, model = ParityTask(d=17, k=2, eval_size=8), Linear2(17)
    default = monomial_probe(model, task, degrees=[2])
    assert default == monomial_probe(model, task, samples=100_000, off_support=100, seed=0, exact_max_d=16,
                                     target_class=1, degrees=[2])
    assert not default["exact"] and default["samples"] == 100_000 and len(default["degrees"]["2"]["off_sets"]) == 100
    assert not monomial_probe(model, task, samples=2**17, degrees=[1])["exact"]


def test_no_off_support_sets_give_an_off_mean_of_nan():
    task = ParityTask(d=4, k=4, eval_size=4)  # every coordinate in the support
    probe = monomial_probe(Linear2(4), task, samples=16)
    for entry in probe["degrees"].values():
        assert entry["off_sets"] == [] and entry["off"] == [] and math.isnan(entry["off_mean"])


def test_off_support_sets_are_seeded_distinct_and_counted():
    sets = off_support_sets(12, [0, 1], 2, 5, seed=3)  # 45 pairs outside the support
    torch.manual_seed(0)
    assert len(sets) == len(set(sets)) == 5 and sets == sorted(sets)
    assert all(len(s) == 2 and s[0] < s[1] and not {0, 1} & set(s) and max(s) < 12 for s in sets)
    torch.manual_seed(1)
    assert off_support_sets(12, [0, 1], 2, 5, seed=3) == sets
    assert off_support_sets(12, [0, 1], 2, 5, seed=4) != sets
    assert off_support_sets(5, [0], 2, 6, seed=3) == [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]


def test_off_support_sets_are_their_documented_draws():
    """Each draw: the first `degree` of a randperm of the outside coordinates, generator keys (seed, _PROBE, degree)."""
    for d, support, degree, count, seed in ((12, [0, 1], 2, 5, 3), (10, [2, 5], 3, 4, 0), (9, [1], 1, 3, 7)):
        outside = [i for i in range(d) if i not in support]
        gen = seeded_generator(torch.device("cpu"), seed, _PROBE, degree)
        want: set = set()
        while len(want) < count:
            want.add(tuple(sorted(outside[int(i)] for i in torch.randperm(len(outside), generator=gen)[:degree])))
        assert off_support_sets(d, support, degree, count, seed) == sorted(want)


class Recording(torch.nn.Module):
    """A linear model that keeps the points it is asked about."""

    def __init__(self, d):
        super().__init__()
        self.w, self.seen = torch.nn.Parameter(torch.linspace(-1.0, 1.0, d)), []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.stack([torch.zeros(len(x)), x @ self.w], -1)


def test_sampled_monomial_points_are_their_documented_draws():
    task, model = ParityTask(d=10, k=2, eval_size=8), Recording(10)
    monomial_probe(model, task, samples=300, exact_max_d=0, seed=4, degrees=[1])
    bits = torch.randint(0, 2, (300, 10), generator=seeded_generator(torch.device("cpu"), 4, _PROBE))
    assert torch.equal(torch.cat(model.seen), bits.float() * 2 - 1)


def test_monomial_tensors_are_made_on_the_inputs_device():
    """Under a meta default device, tensors made without `device=` are meta: CPU inputs and a CPU model
    must still give the numbers computed outside it."""
    task, model = ParityTask(d=8, k=2, eval_size=8), Linear2(8)
    x, p = all_signs(4), torch.linspace(0.0, 1.0, 16)
    outside = (all_signs(4), monomial_correlations(x, p, [(0, 3), (1, 2)]),
               monomial_probe(model, task, samples=200, exact_max_d=0, seed=2, degrees=[1, 2]),
               monomial_probe(model, task, samples=256, degrees=[1]))
    with torch.device("meta"):
        signs = all_signs(4, "cpu")
        inside = (signs, monomial_correlations(x, p, [(0, 3), (1, 2)]),
                  monomial_probe(model, task, samples=200, exact_max_d=0, seed=2, degrees=[1, 2]),
                  monomial_probe(model, task, samples=256, degrees=[1]))
    assert signs.device.type == "cpu" and torch.equal(signs, outside[0])
    assert inside[1:] == outside[1:]


def test_monomial_correlations_accumulate_chunks_in_float64():
    """16384 points: two chunks of 8192. p has mean 0; chi * p sums to 2 in the first chunk and to 2^-29 in
    the second, which float32 would lose next to 2 (its spacing there is 2^-22)."""
    n = 16384
    x = torch.ones(n, 1)
    x[1, 0] = x[8193, 0] = -1.0
    p = torch.zeros(n)
    p[0], p[1], p[8192], p[8193] = 1.0, -1.0, 2.0**-30, -(2.0**-30)
    assert float(p.mean()) == 0.0
    assert monomial_correlations(x, p, [(0,)]) == [(2 + 2**-29) / n]
    assert monomial_correlations(x, p, []) == []


def probe_result(in_means: dict[str, float], off_means: dict[str, float]) -> dict:
    return {"degrees": {j: {"in_mean": in_means[j], "off_mean": off_means[j]} for j in in_means}}


def test_monomial_series_and_peak_by_hand():
    ins = [0.125, 0.5, 0.25, 0.75]
    offs = [0.0625, 0.125, 0.0, 0.25]
    rows = [{"step": 10 * i, "accuracy": 0.5 + 0.125 * i, "result": probe_result({"2": ins[i], "10": 1.0},
                                                                                {"2": offs[i], "10": 0.5})}
            for i in range(4)]
    del rows[2]["accuracy"]
    series = monomial_series(rows)
    assert series == {"steps": [0, 10, 20, 30], "accuracy": [0.5, 0.625, None, 0.875],
                      "in": {"2": ins, "10": [1.0] * 4}, "off": {"2": offs, "10": [0.5] * 4}}
    assert list(series["in"]) == list(series["off"]) == ["2", "10"]  # by degree, not as text
    peak = monomial_peak(rows, "2")
    assert peak == {"degree": 2, "step": 30, "accuracy": 0.875, "in_mean": 0.75, "off_mean": 0.25, "ratio": 3.0,
                    "window": None}
    assert monomial_peak(rows, "2", (0, 10))["step"] == 10 and monomial_peak(rows, "2", (10, 25))["ratio"] == 4.0
    assert monomial_peak(rows, "2", (20, 20)) == {"degree": 2, "step": 20, "accuracy": None, "in_mean": 0.25,
                                                  "off_mean": 0.0, "ratio": None, "window": (20, 20)}
    assert monomial_peak(rows, "2", (40, 50))["step"] == 30  # nothing inside: the whole run
    assert monomial_peak(rows, "10")["step"] == 0  # a tie: the first
    one = [{"step": 5, "result": probe_result({"1": 0.5}, {"1": 0.25})}]
    assert monomial_peak(one) == {"degree": 1, "step": 5, "accuracy": None, "in_mean": 0.5, "off_mean": 0.25,
                                  "ratio": 2.0, "window": None}


def test_tidy_rows_and_transition_window_by_hand():
    probe = {"degrees": {"1": {"in_sets": [(0,), (1,)], "in": [0.5, 0.25], "off_sets": [(2,)], "off": [0.125]},
                         "2": {"in_sets": [(0, 1)], "in": [0.75], "off_sets": [], "off": []}}}
    assert tidy_rows(7, probe) == [
        {"step": 7, "degree": 1, "kind": "in", "set": "0", "correlation": 0.5},
        {"step": 7, "degree": 1, "kind": "in", "set": "1", "correlation": 0.25},
        {"step": 7, "degree": 1, "kind": "off", "set": "2", "correlation": 0.125},
        {"step": 7, "degree": 2, "kind": "in", "set": "0 1", "correlation": 0.75},
    ]
    assert transition_window(None) is None and transition_window({}) is None
    assert transition_window({"drop_start": 100, "drop_end": 160}) == (40, 160)


def test_parity_evaluates_in_forwards_of_eval_rows_with_the_numbers_of_one_forward():
    from progdistill.models.mlp import MLP
    from progdistill.tasks import ParityTask

    task = ParityTask(d=20, k=3, eval_size=1200)
    model = MLP(20, 2, 64)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    chunked = task.evaluate(model)
    assert seen == [256, 256, 256, 256, 176]  # eval_rows = 256
    task.eval_rows = None
    assert task.evaluate(model) == chunked and seen[5:] == [1200]
