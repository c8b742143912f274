import json
import math
import os
from pathlib import Path

import pytest
import torch

from progdistill.grammar import (GrammarError, generate_grammar, load_grammar, parse_grammar, sample_sentences,
                                 truncate_grammar)
from progdistill.models import BertMLM, GPTLM
from progdistill.tasks.base import IGNORE
from progdistill.tasks.masking import bert_mask
from progdistill.tasks.pcfg import PCFGARTask, PCFGMLMTask, default_max_len, grammar_from_spec

GRAMMAR = generate_grammar(levels=2, seed=0)
DEEP = generate_grammar(levels=3, seed=0)


def grammars_dir() -> Path:
    return Path(os.environ.get("PROGDISTILL_GRAMMARS", Path(__file__).resolve().parents[2] / "shared" / "grammars"))


@pytest.fixture(scope="module")
def mlm() -> PCFGMLMTask:
    return PCFGMLMTask(GRAMMAR, eval_size=300, seed=1, data_seed=2)


@pytest.fixture(scope="module")
def ar() -> PCFGARTask:
    return PCFGARTask(DEEP, level=2, eval_size=300, seed=1, data_seed=2)


def bert(task) -> BertMLM:
    torch.manual_seed(0)
    io = task.model_io()
    return BertMLM(io["vocab_size"], io["seq_len"], layers=1, heads=2, head_dim=8, pad_id=io["pad_id"])


def gpt(task) -> GPTLM:
    torch.manual_seed(0)
    io = task.model_io()
    return GPTLM(io["vocab_size"], io["seq_len"], layers=1, heads=2, head_dim=8, pad_id=io["pad_id"])


def clean(batch) -> torch.Tensor:
    """The unmasked sentences of an MLM batch."""
    return torch.where(batch.targets != IGNORE, batch.targets, batch.inputs)


def within(value: float, p: float, n: int, sigmas: float = 5.0) -> bool:
    return abs(value - p) <= sigmas * math.sqrt(p * (1 - p) / n)


# --- tokens and lengths ----------------------------------------------------------------------
def test_token_ids_and_model_io(mlm):
    assert (mlm.bos_id, mlm.eos_id, mlm.pad_id, mlm.mask_id, mlm.vocab_size) == (3, 4, 5, 6, 8)
    assert mlm.max_len == default_max_len(GRAMMAR) and mlm.seq_len == mlm.max_len + 1
    assert mlm.model_io() == {"seq_len": mlm.seq_len, "vocab_size": 8, "pad_id": 5, "num_classes": 8}
    wide = PCFGMLMTask(generate_grammar(levels=2, terminals=5, seed=0), eval_size=8)
    assert (wide.bos_id, wide.eos_id, wide.pad_id, wide.mask_id, wide.vocab_size) == (5, 6, 7, 8, 16)


def test_default_max_len_covers_all_but_a_tiny_tail():
    lengths = torch.from_numpy(sample_sentences(DEEP, 20000, seed=3).lengths)
    cut = default_max_len(DEEP)
    assert float((lengths > cut).float().mean()) < 3e-3
    assert float((lengths > cut - 8).float().mean()) > 1e-3


def test_a_grammar_of_too_long_sentences_is_refused_quickly():
    huge = generate_grammar(levels=20, rhs_lengths=[3], seed=0)  # 3**21 tokens a sentence
    with pytest.raises(GrammarError, match="too long .mean 10460353203 tokens; the limit is 8192"):
        default_max_len(huge)


def test_nonterminal_probe_needs_levels_below_the_root():
    flat = PCFGMLMTask(parse_grammar("s -> 'a' 'b'\ns -> 'b' 'a'\n"), eval_size=8)
    with pytest.raises(ValueError, match="non-terminals below the root"):
        flat.probes()["nonterminal"](bert(flat))


