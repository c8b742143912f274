import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from progdistill.models import BertMLM
from progdistill.probes import nonterminal
from progdistill.probes.ngram import (_expand, _predict, base_inputs, model_device, ngram_inputs, ngram_probe, summarize,
                                     target_positions, tv_distance)
from progdistill.probes.nonterminal import nonterminal_probe, position_baseline, train_probe

BOS, PAD, MASK, V = 3, 5, 6, 8


def sentences(n: int, t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random [BOS] + terminals + PAD rows of lengths 2..t."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, t + 1, (n,), generator=gen)
    lengths[0] = t
    tokens = torch.randint(0, 3, (n, t), generator=gen)
    tokens[:, 0] = BOS
    tokens[torch.arange(t) >= lengths[:, None]] = PAD
    return tokens, lengths


class Neighbours(nn.Module):
    """Logits at i depend only on the tokens at i-1 and i+1."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.left = nn.Parameter(torch.randn(V, V, generator=gen))
        self.right = nn.Parameter(torch.randn(V, V, generator=gen))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.left[tokens.roll(1, 1)] + self.right[tokens.roll(-1, 1)]


class Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.randn(V))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*tokens.shape, V)


def test_target_positions_are_evenly_spaced_terminals():
    pos = target_positions(torch.tensor([11, 2, 6, 3]), 4)
    assert pos.tolist() == [[3, 5, 6, 8], [1, 1, 1, 1], [2, 3, 3, 4], [1, 1, 2, 2]]
    with pytest.raises(ValueError, match=r"^every sentence needs at least one terminal \(length >= 2 incl\. BOS\)$"):
        target_positions(torch.tensor([1]), 2)


def test_ngram_tensors_are_made_on_their_inputs_device():
    """Under a meta default device, tensors made without `device=` are meta: CPU inputs must still give
    CPU results equal to those made outside it, and a model on meta reports meta."""
    tokens, lengths = sentences(6, 9)
    model = Neighbours()
    pos = target_positions(lengths, 3)
    outside = (pos, *_expand(tokens, lengths, pos, PAD), _predict(model, tokens, pos[:, 0], None, 4),
               summarize(torch.linspace(0.0, 1.0, 7)))
    with torch.device("meta"):
        pos_meta = target_positions(lengths, 3)
        inside = (pos_meta, *_expand(tokens, lengths, pos_meta, PAD), _predict(model, tokens, pos[:, 0], None, 4),
                  summarize(torch.linspace(0.0, 1.0, 7, device="cpu")))
    for a, b in zip(outside[:-1], inside[:-1]):
        assert b.device.type == "cpu" and torch.equal(a, b)
    assert inside[-1] == outside[-1]
    assert model_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert model_device(nn.Identity()) == torch.device("cpu")


def test_window_inputs_mask_exactly_the_window():
    tokens = torch.tensor([[BOS, 0, 1, 2, 0, 1, 2, 0, 1, 2],
                           [BOS, 2, 1, 0, 2, 1, PAD, PAD, PAD, PAD]])
    lengths, pos = torch.tensor([10, 6]), torch.tensor([[4, 1], [5, 3]])
    masked = lambda x: [(row == MASK).nonzero()[:, 0].tolist() for row in x]  # noqa: E731
    assert masked(base_inputs(tokens, pos, MASK)) == [[4], [1], [5], [3]]
    robust, close = ngram_inputs(tokens, lengths, pos, 1, MASK, PAD)
    assert masked(robust) == [[3, 4, 5], [1, 2], [4, 5], [2, 3, 4]]  # clipped at BOS and the end
    assert masked(close) == [[1, 2, 4, 6, 7, 8, 9], [1, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 5], [1, 3, 5]]
    robust, close = ngram_inputs(tokens, lengths, pos, 2, MASK, PAD)
    assert masked(robust) == [[2, 3, 4, 5, 6], [1, 2, 3], [3, 4, 5], [1, 2, 3, 4, 5]]
    assert masked(close) == [[1, 4, 7, 8, 9], [1, 4, 5, 6, 7, 8, 9], [1, 2, 5], [3]]
    for x in (robust, close):  # BOS and PAD untouched, unmasked tokens unchanged
        rows = tokens.repeat_interleave(2, 0)
        assert torch.equal(x[x != MASK], rows[x != MASK])
        assert (x[:, 0] == BOS).all() and (x[2:, 6:] == PAD).all()


def test_neighbour_model_needs_only_the_trigram():
    tokens, lengths = sentences(40, 16)
    out = ngram_probe(Neighbours(), tokens, lengths, MASK, PAD, n_max=3, positions=4, batch_size=32)
    assert list(out["windows"]) == ["3", "5", "7"] and out["pairs"] == 160
    for size, entry in out["windows"].items():
        assert entry["tokens_each_side"] == (int(size) - 1) // 2
        assert entry["close"] == {"median": 0.0, "q25": 0.0, "q75": 0.0, "mean": 0.0}
        assert entry["robust"]["median"] > 0.05 and entry["robust"]["q25"] > 0


def test_input_independent_model_scores_zero():
    tokens, lengths = sentences(20, 12)
    out = ngram_probe(Constant(), tokens, lengths, MASK, PAD, vocab=slice(0, 3))
    for entry in out["windows"].values():
        assert entry["robust"]["q75"] == 0.0 and entry["close"]["q75"] == 0.0


def test_bert_probe_range_and_training_flag():
    torch.manual_seed(0)
    model = BertMLM(vocab_size=V, seq_len=16, layers=1, heads=2, head_dim=8, pad_id=PAD).train()
    tokens, lengths = sentences(30, 16, seed=1)
    out = ngram_probe(model, tokens, lengths, MASK, PAD, n_max=3, positions=3, batch_size=16)
    assert model.training and out["pairs"] == 90 and list(out["windows"]) == ["3", "5", "7"]
    for entry in out["windows"].values():
        for kind in ("robust", "close"):
            s = entry[kind]
            assert 0.0 <= s["q25"] <= s["median"] <= s["q75"] <= 1.0 and 0.0 <= s["mean"] <= 1.0
    p, q = torch.tensor([[1.0, 0.0], [0.3, 0.7]]), torch.tensor([[0.0, 1.0], [0.3, 0.7]])
    assert tv_distance(p, q).tolist() == [1.0, 0.0]


def test_window_inputs_leave_the_token_after_the_sentence_and_inner_padding_alone():
    """Row 0: [BOS] + 3 terminals + a closing token (7, as text's final [SEP]) at position L = 4, which is
    no terminal. Row 1: a PAD inside the sentence (position 2), never masked."""
    tokens = torch.tensor([[BOS, 0, 1, 2, 7, PAD],
                           [BOS, 0, PAD, 1, 2, 0]])
    lengths, pos = torch.tensor([4, 6]), torch.tensor([[2], [3]])
    masked = lambda x: [(row == MASK).nonzero()[:, 0].tolist() for row in x]  # noqa: E731
    robust, close = ngram_inputs(tokens, lengths, pos, 1, MASK, PAD)
    assert masked(robust) == [[1, 2, 3], [3, 4]]
    assert masked(close) == [[2], [1, 3, 5]]
    robust, close = ngram_inputs(tokens, lengths, pos, 2, MASK, PAD)
    assert masked(robust) == [[1, 2, 3], [1, 3, 4, 5]]
    assert masked(close) == [[2], [3]]


def brute_force_probe(model, tokens, lengths, n_max, positions, vocab):
    """ngram_probe's summaries computed one (sentence, target) pair and one input row at a time."""
    results = {str(2 * n + 1): {"robust": [], "close": []} for n in range(1, n_max + 1)}

    def dist(row, at):
        with torch.no_grad():
            logits = model(torch.tensor([row]))[0, at]
        return torch.softmax(logits[vocab].double(), -1)

    for row, length in zip(tokens.tolist(), lengths.tolist()):
        terminals = [i for i in range(1, length) if row[i] != PAD]
        for k in range(1, positions + 1):
            at = 1 + math.floor(Fraction(k * (length - 2), positions + 1) + Fraction(1, 2))
            base = [MASK if i == at else t for i, t in enumerate(row)]
            p = dist(base, at)
            for n in range(1, n_max + 1):
                robust = [MASK if i in terminals and abs(i - at) <= n else t for i, t in enumerate(row)]
                close = [MASK if (i in terminals and abs(i - at) > n) or i == at else t for i, t in enumerate(row)]
                for kind, masked in (("robust", robust), ("close", close)):
                    results[str(2 * n + 1)][kind].append(float(0.5 * (p - dist(masked, at)).abs().sum()))
    summary = {}
    for size, kinds in results.items():
        summary[size] = {}
        for kind, values in kinds.items():
            q25, q50, q75 = np.percentile(values, [25, 50, 75])
            summary[size][kind] = {"median": q50, "q25": q25, "q75": q75, "mean": float(np.mean(values))}
    return summary


@pytest.mark.parametrize("vocab", [slice(0, 3), None])
def test_ngram_probe_matches_a_pair_by_pair_brute_force(vocab):
    tokens, lengths = sentences(9, 10, seed=2)
    model = Neighbours()
    out = ngram_probe(model, tokens, lengths, MASK, PAD, n_max=2, positions=3, batch_size=7, vocab=vocab)
    expected = brute_force_probe(model, tokens, lengths, 2, 3, slice(None) if vocab is None else vocab)
    assert out["pairs"] == 27 and list(out["windows"]) == ["3", "5"]
    for size, entry in out["windows"].items():
        for kind in ("robust", "close"):
            assert entry[kind] == pytest.approx(expected[size][kind], abs=1e-12)
        assert len({entry["robust"]["q25"], entry["robust"]["median"], entry["robust"]["q75"]}) == 3


class Lookup(nn.Module):
    """hidden_states returns a stored feature row chosen by the row id in column 0 of the tokens."""

    def __init__(self, features: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("features", features)

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.features[tokens[:, 0], :tokens.shape[1]]


NUM_CLASSES = [3, 4]


def probe_data(linear: bool, n: int = 160, t: int = 12, seed: int = 0):
    """Tokens (row ids), labels [n, t, 2] with -1 at BOS and padding, and a Lookup model whose features
    embed the labels (linear) or ignore them."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.stack([torch.randint(0, c, (n, t), generator=gen) for c in NUM_CLASSES], -1)
    lengths = torch.randint(4, t + 1, (n,), generator=gen)
    unlabelled = (torch.arange(t) == 0) | (torch.arange(t) >= lengths[:, None])
    labels[unlabelled] = -1
    onehot = torch.cat([torch.eye(c)[labels[..., i].clamp(min=0)] for i, c in enumerate(NUM_CLASSES)], -1)
    noise = torch.randn(n, t, 16, generator=gen)
    signal = 2.0 * torch.nn.functional.pad(onehot, (0, 16 - onehot.shape[-1]))
    features = noise * 0.3 + signal if linear else noise
    features[unlabelled] = 100.0 * torch.randn(int(unlabelled.sum()), 16, generator=gen)  # garbage padding
    tokens = torch.arange(n)[:, None].expand(n, t).clone()
    return tokens, labels, features, unlabelled


def run_probe(tokens, labels, features, split: int = 120, **kw):
    model = Lookup(features)
    return nonterminal_probe(model, tokens[:split], labels[:split], tokens[split:], labels[split:],
                             NUM_CLASSES, steps=150, lr=5e-2, batch_size=64, **kw)


def test_nonterminal_probe_reads_linear_labels():
    tokens, labels, features, _ = probe_data(linear=True)
    out = run_probe(tokens, labels, features, test_boundaries=torch.ones(40, 12, 2, dtype=torch.bool))
    for entry in out["levels"]:
        assert entry["accuracy"] > 0.95
        assert entry["boundary_accuracy"] == entry["accuracy"]
        assert entry["count"] == int((labels[120:, :, entry["level"] - 1] >= 0).sum())
        assert entry["majority_baseline"] < 0.5
    assert out["mean_accuracy"] > 0.95


def test_nonterminal_probe_at_chance_on_random_labels():
    tokens, labels, features, _ = probe_data(linear=False)
    out = run_probe(tokens, labels, features)
    for entry, classes in zip(out["levels"], NUM_CLASSES):
        assert abs(entry["accuracy"] - 1 / classes) < 0.12
        assert abs(entry["accuracy"] - entry["majority_baseline"]) < 0.12
        assert entry["boundary_accuracy"] is None


def test_nonterminal_probe_ignores_padding_and_is_seeded():
    tokens, labels, features, unlabelled = probe_data(linear=True, seed=3)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = run_probe(tokens, labels, features, seed=5)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is untouched
    assert first == run_probe(tokens, labels, features, seed=5)
    # Different garbage at unlabelled positions, and extra padded columns with garbage features.
    changed = features.clone()
    changed[unlabelled] = -7.0 + torch.randn(int(unlabelled.sum()), 16)
    changed = torch.cat([changed, torch.randn(len(tokens), 5, 16)], 1)
    wider_labels = torch.cat([labels, torch.full((len(tokens), 5, 2), -1)], 1)
    wider_tokens = torch.cat([tokens, tokens[:, :5]], 1)
    assert run_probe(wider_tokens, wider_labels, changed, seed=5) == first


def test_position_baseline_is_what_position_alone_predicts():
    gen = torch.Generator().manual_seed(0)
    n, t = 200, 10
    by_position = torch.stack([torch.arange(t) % 3, torch.randint(0, 4, (t,), generator=gen)], -1)
    labels = by_position.expand(n, t, 2).clone()
    labels[:, 0] = -1  # BOS
    labels[150:, :, 1] = torch.randint(0, 4, (50, t), generator=gen)  # level 2 of the test set: random
    labels[150:, 0] = -1
    exact, random = position_baseline(labels[:150], labels[150:], NUM_CLASSES)
    assert exact == 1.0 and abs(random - 0.25) < 0.06
    shorter, _ = position_baseline(labels[:150, :8], labels[150:], NUM_CLASSES)  # positions 8, 9 never seen
    assert shorter == 7 / 9
    unlabelled = labels[:150].clone()
    unlabelled[:, 3:5, 0] = -1  # positions 3 and 4 never labelled in training (as at span ends only)
    level_1, _ = position_baseline(unlabelled, labels[150:], NUM_CLASSES)
    assert level_1 == 7 / 9  # no guess there, not label 0 (which would be right at position 3)
    tokens, labels, features, _ = probe_data(linear=True)
    out = run_probe(tokens, labels, features)
    assert all(abs(e["position_baseline"] - 1 / c) < 0.12 for e, c in zip(out["levels"], NUM_CLASSES))
    assert out["mean_position_baseline"] == sum(e["position_baseline"] for e in out["levels"]) / 2


def test_nonterminal_levels_are_scored_on_their_own_labels():
    """Positions labelled at level 2 but not at level 1 (as with boundaries_only): level 1's counts,
    accuracy and majority baseline use level-1 labels only. Level 1 is class 2 at positions 1-2 and
    unlabelled at 3-5; level 2 is class 1 at positions 1-5. Counting unlabelled positions as class 0
    would make 0 the level-1 majority (3 positions against 2) and its baseline 0."""
    n, t = 80, 6
    labels = torch.full((n, t, 2), -1)
    labels[:, 1:3, 0] = 2
    labels[:, 1:6, 1] = 1
    labels[::4, 1, 0] = 1  # a quarter of the sentences disagree at position 1, level 1
    tokens = torch.arange(n)[:, None].expand(n, t).clone()
    onehot = torch.cat([torch.eye(c)[labels[..., i].clamp(min=0)] for i, c in enumerate(NUM_CLASSES)], -1)
    features = torch.nn.functional.pad(4.0 * onehot, (0, 16 - onehot.shape[-1]))
    out = run_probe(tokens, labels, features, split=60)
    level1, level2 = out["levels"]
    assert (level1["count"], level2["count"]) == (20 * 2, 20 * 5)
    test1 = labels[60:, :, 0][labels[60:, :, 0] >= 0]
    assert level1["majority_baseline"] == float((test1 == 2).float().mean()) == 35 / 40
    assert level2["majority_baseline"] == 1.0
    assert level1["position_baseline"] == 35 / 40  # position 1: class 2 (3 of 4 sentences), position 2: class 2
    assert level1["accuracy"] == 1.0 and level2["accuracy"] == 1.0


def test_probe_is_trained_on_the_features_device_and_forks_the_cpu_generator(monkeypatch):
    """The probe lives on the features' device (meta here: all of its steps run there, without numbers),
    and only the CPU generator is forked for its initialisation when the features are not on a GPU (the
    fork is recorded)."""
    import contextlib

    forked = []
    fork_rng = torch.random.fork_rng

    @contextlib.contextmanager
    def recording(devices=None, enabled=True):
        forked.append(devices)
        with fork_rng(devices=devices, enabled=enabled):
            yield

    monkeypatch.setattr(torch.random, "fork_rng", recording)
    keep = torch.ones(2, 5, dtype=torch.bool)  # 2 sentences of 5 labelled positions: one batch of both
    labels = torch.zeros(10, 2, dtype=torch.long)
    for device in ("cpu", "meta"):
        probe = train_probe(torch.ones(10, 4, device=device), labels.to(device), keep, [2, 3], 2, 0.01, 0, 8)
        assert probe.weight.device.type == probe.bias.device.type == device
    assert forked == [[], []]


def test_probe_loss_is_the_sum_of_per_level_mean_cross_entropies():
    """Zero logits: every labelled position costs log(classes). Level 1 (2 classes): labels 0 and 1 at
    two positions, mean log 2; level 2 (3 classes): one label, log 3; unlabelled (-1) positions are left
    out of the loss and the count. Total log 2 + log 3."""
    labels = torch.tensor([[0, -1], [1, 2], [-1, -1]])
    loss = nonterminal._loss(torch.zeros(3, 5), labels, [2, 3])
    assert float(loss) == pytest.approx(math.log(6), rel=1e-6)
    logits = torch.zeros(3, 5)
    logits[1, 4] = math.log(4.0)  # level 2 at position 1: p(class 2) = 4 / 6
    assert float(nonterminal._loss(logits, labels, [2, 3])) == pytest.approx(math.log(2) + math.log(6 / 4), rel=1e-6)


def test_probe_batches_are_whole_sentences_and_the_probe_comes_back_frozen():
    """Two sentences whose labelled positions (1, 2) carry feature 0 (sentence 0) or feature 1
    (sentence 1); one Adam step on a batch of one sentence moves the weights of one feature only."""
    keep = torch.tensor([[False, True, True], [False, True, True]])
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([[1], [1], [1], [1]])
    for seed in range(4):
        start = train_probe(features, labels, keep, [2], steps=0, lr=0.1, seed=seed, batch_size=1)
        probe = train_probe(features, labels, keep, [2], steps=1, lr=0.1, seed=seed, batch_size=1)
        moved = (probe.weight != start.weight).any(0)
        assert moved.sum() == 1
        assert not any(p.requires_grad for p in probe.parameters())
    both = train_probe(features, labels, keep, [2], steps=1, lr=0.1, seed=0, batch_size=2)
    assert (both.weight != start.weight).any(0).all()  # both sentences fit in a batch of 2


def test_accuracy_and_mean_of_nothing_are_none():
    assert nonterminal._accuracy(torch.tensor([True, False]), torch.tensor([False, False])) is None
    assert nonterminal._accuracy(torch.tensor([True, False, True]), torch.tensor([True, True, False])) == 0.5
    assert nonterminal._mean([None, None]) is None and nonterminal._mean([]) is None
    assert nonterminal._mean([0.5, None, 0.25]) == 0.375


def test_position_baseline_with_a_longer_training_set():
    t = 10
    labels = torch.stack([torch.arange(t) % 3, torch.arange(t) % 4], -1).expand(30, t, 2).clone()
    labels[:, 0] = -1
    train, test = labels[:20], labels[20:, :8]  # training sentences longer than the held-out ones
    assert position_baseline(train, test, NUM_CLASSES) == [1.0, 1.0]
    test = test.clone()
    test[:, 1, 0] = 0  # position 1 is class 1 in training: 1 of 7 labelled positions wrong
    assert position_baseline(train, test, NUM_CLASSES) == [6 / 7, 1.0]


def test_nonterminal_probe_checks_label_columns():
    tokens, labels, features, _ = probe_data(linear=True, n=20)
    message = r"^labels need one column per level of num_classes$"
    for train_labels, test_labels in ((labels[:10, :, :1], labels[10:]), (labels[:10], labels[10:, :, :1])):
        with pytest.raises(ValueError, match=message):
            nonterminal_probe(Lookup(features), tokens[:10], train_labels, tokens[10:], test_labels, NUM_CLASSES)


def test_majority_class_zero_and_boundaries_of_unlabelled_positions():
    """As in test_nonterminal_levels_are_scored_on_their_own_labels, with class 0 the level-1 majority and
    every position marked a boundary: level 1's boundary count is its 2 labelled positions per sentence."""
    n, t = 80, 6
    labels = torch.full((n, t, 2), -1)
    labels[:, 1:3, 0] = 0
    labels[:, 1:6, 1] = 1
    labels[::4, 1, 0] = 1
    tokens = torch.arange(n)[:, None].expand(n, t).clone()
    onehot = torch.cat([torch.eye(c)[labels[..., i].clamp(min=0)] for i, c in enumerate(NUM_CLASSES)], -1)
    features = torch.nn.functional.pad(4.0 * onehot, (0, 16 - onehot.shape[-1]))
    features[labels[..., 0] < 0, :3] = 0.0  # no level-1 signal where level 1 has no label
    out = run_probe(tokens, labels, features, split=60, test_boundaries=torch.ones(20, t, 2, dtype=torch.bool))
    level1, level2 = out["levels"]
    assert level1["majority_baseline"] == 35 / 40 and level1["position_baseline"] == 35 / 40
    assert (level1["boundary_count"], level2["boundary_count"]) == (40, 100)
    assert level1["boundary_accuracy"] == level1["accuracy"] == 1.0


def test_nonterminal_probe_defaults():
    """steps=300, lr=1e-2, seed=0, batch_size=256: 257 training sentences, so that the batches are samples."""
    tokens, labels, features, _ = probe_data(linear=False, n=657, t=6, seed=4)
    model = Lookup(features)
    args = (model, tokens[:257], labels[:257], tokens[257:], labels[257:], NUM_CLASSES)
    explicit = nonterminal_probe(*args, steps=300, lr=1e-2, seed=0, batch_size=256)
    assert nonterminal_probe(*args) == explicit
