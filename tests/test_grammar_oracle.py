"""The Bayes-optimal masked LM against brute force over every sentence and corruption."""


import numpy as np
import pytest
import torch

from progdistill.grammar import parse_grammar
from progdistill.grammar.pcfg import Symbol
from progdistill.models.grammar_oracle import MaskedLMOracle

GRAMMAR = parse_grammar("""
s -> x y [0.6]
s -> y x x [0.4]
x -> 'a' 'b' [0.7]
x -> 'c' [0.3]
y -> 'b' 'b' 'c' [0.5]
y -> 'a' [0.5]
""")
V, PAD, MASK, BOS = 3, 5, 6, 3
P_SEL, P_MASK, P_RAND = 0.3, 0.8, 0.1


def _sentences(length: int) -> dict[tuple[int, ...], float]:
    """Every sentence of the grammar with this length and its probability, by expanding derivations."""
    ids = {t: i for i, t in enumerate(GRAMMAR.terminals)}
    out: dict[tuple[int, ...], float] = {}

    def expand(symbols: tuple, prob: float) -> None:
        first = next((k for k, s in enumerate(symbols) if not s.terminal), None)
        if first is None:
            words = tuple(ids[s.name] for s in symbols)
            if len(words) == length:
                out[words] = out.get(words, 0.0) + prob
            return
        for rule in GRAMMAR.rules[symbols[first].name]:
            expand(symbols[:first] + rule.rhs + symbols[first + 1:], prob * rule.prob)

    expand((Symbol("s", False),), 1.0)
    return out


def _visible_given(true: int, seen: int, selected: bool | None) -> float:
    """P(visible token | true token), given the position selected (True) or not knowing (None)."""
    if seen == MASK:
        return P_MASK if selected else P_SEL * P_MASK
    corrupted = (1 - P_MASK - P_RAND) * (seen == true) + P_RAND / V
    return corrupted if selected else (1 - P_SEL) * (seen == true) + P_SEL * corrupted


@pytest.mark.parametrize("visible", [(MASK, 1, 1), (0, MASK, 2), (2, 2, MASK), (MASK, MASK, 0), (1, 0, 2)])
def test_noisy_oracle_is_the_bayes_optimal_prediction(visible):
    length = len(visible)
    table = _sentences(length)
    oracle = MaskedLMOracle(GRAMMAR, 8, PAD, MASK, P_SEL, P_MASK, P_RAND)
    logits = oracle(torch.tensor([[BOS, *visible]]))[0, 1:, :V].double()
    for i in range(length):
        joint = np.zeros(V)  # P(x_i = v, position i selected, visible row)
        for words, prob in table.items():
            like = prob * _visible_given(words[i], visible[i], True)
            for j in range(length):
                if j != i:
                    like *= _visible_given(words[j], visible[j], None)
            joint[words[i]] += like
        np.testing.assert_allclose(torch.softmax(logits[i], -1).numpy(), joint / joint.sum(), atol=1e-6)


def test_exact_oracle_rows_of_several_lengths_and_padding():
    oracle = MaskedLMOracle(GRAMMAR, 8, PAD, MASK, P_SEL, P_MASK, P_RAND, noise=False)
    rows = torch.tensor([[BOS, MASK, 1, 0, PAD, PAD], [BOS, MASK, 1, MASK, 1, 2], [BOS, MASK, MASK, PAD, PAD, PAD]])
    probs = torch.softmax(oracle(rows)[..., :V].double(), -1)
    for r, length in enumerate((3, 5, 2)):
        table = _sentences(length)
        words = rows[r, 1:length + 1].tolist()
        for i in range(length):
            if words[i] != MASK:
                continue
            joint = np.zeros(V)
            for sentence, prob in table.items():
                if all(w == MASK or w == s for k, (w, s) in enumerate(zip(words, sentence)) if k != i):
                    joint[sentence[i]] += prob
            np.testing.assert_allclose(probs[r, 1 + i].numpy(), joint / joint.sum(), atol=1e-6)
    assert torch.all(oracle(rows)[0, 4:] < -1e8)  # padding positions predict nothing
