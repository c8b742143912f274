"""The Bayes-optimal masked language model of a PCFG: a reference, not a trainable model.

It answers exactly what a perfect student of `pcfg-mlm` would: the posterior of each position's token
given every other visible token and the sentence length, by the inside-outside algorithm
(`grammar.inference`). With `noise` it models the task's corruption (a visible token may be one the
masking replaced at random), so on held-out batches its accuracy is the ceiling of the task's metric;
without it visible tokens are taken as true, which is what the n-gram probes' inputs mean.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..grammar import Grammar
from ..grammar.inference import leave_one_out_posteriors

_LOG_ZERO = -1e9  # logit of tokens that are never the answer (specials, impossible terminals)


class MaskedLMOracle(nn.Module):
    """Logits [N, T, vocab] = log P(token at t | the other visible tokens) on [BOS] + terminals + PAD
    rows; `mask_prob`, `mask_token_prob`, `random_token_prob` describe the task's corruption."""

    def __init__(self, grammar: Grammar, vocab_size: int, pad_id: int, mask_id: int, mask_prob: float,
                 mask_token_prob: float, random_token_prob: float, noise: bool = True) -> None:
        super().__init__()
        self.grammar, self.vocab_size, self.pad_id, self.mask_id = grammar, vocab_size, pad_id, mask_id
        self.terminals = len(grammar.terminals)
        keep = 1.0 - mask_token_prob - random_token_prob
        self.uniform = random_token_prob / self.terminals if noise else 0.0  # P(visible u | x, selected), u != x
        self.own_match = keep + self.uniform if noise else 1.0  # ... u == x
        self.select = mask_prob if noise else 0.0

    def _likelihoods(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Evidence of each position [B, L, V]: as a context token (selection unknown) and as the
        position being predicted (selected, since that is where the metric counts)."""
        match = tokens[..., None] == np.arange(self.terminals)
        masked = (tokens == self.mask_id)[..., None]
        own = np.where(masked, 1.0, np.where(match, self.own_match, self.uniform))
        context = np.where(masked, 1.0, (1 - self.select) * match + self.select * own)
        own[own.sum(-1) == 0] = 1.0  # a visible token that can never be a selected one
        return context, own

    @torch.no_grad()
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        rows = inputs.cpu().numpy()
        lengths = (rows != self.pad_id).sum(1) - 1
        logits = np.full((*rows.shape, self.vocab_size), _LOG_ZERO, dtype=np.float32)
        for length in np.unique(lengths[lengths > 0]):
            index = np.flatnonzero(lengths == length)
            tokens = rows[index, 1:length + 1]
            context, own = self._likelihoods(tokens)
            posterior = leave_one_out_posteriors(self.grammar, context) * own
            posterior /= posterior.sum(-1, keepdims=True)
            with np.errstate(divide="ignore"):
                logits[index[:, None], np.arange(1, length + 1), :self.terminals] = np.maximum(
                    np.log(posterior), _LOG_ZERO)
        return torch.from_numpy(logits).to(inputs.device)
