"""Exact masked-token posteriors (inside-outside) against brute-force enumeration and sampling."""

from functools import cache

import numpy as np
import pytest

from progdistill.grammar import Grammar, Symbol, generate_grammar, parse_grammar, sample_sentences
from progdistill.grammar import inference
from progdistill.grammar.inference import masked_posteriors

# ternary rule, terminals mixed with non-terminals, unary rules (terminal and non-terminal), uneven probs
TINY = """
s -> a 'x' b [0.5]
s -> b b [0.3]
s -> c [0.2]
a -> 'x' [0.7]
a -> b 'y' [0.3]
b -> 'z' [0.6]
b -> c 'x' 'z' [0.25]
b -> a [0.15]
c -> 'y' [0.9]
c -> 'y' 'y' 'z' 'x' [0.1]
"""
# recursive (s -> s s, a -> a b): still exact, inside-outside needs no acyclic grammar
RECURSIVE = """
s -> s s [0.3]
s -> a [0.7]
a -> 'x' [0.5]
a -> a b [0.2]
a -> 'y' 'x' [0.3]
b -> 'y' [0.8]
b -> 'z' [0.2]
"""


def joint_table(g: Grammar, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Every derivation of a length-``length`` sentence: token ids [N, length] and probabilities [N]."""
    ids = {t: i for i, t in enumerate(g.terminals)}

    @cache
    def expand(symbol: Symbol, budget: int) -> list[tuple[tuple[int, ...], float]]:
        """Derivations from ``symbol`` of at most ``budget`` tokens (every symbol yields >= 1)."""
        if budget < 1:
            return []
        if symbol.terminal:
            return [((ids[symbol.name],), 1.0)]
        out = []
        for rule in g.rules[symbol.name]:
            partial = [((), rule.prob)]
            for at, child in enumerate(rule.rhs):
                rest = len(rule.rhs) - at - 1
                partial = [
                    (tokens + more, p * q)
                    for tokens, p in partial
                    for more, q in expand(child, budget - len(tokens) - rest)
                ]
            out += partial
        return out

    found = [(tokens, p) for tokens, p in expand(Symbol(g.root, False), length) if len(tokens) == length]
    return np.array([t for t, _ in found]).reshape(-1, length), np.array([p for _, p in found])


def brute_posteriors(table: tuple[np.ndarray, np.ndarray], tokens: np.ndarray, observed: np.ndarray, vocab: int):
    """P(x_i = v | observed x_j, j != i) from the joint table."""
    sentences, probs = table
    out = np.zeros((*tokens.shape, vocab))
    for b in range(tokens.shape[0]):
        agree = (sentences == tokens[b]) | ~observed[b]
        for i in range(tokens.shape[1]):
            keep = np.delete(agree, i, axis=1).all(axis=1)
            weights = np.bincount(sentences[keep, i], weights=probs[keep], minlength=vocab)
            out[b, i] = weights / weights.sum()
    return out


def patterns(rng: np.random.Generator, table: tuple[np.ndarray, np.ndarray], rows: int):
    """Sentences drawn from the table with all-masked, none-masked and random observation masks."""
    sentences, probs = table
    tokens = sentences[rng.choice(len(probs), size=rows, p=probs / probs.sum())]
    observed = rng.random(tokens.shape) < 0.6
    observed[0], observed[1] = False, True
    return tokens, observed


@pytest.mark.parametrize("text", [TINY, RECURSIVE], ids=["tiny", "recursive"])
@pytest.mark.parametrize("length", [1, 2, 3, 4, 6])
def test_tiny_grammars_match_brute_force(text, length):
    g = parse_grammar(text)
    table = joint_table(g, length)
    assert len(table[1])
    tokens, observed = patterns(np.random.default_rng(length), table, 8)
    got = masked_posteriors(g, tokens, observed)
    want = brute_posteriors(table, tokens, observed, len(g.terminals))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert np.array_equal(got == 0, want == 0)  # impossible terminals get exactly 0


def test_generated_grammar_matches_brute_force():
    g = generate_grammar(levels=3, rhs_lengths=(2,), seed=3)
    table = joint_table(g, 16)
    assert len(table[1]) == 2**15 and np.isclose(table[1].sum(), 1.0)
    rng = np.random.default_rng(0)
    tokens = sample_sentences(g, 6, seed=1).tokens
    observed = rng.random(tokens.shape) < rng.uniform(0.2, 0.95, size=(6, 1))
    observed[0], observed[1] = False, True
    want = brute_posteriors(table, tokens, observed, len(g.terminals))
    np.testing.assert_allclose(masked_posteriors(g, tokens, observed), want, rtol=0, atol=1e-9)


def test_all_masked_is_the_positional_marginal():
    g = generate_grammar(levels=2, rhs_lengths=(2, 3), seed=0)
    sample = sample_sentences(g, 300_000, seed=7, trees=False)
    counts = np.bincount(sample.lengths)
    for length in np.argsort(counts)[-2:]:  # the two commonest lengths, ~50k sentences each
        tokens = sample.tokens[sample.lengths == length, :length]
        got = masked_posteriors(g, tokens[:1], np.zeros((1, length), dtype=bool))[0]
        freq = np.stack([np.bincount(tokens[:, i], minlength=len(g.terminals)) for i in range(length)]) / len(tokens)
        sigma = np.sqrt(got * (1 - got) / len(tokens))
        assert len(tokens) > 40_000 and np.all(np.abs(freq - got) <= 5 * sigma + 1e-12), np.abs(freq - got).max()
        np.testing.assert_allclose(got.sum(axis=-1), 1.0, atol=1e-12)


def test_posteriors_are_distributions_and_leave_one_out():
    g = generate_grammar(levels=2, rhs_lengths=(2, 3), seed=0)
    sample = sample_sentences(g, 400, seed=2, trees=False)
    length = int(np.bincount(sample.lengths).argmax())
    tokens = sample.tokens[sample.lengths == length, :length]
    observed = np.random.default_rng(3).random(tokens.shape) < 0.8
    got = masked_posteriors(g, tokens, observed)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, atol=1e-12)
    assert np.all(got >= 0)
    # a position's own token never conditions it: neither observing it nor changing it (to another
    # possible token) changes its posterior; unobserved tokens are ignored (any value)
    shown, moved = observed.copy(), tokens.copy()
    shown[:, 3] = True
    moved[:, 3] = np.argmax(got[:, 3] * np.random.default_rng(4).random(got[:, 3].shape), axis=-1)
    np.testing.assert_allclose(masked_posteriors(g, moved, shown)[:, 3], got[:, 3], rtol=0, atol=1e-12)
    np.testing.assert_allclose(masked_posteriors(g, np.where(observed, tokens, 99), observed), got, rtol=0, atol=0)


def test_long_sentences_do_not_underflow():
    # tokens are iid given the length: P(x_i = 'a') = 0.2 / (0.2 + 0.7999), whatever the context.
    # P(sentence) is about 1e-4 ** 119 * Catalan(119) ~ 1e-400, which float64 cannot hold.
    g = parse_grammar("s -> s s [0.0001]\ns -> 'a' [0.2]\ns -> 'b' [0.7999]")
    tokens = np.random.default_rng(0).integers(2, size=(2, 120))
    observed = np.random.default_rng(1).random(tokens.shape) < 0.9
    got = masked_posteriors(g, tokens, observed)
    np.testing.assert_allclose(got, np.broadcast_to([0.2 / 0.9999, 0.7999 / 0.9999], got.shape), rtol=1e-9)


def test_errors():
    g = parse_grammar(TINY)  # terminals x y z (ids 0 1 2); no sentence of length 2 has a 'y'
    ok = np.zeros((3, 2), dtype=int)
    with pytest.raises(ValueError, match="share one shape"):
        masked_posteriors(g, ok, np.ones((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="share one shape"):
        masked_posteriors(g, ok[0], np.ones(2, dtype=bool))
    with pytest.raises(ValueError, match=r"out of range \[0, 3\).*\[\[1, 0\]\]"):
        masked_posteriors(g, np.array([[2, 2], [3, 2], [0, 0]]), np.ones((3, 2), dtype=bool))
    with pytest.raises(ValueError, match=r"probability 0 .* rows \[0, 2\]"):
        masked_posteriors(g, np.array([[1, 2], [2, 2], [2, 1]]), np.ones((3, 2), dtype=bool))
    with pytest.raises(ValueError, match="integer"):
        masked_posteriors(g, ok.astype(float), np.ones((3, 2), dtype=bool))


def test_rows_go_through_in_chunks(monkeypatch):
    g = parse_grammar(TINY)
    table = joint_table(g, 6)
    tokens, observed = patterns(np.random.default_rng(5), table, 7)
    whole = masked_posteriors(g, tokens, observed)
    monkeypatch.setattr(inference, "_CHUNK_BYTES", 1)  # one row per chunk
    np.testing.assert_allclose(masked_posteriors(g, tokens, observed), whole, rtol=0, atol=1e-15)
    tokens[[2, 5]], observed[[2, 5]] = 1, True  # 'y' * 6 is impossible
    with pytest.raises(ValueError, match=r"rows \[2, 5\]"):
        masked_posteriors(g, tokens, observed)