def test_grammar_from_spec(tmp_path):
    g = grammar_from_spec(None, {"levels": 3, "seed": 0}, 2)
    assert g.depth == 2 and len(g.levels[2]) == 3
    path = tmp_path / "g.txt"
    path.write_text("s -> a a\na -> 'x'\na -> 'y'\n")
    assert grammar_from_spec(str(path), None, None).terminals == ("x", "y")
    with pytest.raises(ValueError, match="exactly one"):
        grammar_from_spec(None, None, None)
    with pytest.raises(ValueError, match="exactly one"):
        grammar_from_spec(str(path), {"levels": 2}, None)
    with pytest.raises(ValueError, match="generate options"):
        grammar_from_spec(None, {"levels": 2, "colour": 1}, None)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="max_len"):
        PCFGMLMTask(GRAMMAR, max_len=2)
    with pytest.raises(ValueError, match="mask_prob"):
        PCFGMLMTask(GRAMMAR, mask_prob=0.0)
    with pytest.raises(ValueError, match="sum"):
        PCFGMLMTask(GRAMMAR, mask_token_prob=0.9, random_token_prob=0.2)
    with pytest.raises(ValueError, match="eval_size"):
        PCFGMLMTask(GRAMMAR, eval_size=0)
    with pytest.raises(ValueError, match=r"level must be in 1\.\.3"):
        PCFGARTask(DEEP, level=4)
    with pytest.raises(ValueError, match="level"):
        PCFGARTask(DEEP, level=0)


# --- masked language modelling ---------------------------------------------------------------
def test_masking_statistics(mlm):
    selected = terminals = to_mask = kept = swapped = 0
    for step in range(40):
        batch = mlm.train_batch(step, 128)
        x, sel = clean(batch), batch.targets != IGNORE
        terminal = (x != mlm.pad_id) & (x != mlm.bos_id)
        assert not bool((sel & ~terminal).any())  # BOS and PAD never selected
        assert torch.equal(batch.inputs[~sel], x[~sel])  # unselected positions unchanged
        assert bool((batch.inputs[sel] < mlm.num_terminals).logical_or(batch.inputs[sel] == mlm.mask_id).all())
        selected, terminals = selected + int(sel.sum()), terminals + int(terminal.sum())
        to_mask += int((batch.inputs[sel] == mlm.mask_id).sum())
        kept += int((batch.inputs[sel] == x[sel]).sum())
        swapped += int(((batch.inputs[sel] != x[sel]) & (batch.inputs[sel] != mlm.mask_id)).sum())
    assert within(selected / terminals, 0.3, terminals)
    assert within(to_mask / selected, 0.8, selected)
    third = 1 / mlm.num_terminals  # a random terminal may be the original one
    assert within(kept / selected, 0.1 + 0.1 * third, selected)
    assert within(swapped / selected, 0.1 * (1 - third), selected)


