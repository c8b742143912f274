"""Grammar tasks (SPEC §4): masked (BERT) and span-end autoregressive (GPT) language modelling on PCFG
sentences.

Sequences are [BOS] + terminals, then PAD. Token ids: terminal i = its index in the grammar's sorted
terminals; with at most 3 terminals the paper's ids BOS=3 EOS=4 PAD=5 MASK=6 (vocabulary 8), otherwise
the special tokens follow the T terminals (BOS=T, EOS=T+1, PAD=T+2, MASK=T+3, vocabulary T+4 rounded up
to a multiple of 8). EOS is reserved, never emitted.

Training sentences come in seeded chunks of a stream that is independent of the batch size: batch
`step` holds stream sentences [step*B, (step+1)*B), so it is a pure function of (seed, data_seed, step,
batch_size) and interrupted runs resume bit-identically. `seed` fixes the held-out set, its mask and
the probes' sentences; `data_seed` only the training stream and its masks.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, Callable

import numpy as np
import torch

from ..grammar import (
    Grammar,
    GrammarError,
    Sample,
    expected_length,
    generate_grammar,
    length_distribution,
    load_grammar,
    sample_sentences,
    truncate_grammar,
)
from .base import IGNORE, Batch, Task, seeded_generator
from .masking import bert_mask

_STREAM, _MASK, _HELDOUT, _HELDOUT_MASK, _PROBE = 1, 2, 3, 4, 5  # seed purposes
_CHUNK_TOKENS = 1 << 21  # training tokens drawn per chunk ...
_CHUNK_SENTENCES = (256, 1 << 16)  # ... within these many sentences
_EVAL_BATCH = 256
_LENGTH_TAIL = 1e-3  # default max_len: smallest L with P(length > L) below this
_MAX_SENTENCE = 1 << 13  # longer sentences are refused: no Transformer here attends over them
_MIN_FIT = 0.01  # a max_len must keep at least this fraction of sentences


def grammar_from_spec(path: str | None, generate: dict[str, Any] | None, truncate: int | None) -> Grammar:
    """A grammar read from `path` or made by `generate_grammar(**generate)`, optionally truncated so that
    level `truncate` holds the pre-terminals."""
    if (path is None) == (generate is None):
        raise ValueError("give exactly one of a grammar path and generate options")
    if path is not None:
        grammar = load_grammar(path)
    else:
        try:
            grammar = generate_grammar(**generate)
        except TypeError as exc:
            raise ValueError(f"bad generate options {generate}: {exc}") from None
    return grammar if truncate is None else truncate_grammar(grammar, truncate)


def default_max_len(grammar: Grammar, tail: float = _LENGTH_TAIL) -> int:
    """The smallest length L with P(sentence length > L) < tail (exact, from `length_distribution`)."""
    mean = expected_length(grammar)
    limit = min(max(16, 2 * math.ceil(mean)), _MAX_SENTENCE)
    while mean <= _MAX_SENTENCE:
        above = 1.0 - np.cumsum(length_distribution(grammar, limit))  # P(length > k), k = 0..limit
        fits = np.flatnonzero(above < tail)
        if fits.size:
            return max(int(fits[0]), 1)
        if limit == _MAX_SENTENCE:
            break
        limit = min(2 * limit, _MAX_SENTENCE)
    raise GrammarError([f"sentences of this grammar are too long (mean {mean:.0f} tokens; the limit is {_MAX_SENTENCE} "
                        f"for all but a {tail} tail): use a smaller grammar (fewer levels, shorter right-hand sides)"])


def _seed(*keys: int) -> int:
    """A non-negative NumPy seed that depends only on the integer keys (mixed like `seeded_generator`)."""
    seed = 0
    for key in keys:
        seed = (seed * 1_000_003 + int(key) + 1) % (2**63 - 1)
    return seed


class _GrammarTask(Task):
    """Token ids, the chunked sentence stream, the held-out sentences with their trees, and probes."""

    def __init__(self, grammar: Grammar, max_len: int | None, eval_size: int, seed: int, data_seed: int,
                 device: str | torch.device) -> None:
        if eval_size < 1:
            raise ValueError(f"eval_size must be >= 1, got {eval_size}")
        self.grammar, self.seed, self.data_seed = grammar, seed, data_seed
        self.device = torch.device(device)
        self.num_terminals = t = len(grammar.terminals)
        first = max(t, 3)
        self.bos_id, self.eos_id, self.pad_id, self.mask_id = first, first + 1, first + 2, first + 3
        self.vocab_size = -(-(first + 4) // 8) * 8
        if max_len is None:
            max_len = default_max_len(grammar)
        elif max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        fit = float(length_distribution(grammar, max_len).sum())
        if fit < _MIN_FIT:
            raise ValueError(f"max_len={max_len} keeps only {fit:.3g} of the grammar's sentences "
                             f"(at least {_MIN_FIT} needed); use a larger max_len")
        self.max_len, self.seq_len = max_len, max_len + 1
        self.chunk_size = min(max(_CHUNK_TOKENS // self.seq_len, _CHUNK_SENTENCES[0]), _CHUNK_SENTENCES[1])
        self.num_classes_per_level = [len(level) for level in grammar.levels[1:]]
        held = self._sample(eval_size, _seed(seed, _HELDOUT), trees=True)
        self.eval_inputs = self._inputs(held)  # [N, seq_len] clean sentences
        self.eval_labels, self.eval_boundaries = self._tree_labels(held)  # [N, seq_len, depth]
        self._chunks: dict[int, tuple[torch.Tensor, ...]] = {}
        self._probe_data: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def model_io(self) -> dict[str, Any]:
        return {"seq_len": self.seq_len, "vocab_size": self.vocab_size, "pad_id": self.pad_id,
                "num_classes": self.vocab_size}

    # --- sentences --------------------------------------------------------------------------
    def _sample(self, n: int, seed: int, trees: bool) -> Sample:
        return sample_sentences(self.grammar, n, seed, max_len=self.max_len, trees=trees)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def _inputs(self, sample: Sample) -> torch.Tensor:
        """[n, seq_len]: BOS, the terminals, PAD."""
        terms = self._tensor(sample.tokens)
        body = terms.masked_fill(terms < 0, self.pad_id)
        return torch.cat([torch.full_like(body[:, :1], self.bos_id), body], 1)

    def _tree_labels(self, sample: Sample) -> tuple[torch.Tensor, torch.Tensor]:
        """Ancestors [n, seq_len, depth] (-1 at BOS and PAD) and span ends of the token at each INPUT
        position."""
        ancestors, ends = self._tensor(sample.ancestors).long(), self._tensor(sample.boundaries)
        return (torch.cat([torch.full_like(ancestors[:, :1], -1), ancestors], 1),
                torch.cat([torch.zeros_like(ends[:, :1]), ends], 1))

    def _width(self, inputs: torch.Tensor) -> int:
        """Longest sentence (BOS included) among the rows."""
        return int((inputs != self.pad_id).sum(1).max())

    @abstractmethod
    def _chunk_tensors(self, chunk: int) -> tuple[torch.Tensor, ...]:
        """Per-sentence training tensors of one stream chunk, [chunk_size, seq_len] each, inputs first."""

    def _stream(self, step: int, batch_size: int) -> list[torch.Tensor]:
        """Rows [step*B, (step+1)*B) of the training stream, trimmed to their longest sentence."""
        if batch_size < 1 or step < 0:
            raise ValueError(f"need step >= 0 and batch_size >= 1, got {step}, {batch_size}")
        size, start = self.chunk_size, step * batch_size
        needed = range(start // size, (start + batch_size - 1) // size + 1)
        self._chunks = {c: self._chunks.get(c) or self._chunk_tensors(c) for c in needed}
        parts = [[t[max(start - c * size, 0):min(start + batch_size - c * size, size)] for t in self._chunks[c]]
                 for c in needed]
        rows = parts[0] if len(parts) == 1 else [torch.cat(ts) for ts in zip(*parts)]
        width = self._width(rows[0])
        return [t[:, :width] for t in rows]

    def _chunk_seed(self, chunk: int) -> int:
        return _seed(self.seed, self.data_seed, _STREAM, chunk)

    # --- probes -----------------------------------------------------------------------------
    def _probe_sentences(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n fixed sentences for training probes (seeded by `seed` only, apart from the held-out set)."""
        if n not in self._probe_data:
            sample = self._sample(n, _seed(self.seed, _PROBE), trees=True)
            inputs = self._inputs(sample)
            width = self._width(inputs)
            self._probe_data = {n: tuple(t[:, :width] for t in (inputs, *self._tree_labels(sample)))}
        return self._probe_data[n]

    def _heldout(self, n: int) -> tuple[torch.Tensor, ...]:
        """The first n held-out sentences (at most all of them): inputs, labels, boundaries, trimmed."""
        width = self._width(self.eval_inputs[:n])
        return tuple(t[:n, :width] for t in (self.eval_inputs, self.eval_labels, self.eval_boundaries))

    def _nonterminal_probe(self, model: torch.nn.Module, train_sentences: int = 512, test_sentences: int = 256,
                           steps: int = 300, boundaries_only: bool = False, seed: int = 0) -> dict[str, Any]:
        """Per-level accuracy of linear probes on last-layer hidden states predicting each input token's
        ancestors; `boundaries_only` trains and scores each level only at its span ends."""
        from ..probes.nonterminal import nonterminal_probe

        if train_sentences < 1 or test_sentences < 1 or steps < 0:
            raise ValueError("need train_sentences >= 1, test_sentences >= 1 and steps >= 0")
        if self.grammar.depth < 1:
            raise ValueError("the nonterminal probe needs a grammar with non-terminals below the root "
                             "(this grammar's root derives terminals directly)")
        train_inputs, train_labels, train_ends = self._probe_sentences(train_sentences)
        test_inputs, test_labels, test_ends = self._heldout(test_sentences)
        if boundaries_only:
            train_labels = train_labels.masked_fill(~train_ends, -1)
            test_labels = test_labels.masked_fill(~test_ends, -1)
        result = nonterminal_probe(model, train_inputs, train_labels, test_inputs, test_labels,
                                   self.num_classes_per_level, test_boundaries=test_ends, steps=steps, seed=seed)
        return {**result, "train_sentences": train_sentences, "test_sentences": len(test_inputs),
                "boundaries_only": boundaries_only}

    def probes(self) -> dict[str, Callable[..., dict]]:
        return {"nonterminal": self._nonterminal_probe}


