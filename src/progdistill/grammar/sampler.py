"""Sentence samplers: a vectorized one for layered grammars that returns the parse tree, and a
plain recursive reference sampler for any grammar."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, fields

import numpy as np

from .pcfg import Grammar, GrammarError, Symbol, length_distribution


@dataclass(frozen=True)
class Sample:
    """A batch of sentences with their parse trees (padding: -1 / False).

    ``tokens[i, t]`` is a terminal id; ``ancestors[i, t, k - 1]`` is the index, within
    ``grammar.levels[k]``, of the level-k ancestor of token t (k = 1..depth);
    ``boundaries[i, t, k - 1]`` is True where token t ends the span of that ancestor.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    ancestors: np.ndarray
    boundaries: np.ndarray


@dataclass(frozen=True)
class _Level:
    """Rule tables of one level; children index the next level (terminal ids below pre-terminals)."""

    cum: np.ndarray  # [symbols, max rules] cumulative rule probabilities, last = 1, padded with 1
    first_rule: np.ndarray  # [symbols]
    rhs_len: np.ndarray  # [rules]
    rhs_start: np.ndarray  # [rules] offset into rhs
    rhs: np.ndarray  # [sum of rhs lengths]


@dataclass(frozen=True)
class _Flat:
    """Sentences as flat token arrays, ordered by sentence then position."""

    sentence: np.ndarray  # [T]
    tokens: np.ndarray  # [T]
    ancestors: np.ndarray  # [T, depth]
    ends: np.ndarray  # [T, depth]
    lengths: np.ndarray  # [sentences]


def _tables(g: Grammar) -> list[_Level]:
    if not g.is_layered:
        raise GrammarError([f"the fast sampler needs a layered grammar (root '{g.root}' is not); "
                            "use sample_sentences_recursive"])
    tables = []
    for k, level in enumerate(g.levels):
        below = g.levels[k + 1] if k < g.depth else g.terminals
        index = {name: i for i, name in enumerate(below)}
        rules = [g.rules[lhs] for lhs in level]
        cum = np.ones((len(level), max(map(len, rules))))
        for i, rs in enumerate(rules):
            c = np.cumsum([r.prob for r in rs])
            cum[i, : len(rs)] = c / c[-1]
        flat = [r for rs in rules for r in rs]
        rhs_len = np.array([len(r.rhs) for r in flat], dtype=np.int64)
        tables.append(_Level(
            cum=cum,
            first_rule=np.cumsum([0] + [len(rs) for rs in rules[:-1]]),
            rhs_len=rhs_len,
            rhs_start=np.cumsum(rhs_len) - rhs_len,
            rhs=np.array([index[s.name] for r in flat for s in r.rhs], dtype=np.int64),
        ))
    return tables


def _expand(level: _Level, symbols: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one rule per node; return the children (in order) and each child's parent node."""
    u = rng.random(symbols.size)
    rule = level.first_rule[symbols] + (u[:, None] >= level.cum[symbols]).sum(axis=1)
    lens = level.rhs_len[rule]
    parent = np.repeat(np.arange(symbols.size), lens)
    shift = np.repeat(level.rhs_start[rule] - (np.cumsum(lens) - lens), lens)
    return level.rhs[np.arange(parent.size) + shift], parent


def _draw(tables: list[_Level], n: int, rng: np.random.Generator) -> _Flat:
    """Expand n roots level by level, then walk each token's parent chain up to its sentence."""
    symbols, parents, per_level = np.zeros(n, dtype=np.int64), [], []
    for level in tables:
        symbols, parent = _expand(level, symbols, rng)
        per_level.append(symbols)
        parents.append(parent)
    depth = len(tables) - 1
    node = np.arange(symbols.size)
    ancestors = np.empty((node.size, depth), dtype=np.int64)
    ends = np.ones((node.size, depth), dtype=bool)
    for k in range(depth, 0, -1):
        node = parents[k][node]
        ancestors[:, k - 1] = per_level[k - 1][node]
        ends[:-1, k - 1] = node[1:] != node[:-1]
    sentence = parents[0][node]
    return _Flat(sentence, symbols, ancestors, ends, np.bincount(sentence, minlength=n))


def _pad(flat: _Flat, width: int) -> Sample:
    n, depth = flat.lengths.size, flat.ancestors.shape[1]
    pos = np.arange(flat.sentence.size) - np.repeat(np.cumsum(flat.lengths) - flat.lengths, flat.lengths)
    tokens = np.full((n, width), -1, dtype=np.int64)
    ancestors = np.full((n, width, depth), -1, dtype=np.int64)
    boundaries = np.zeros((n, width, depth), dtype=bool)
    tokens[flat.sentence, pos] = flat.tokens
    ancestors[flat.sentence, pos] = flat.ancestors
    boundaries[flat.sentence, pos] = flat.ends
    return Sample(tokens, flat.lengths.astype(np.int64), ancestors, boundaries)


def _keep_short(flat: _Flat, max_len: int, limit: int) -> _Flat:
    """The first ``limit`` sentences of length <= max_len, renumbered."""
    keep = flat.lengths <= max_len
    keep &= np.cumsum(keep) <= limit
    new_id = np.cumsum(keep) - 1
    mask = keep[flat.sentence]
    return _Flat(new_id[flat.sentence[mask]], flat.tokens[mask], flat.ancestors[mask], flat.ends[mask],
                 flat.lengths[keep])


def sample_sentences(g: Grammar, n: int, seed: int, max_len: int | None = None) -> Sample:
    """Draw n sentences of a layered grammar with their parse trees, vectorized level by level.

    Deterministic in (grammar, n, seed, max_len). Rows are padded to the longest sentence, or to
    ``max_len`` when given; then sentences longer than ``max_len`` are dropped and replaced by fresh
    draws, in batches sized by the exact probability of fitting (so the result is a sample of the
    grammar conditioned on length <= max_len).
    """
    tables = _tables(g)
    rng = np.random.default_rng(seed)
    if max_len is None:
        flat = _draw(tables, n, rng)
        return _pad(flat, int(flat.lengths.max(initial=0)))
    fit = float(length_distribution(g, max_len).sum())
    if fit <= 0.0:
        raise ValueError(f"no sentence of this grammar has length <= {max_len}")
    parts: list[Sample] = []
    have = 0
    while have < n or not parts:
        need = n - have
        batch = _keep_short(_draw(tables, math.ceil(need / fit * 1.1) + 8, rng), max_len, need)
        parts.append(_pad(batch, max_len))
        have += batch.lengths.size
    return Sample(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Sample)))


def sample_sentences_recursive(g: Grammar, n: int, seed: int) -> list[list[int]]:
    """Plain recursive sampler for any grammar (reference for tests and benchmarks): token-id lists."""
    rng = random.Random(seed)
    ids = {t: i for i, t in enumerate(g.terminals)}
    options = {
        lhs: ([r.rhs for r in rs], list(itertools.accumulate(r.prob for r in rs))) for lhs, rs in g.rules.items()
    }

    def expand(symbol: Symbol, out: list[int]) -> None:
        if symbol.terminal:
            out.append(ids[symbol.name])
            return
        rhss, cum = options[symbol.name]
        for child in rng.choices(rhss, cum_weights=cum)[0]:
            expand(child, out)

    sentences = []
    for _ in range(n):
        out: list[int] = []
        expand(Symbol(g.root, False), out)
        sentences.append(out)
    return sentences