def test_bert_mask_follows_its_draws_exactly_at_the_boundaries():
    """bert_mask's documented draws (u, action, noise, in this order) recomputed from the same seed. The
    probabilities are set to drawn values themselves, so that a position sits exactly on each boundary:
    u == mask_prob is not chosen, action == mask_token_prob is replaced, action == mask + random is kept."""
    shape, seed = (16, 24), 5
    gen = torch.Generator().manual_seed(seed)
    u, action = torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)
    noise = torch.randint(100, 1000, shape, generator=gen)
    inputs = torch.randint(0, 50, shape, generator=torch.Generator().manual_seed(1))
    eligible = inputs >= 10
    mask_prob = float(u[eligible].sort().values[len(u[eligible]) // 2])
    chosen = eligible & (u < mask_prob)
    at_chosen = action[chosen].sort().values
    mask_token_prob, upper = float(at_chosen[len(at_chosen) // 3]), float(at_chosen[2 * len(at_chosen) // 3])
    random_token_prob = upper - mask_token_prob
    batch = bert_mask(inputs, eligible, torch.Generator().manual_seed(seed), mask_prob, mask_token_prob,
                      random_token_prob, mask_id=99, noise_low=100, noise_high=1000)
    for boundary in ((u == mask_prob) & eligible, (action == mask_token_prob) & chosen, (action == upper) & chosen):
        assert boundary.sum() == 1  # one position on each boundary
    expected = inputs.clone()
    expected[chosen & (action < mask_token_prob)] = 99
    swap = chosen & (action >= mask_token_prob) & (action < upper)
    expected[swap] = noise[swap]
    assert torch.equal(batch.inputs, expected)
    assert torch.equal(batch.targets, torch.where(chosen, inputs, IGNORE))


def test_bert_mask_draws_on_the_inputs_device():
    """Under a meta default device, draws made without `device=` are meta: CPU inputs must still give
    the CPU batch drawn outside it."""
    gen = torch.Generator().manual_seed(5)
    inputs = torch.randint(5, 20, (4, 9), generator=gen)
    eligible = inputs != 7
    outside = bert_mask(inputs, eligible, torch.Generator().manual_seed(1), 0.3, 0.5, 0.3, 4, 5, 20)
    with torch.device("meta"):
        inside = bert_mask(inputs, eligible, torch.Generator().manual_seed(1), 0.3, 0.5, 0.3, 4, 5, 20)
    assert inside.inputs.device.type == inside.targets.device.type == "cpu"
    assert torch.equal(inside.inputs, outside.inputs) and torch.equal(inside.targets, outside.targets)
    assert not torch.equal(outside.inputs, inputs)  # some tokens masked or replaced


def test_bert_mask_falls_back_to_the_eligible_position_of_lowest_u():
    shape, seed = (6, 10), 2
    u = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    eligible = torch.zeros(shape, dtype=torch.bool)
    eligible[2:4, 3:8] = True  # the lowest u overall lies elsewhere
    assert u[eligible].min() > u.min()
    inputs = torch.arange(60).view(shape)
    batch = bert_mask(inputs, eligible, torch.Generator().manual_seed(seed), 1e-9, 1.0, 0.0, 99, 0, 1)
    target = (u == u[eligible].min()) & eligible
    assert torch.equal(batch.targets, torch.where(target, inputs, IGNORE))
    assert torch.equal(batch.inputs, torch.where(target, 99, inputs))
    none = bert_mask(inputs, torch.zeros(shape, dtype=torch.bool), torch.Generator().manual_seed(seed), 0.5, 1.0, 0.0,
                     99, 0, 1)
    assert (none.targets == IGNORE).all() and torch.equal(none.inputs, inputs)


def test_every_batch_has_a_target_and_is_trimmed(mlm):
    one = mlm.mask(mlm.eval_inputs[:1], step=0)
    task = PCFGMLMTask(GRAMMAR, eval_size=8, mask_prob=1e-9)
    for step in range(5):
        batch = task.train_batch(step, 2)
        assert int((batch.targets != IGNORE).sum()) == 1
        assert batch.inputs.shape[1] == int((clean(batch) != task.pad_id).sum(1).max())
    assert int((one.targets != IGNORE).sum()) >= 1
    assert one.inputs.shape[1] == int((mlm.eval_inputs[0] != mlm.pad_id).sum())


def test_batches_are_deterministic_and_resumable(mlm):
    a, b = mlm.train_batch(1234, 32), mlm.train_batch(1234, 32)
    fresh = PCFGMLMTask(GRAMMAR, eval_size=300, seed=1, data_seed=2).train_batch(1234, 32)
    for other in (b, fresh):
        assert torch.equal(a.inputs, other.inputs) and torch.equal(a.targets, other.targets)
    assert not torch.equal(mlm.train_batch(1235, 32).inputs, a.inputs)
    other_data = PCFGMLMTask(GRAMMAR, eval_size=300, seed=1, data_seed=3).train_batch(1234, 32)
    assert not torch.equal(clean(other_data)[:, :5], clean(a)[:, :5])


def test_masks_are_fresh_per_step(mlm):
    x = mlm.eval_inputs[:64]
    x = x[:, :int((x != mlm.pad_id).sum(1).max())]
    assert torch.equal(mlm.mask(x, 7).inputs, mlm.mask(x, 7).inputs)
    assert not torch.equal(mlm.mask(x, 7).targets, mlm.mask(x, 8).targets)
    assert torch.equal(clean(mlm.mask(x, 8)), x)


def test_stream_does_not_depend_on_batch_size_and_crosses_chunks():
    task = PCFGMLMTask(GRAMMAR, eval_size=8)
    task.chunk_size = 100  # rows 64..128 straddle chunks 0 and 1
    whole = clean(task.train_batch(1, 64))
    parts = [clean(task.train_batch(step, 4)) for step in range(16, 32)]
    stitched = torch.cat([torch.nn.functional.pad(p, (0, whole.shape[1] - p.shape[1]), value=task.pad_id)
                          for p in parts])
    assert torch.equal(stitched, whole)


def test_heldout_set_is_fixed_by_seed_only(mlm):
    same = PCFGMLMTask(GRAMMAR, eval_size=300, seed=1, data_seed=99)
    other = PCFGMLMTask(GRAMMAR, eval_size=300, seed=2, data_seed=2)
    assert len(mlm.eval_batches()) == 2 and mlm.eval_batches()[0].size == 256
    for x, y in zip(mlm.eval_batches(), same.eval_batches(), strict=True):
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
    assert not torch.equal(mlm.eval_inputs, other.eval_inputs)
    assert mlm.eval_labels.shape == (300, mlm.seq_len, GRAMMAR.depth)
    assert bool((mlm.eval_labels[:, 0] == -1).all())
    assert bool(((mlm.eval_labels[..., 0] >= 0) == (mlm.eval_inputs != mlm.pad_id).logical_and(
        mlm.eval_inputs != mlm.bos_id)).all())


# --- autoregressive -------------------------------------------------------------------------
def test_ar_targets_are_next_tokens_that_close_a_span(ar):
    inputs, ends = ar.eval_inputs, ar.eval_boundaries[..., ar.level - 1]
    targets = torch.cat([b.targets for b in ar.eval_batches()][:1])
    width = targets.shape[1]
    expected = torch.where(ends[:256, 1:width], inputs[:256, 1:width], IGNORE)
    assert torch.equal(targets[:, :-1], expected) and bool((targets[:, -1] == IGNORE).all())
    for step in range(3):
        batch = ar.train_batch(step, 64)
        has = batch.targets != IGNORE
        nxt = torch.cat([batch.inputs[:, 1:], torch.full_like(batch.inputs[:, :1], ar.pad_id)], 1)
        assert torch.equal(batch.targets[has], nxt[has])
        assert not bool((nxt[has] == ar.pad_id).any())  # padding is never a target
        last = (batch.inputs != ar.pad_id).sum(1) - 2  # predicts the last terminal, which closes every span
        assert bool(has[torch.arange(64), last].all())


def test_ar_levels_nest_and_count_spans():
    shallow, deep = (PCFGARTask(DEEP, level=k, eval_size=64, seed=1) for k in (1, 2))
    for a, b in zip(shallow.eval_batches(), deep.eval_batches(), strict=True):
        ha, hb = a.targets != IGNORE, b.targets != IGNORE
        assert bool((ha <= hb).all()) and int(hb.sum()) > int(ha.sum())
    spans = shallow.eval_boundaries[..., 0].sum(1)
    assert torch.equal((shallow.eval_batches()[0].targets != IGNORE).sum(1), spans)


# --- evaluation and probes -------------------------------------------------------------------
def test_evaluate_and_learn(mlm, ar):
    for task, model in ((mlm, bert(mlm)), (ar, gpt(ar))):
        before = task.evaluate(model)
        assert 0 <= before["accuracy"] <= 1 and math.isfinite(before["loss"])
    model = bert(mlm)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    before = mlm.evaluate(model)["loss"]
    for step in range(30):
        batch = mlm.train_batch(step, 64)
        loss = torch.nn.functional.cross_entropy(model(batch.inputs).flatten(0, 1), batch.targets.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert mlm.evaluate(model)["loss"] < before - 0.3


def test_probes_run_and_serialise(mlm, ar):
    assert set(mlm.probes()) == {"ngram", "nonterminal"} and set(ar.probes()) == {"nonterminal"}
    ngram = mlm.probes()["ngram"](bert(mlm), sentences=32, n_max=2, positions=3)
    assert set(ngram["windows"]) == {"3", "5"} and ngram["pairs"] == 96
    assert 0 <= ngram["windows"]["3"]["robust"]["median"] <= 1
    for task, model in ((mlm, bert(mlm)), (ar, gpt(ar))):
        result = task.probes()["nonterminal"](model, train_sentences=64, test_sentences=400, steps=20)
        assert [lv["level"] for lv in result["levels"]] == list(range(1, task.grammar.depth + 1))
        assert result["test_sentences"] == 300
        assert all(0 <= lv["accuracy"] <= 1 and lv["boundary_count"] > 0 for lv in result["levels"])
        json.dumps(result)
    only = mlm.probes()["nonterminal"](bert(mlm), train_sentences=64, test_sentences=32, steps=5, boundaries_only=True)
    assert all(lv["accuracy"] == lv["boundary_accuracy"] for lv in only["levels"])
    json.dumps(ngram)


# --- reference grammar -----------------------------------------------------------------------
def test_cfg3b_truncated_to_level_4():
    path = grammars_dir() / "cfg3b.txt"
    if not path.is_file():
        pytest.skip(f"reference grammar {path} not found")
    g = truncate_grammar(load_grammar(path), 4)
    task = PCFGMLMTask(g, eval_size=64)
    assert 45 <= task.seq_len <= 60 and task.vocab_size == 8
    assert int((task.eval_inputs != task.pad_id).sum(1).max()) <= task.seq_len
    assert task.train_batch(0, 16).inputs.shape[0] == 16
    assert PCFGARTask(g, level=4, eval_size=16).train_batch(0, 8).targets.shape[0] == 8