class PCFGMLMTask(_GrammarTask):
    """Masked language modelling: each terminal is selected with prob `mask_prob` (BOS and PAD never,
    at least one position per batch); a selected token becomes MASK with prob `mask_token_prob`, a
    uniformly random terminal with prob `random_token_prob`, else stays; the loss is on selected
    positions. Training masks are fresh per batch; the held-out set has one fixed mask."""

    name = "pcfg-mlm"

    def __init__(self, grammar: Grammar, max_len: int | None = None, eval_size: int = 1024, mask_prob: float = 0.3,
                 mask_token_prob: float = 0.8, random_token_prob: float = 0.1, seed: int = 0, data_seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        if not 0.0 < mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
        if mask_token_prob < 0 or random_token_prob < 0 or mask_token_prob + random_token_prob > 1:
            raise ValueError("mask_token_prob and random_token_prob must be >= 0 with a sum <= 1, got "
                             f"{mask_token_prob} and {random_token_prob}")
        self.mask_prob, self.mask_token_prob, self.random_token_prob = mask_prob, mask_token_prob, random_token_prob
        super().__init__(grammar, max_len, eval_size, seed, data_seed, device)
        gen = seeded_generator(self.device, seed, _HELDOUT_MASK)
        self._eval = [self._masked(self.eval_inputs[s:s + _EVAL_BATCH], gen)
                      for s in range(0, len(self.eval_inputs), _EVAL_BATCH)]

    def _chunk_tensors(self, chunk: int) -> tuple[torch.Tensor, ...]:
        return (self._inputs(self._sample(self.chunk_size, self._chunk_seed(chunk), trees=False)),)

    def _masked(self, inputs: torch.Tensor, gen: torch.Generator) -> Batch:
        """Mask clean rows [B, T] (trimmed to their longest sentence) with draws from `gen`: terminals only."""
        inputs = inputs[:, :self._width(inputs)]
        terminal = (inputs != self.pad_id) & (torch.arange(inputs.shape[1], device=inputs.device) >= 1)
        return bert_mask(inputs, terminal, gen, self.mask_prob, self.mask_token_prob, self.random_token_prob,
                         self.mask_id, 0, self.num_terminals)

    def mask(self, inputs: torch.Tensor, step: int) -> Batch:
        """The training mask of `step` applied to clean [BOS] + terminals + PAD rows."""
        return self._masked(inputs, seeded_generator(inputs.device, self.seed, self.data_seed, _MASK, step))

    def train_batch(self, step: int, batch_size: int) -> Batch:
        return self.mask(self._stream(step, batch_size)[0], step)

    def eval_batches(self) -> list[Batch]:
        return self._eval

    def _ngram_probe(self, model: torch.nn.Module, sentences: int = 256, n_max: int = 3,
                     positions: int = 4) -> dict[str, Any]:
        """M_robust / M_close TV distances (over the terminals) on the first `sentences` held-out
        sentences, unmasked."""
        from ..probes.ngram import ngram_probe

        if sentences < 1 or n_max < 1 or positions < 1:
            raise ValueError("need sentences, n_max and positions >= 1")
        inputs = self._heldout(sentences)[0]
        lengths = (inputs != self.pad_id).sum(1)
        result = ngram_probe(model, inputs, lengths, self.mask_id, self.pad_id, n_max=n_max, positions=positions,
                             vocab=slice(0, self.num_terminals))
        return {**result, "sentences": len(inputs)}

    def probes(self) -> dict[str, Callable[..., dict]]:
        return {"ngram": self._ngram_probe, **super().probes()}

    def oracle(self, noise: bool = True) -> torch.nn.Module:
        """The grammar's Bayes-optimal predictor for this task (see `models.grammar_oracle`)."""
        from ..models.grammar_oracle import MaskedLMOracle

        return MaskedLMOracle(self.grammar, self.vocab_size, self.pad_id, self.mask_id, self.mask_prob,
                              self.mask_token_prob, self.random_token_prob, noise=noise)


class PCFGARTask(_GrammarTask):
    """Autoregressive next-token prediction on [BOS] + terminals, with the loss only where the next token
    ends the span of a non-terminal at `level` (1 = children of the root): targets[t] = token at t+1
    there, IGNORE elsewhere (and at padding)."""

    name = "pcfg-ar"

    def __init__(self, grammar: Grammar, level: int, max_len: int | None = None, eval_size: int = 1024,
                 seed: int = 0, data_seed: int = 0, device: str | torch.device = "cpu") -> None:
        if not 1 <= level <= grammar.depth:
            raise ValueError(f"level must be in 1..{grammar.depth} (the grammar's depth), got {level}")
        self.level = level
        super().__init__(grammar, max_len, eval_size, seed, data_seed, device)
        targets = self._targets(self.eval_inputs, self.eval_boundaries[:, 1:, level - 1])
        self._eval = []
        for s in range(0, len(targets), _EVAL_BATCH):
            inputs = self.eval_inputs[s:s + _EVAL_BATCH]
            width = self._width(inputs)
            self._eval.append(Batch(inputs[:, :width], targets[s:s + _EVAL_BATCH, :width]))

    def _targets(self, inputs: torch.Tensor, closes: torch.Tensor) -> torch.Tensor:
        """Targets [n, seq_len] of inputs [n, seq_len]; `closes` [n, max_len]: terminal j ends a span
        at `level` (it is the next token at input position j)."""
        nxt = torch.where(closes, inputs[:, 1:], IGNORE)
        return torch.cat([nxt, torch.full_like(nxt[:, :1], IGNORE)], 1)

    def _chunk_tensors(self, chunk: int) -> tuple[torch.Tensor, ...]:
        sample = self._sample(self.chunk_size, self._chunk_seed(chunk), trees=True)
        inputs = self._inputs(sample)
        return inputs, self._targets(inputs, self._tensor(sample.boundaries[..., self.level - 1]))

    def train_batch(self, step: int, batch_size: int) -> Batch:
        return Batch(*self._stream(step, batch_size))

    def eval_batches(self) -> list[Batch]:
        return self._eval
