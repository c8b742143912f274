"""Sentence samplers: a vectorized one for layered grammars that returns the parse trees, and a
plain recursive reference sampler for any grammar.

The fast sampler expands the whole batch one level at a time (one rule draw per node, children laid
out with NumPy gathers and compaction). The bottom levels are drawn in one step: every complete
subtree of a symbol at the "cut" level is enumerated once with its probability (while each symbol
has at most MAX_SUBTREES of them), which samples exactly the same distribution.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .pcfg import Grammar, GrammarError, Symbol, length_distribution


@dataclass(frozen=True)
class Sample:
    """A batch of sentences with their parse trees (padding: -1 / False).

    ``tokens[i, t]`` (int64 [n, L]) is a terminal id; ``ancestors[i, t, k - 1]`` (int64
    [n, L, depth]) is the index, within ``grammar.levels[k]``, of the level-k ancestor of token t
    (k = 1..depth); ``boundaries[i, t, k - 1]`` is True where token t ends that ancestor's span.
    Trees are None when sampled with ``trees=False``.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    ancestors: np.ndarray | None
    boundaries: np.ndarray | None


MAX_SUBTREES = 16  # bottom levels are drawn whole while no symbol has more complete subtrees


@dataclass(frozen=True)
class _Level:
    """Rule tables of one level; children index the next level (terminal ids below the cut)."""

    cum: np.ndarray  # [max rules - 1, symbols] cumulative rule probabilities, padded with 1
    first_rule: np.ndarray  # [symbols]
    rhs_len: np.ndarray  # [rules]
    rhs: np.ndarray  # [rules, max rhs length] children, padded with -1


@dataclass(frozen=True)
class _Plan:
    """Sampling tables: ``levels[k]`` expands level k; at the last (cut) level the "rules" are whole
    subtrees of each symbol, whose tokens carry their ancestors and span ends for the levels below
    the cut in ``below_ancestors`` / ``below_ends`` ([levels below, subtrees, max length])."""

    levels: list[_Level]
    below_ancestors: np.ndarray
    below_ends: np.ndarray


class _Subtree(NamedTuple):
    prob: float
    tokens: tuple[int, ...]
    ancestors: tuple[tuple[int, ...], ...]  # per token, its ancestors' indices at the levels below
    ends: tuple[tuple[bool, ...], ...]  # per token, whether it ends those ancestors' spans


@dataclass(frozen=True)
class _Forest:
    """Derivations of a batch, level by level down to the cut, then the tokens; nodes in sentence
    then left-to-right order: ``symbols[k]`` per node (last: token ids); ``ends[k]`` = cumulative
    child counts of the level-k nodes (node i's children are ``symbols[k + 1][ends[k][i - 1]:
    ends[k][i]]``); ``subtrees`` = the subtree drawn for each node of the cut level."""

    symbols: list[np.ndarray]
    ends: list[np.ndarray]
    subtrees: np.ndarray

    def last_nodes(self) -> list[np.ndarray]:
        """Per level, the index of each sentence's last node."""
        last = [np.arange(self.symbols[0].size)]
        for ends in self.ends:
            last.append(ends[last[-1]] - 1)
        return last


def _subtrees(g: Grammar, cut: int) -> dict[str, list[_Subtree]]:
    """Every complete subtree of the symbols at levels >= cut, with its probability."""
    ids = {t: i for i, t in enumerate(g.terminals)}
    found: dict[str, list[_Subtree]] = {}
    for k in range(g.depth, cut - 1, -1):
        position = {name: i for i, name in enumerate(g.levels[k + 1])} if k < g.depth else {}
        for lhs in g.levels[k]:
            found[lhs] = []
            for rule in g.rules[lhs]:
                if k == g.depth:
                    leaves = tuple(ids[s.name] for s in rule.rhs)
                    found[lhs].append(_Subtree(rule.prob, leaves, ((),) * len(leaves), ((),) * len(leaves)))
                    continue
                for parts in itertools.product(*(found[s.name] for s in rule.rhs)):
                    tokens: tuple[int, ...] = ()
                    ancestors: tuple[tuple[int, ...], ...] = ()
                    ends: tuple[tuple[bool, ...], ...] = ()
                    for s, part in zip(rule.rhs, parts, strict=True):
                        tokens += part.tokens
                        ancestors += tuple((position[s.name], *row) for row in part.ancestors)
                        ends += tuple((i == len(part.tokens) - 1, *row) for i, row in enumerate(part.ends))
                    prob = rule.prob * math.prod(p.prob for p in parts)
                    found[lhs].append(_Subtree(prob, tokens, ancestors, ends))
    return found


def _cut_level(g: Grammar) -> int:
    """The level nearest the root whose symbols, and all below, have at most MAX_SUBTREES subtrees each."""
    count: dict[str, int] = {}
    cut = g.depth
    for k in range(g.depth, -1, -1):
        for lhs in g.levels[k]:
            count[lhs] = sum(math.prod(1 if s.terminal else count[s.name] for s in r.rhs) for r in g.rules[lhs])
        if k < g.depth and max(count[lhs] for lhs in g.levels[k]) > MAX_SUBTREES:
            break
        cut = k
    return cut


def _level(rules: list[list[tuple[float, tuple[int, ...]]]]) -> _Level:
    """Tables for one level from, per symbol, its (probability, children) alternatives."""
    cum = np.ones((max(map(len, rules)), len(rules)))
    for i, alternatives in enumerate(rules):
        c = np.cumsum([p for p, _ in alternatives])
        cum[: len(alternatives), i] = c / c[-1]
    flat = [children for alternatives in rules for _, children in alternatives]
    rhs = np.full((len(flat), max(map(len, flat))), -1, dtype=np.int64)
    for i, children in enumerate(flat):
        rhs[i, : len(children)] = children
    return _Level(cum[:-1], np.cumsum([0] + [len(a) for a in rules[:-1]]), (rhs >= 0).sum(axis=1), rhs)


def _plan(g: Grammar) -> _Plan:
    if not g.is_layered:
        raise GrammarError(
            [f"the fast sampler needs a layered grammar (root '{g.root}' is not); use sample_sentences_recursive"]
        )
    cut = _cut_level(g)
    levels = []
    for k in range(cut):
        position = {name: i for i, name in enumerate(g.levels[k + 1])}
        levels.append(
            _level([[(r.prob, tuple(position[s.name] for s in r.rhs)) for r in g.rules[lhs]] for lhs in g.levels[k]])
        )
    found = _subtrees(g, cut)
    levels.append(_level([[(t.prob, t.tokens) for t in found[lhs]] for lhs in g.levels[cut]]))
    flat = [t for lhs in g.levels[cut] for t in found[lhs]]
    shape = (g.depth - cut, len(flat), levels[-1].rhs.shape[1])
    below_ancestors, below_ends = np.full(shape, -1, dtype=np.int64), np.zeros(shape, dtype=bool)
    for i, t in enumerate(flat):
        below_ancestors[:, i, : len(t.tokens)] = np.array(t.ancestors, dtype=np.int64).reshape(len(t.tokens), -1).T
        below_ends[:, i, : len(t.tokens)] = np.array(t.ends, dtype=bool).reshape(len(t.tokens), -1).T
    return _Plan(levels, below_ancestors, below_ends)


def _expand(level: _Level, symbols: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one rule per node; return all children in order, the cumulative child counts, the rules."""
    rule = level.first_rule[symbols]
    if len(level.cum):
        u = rng.random(symbols.size)
        for cum in level.cum:
            rule += u >= cum[symbols]
    children = np.take(level.rhs, rule, axis=0)
    return children[children >= 0], np.cumsum(level.rhs_len[rule]), rule


def _grow(plan: _Plan, n: int, rng: np.random.Generator) -> _Forest:
    """Expand n roots level by level over the whole batch."""
    symbols, ends = [np.zeros(n, dtype=np.int64)], []
    for level in plan.levels:
        children, level_ends, rule = _expand(level, symbols[-1], rng)
        symbols.append(children)
        ends.append(level_ends)
    return _Forest(symbols, ends, rule)


def _select(forest: _Forest, keep: np.ndarray) -> _Forest:
    """The sentences where ``keep`` is True."""
    masks = [np.repeat(keep, np.diff(last, prepend=-1)) for last in forest.last_nodes()]
    return _Forest(
        [s[m] for s, m in zip(forest.symbols, masks, strict=True)],
        [np.cumsum(np.diff(e, prepend=0)[m]) for e, m in zip(forest.ends, masks[:-1], strict=True)],
        forest.subtrees[masks[-2]],
    )


def _concat(forests: list[_Forest]) -> _Forest:
    """The sentences of several forests, in order."""
    symbols = [np.concatenate(parts) for parts in zip(*(f.symbols for f in forests), strict=True)]
    counts = [[np.diff(e, prepend=0) for e in parts] for parts in zip(*(f.ends for f in forests), strict=True)]
    subtrees = np.concatenate([f.subtrees for f in forests])
    return _Forest(symbols, [np.cumsum(np.concatenate(c)) for c in counts], subtrees)


def _to_sample(plan: _Plan, forest: _Forest, width: int, trees: bool) -> Sample:
    """Padded arrays; trees are filled level by level into level-major buffers, returned as views."""
    n, cut = forest.symbols[0].size, len(forest.ends) - 1
    depth = cut + plan.below_ancestors.shape[0]
    last_nodes = forest.last_nodes()
    lengths = np.diff(last_nodes[-1], prepend=-1)
    valid = (np.arange(width) < lengths[:, None]).ravel()
    tokens = np.full(n * width, -1, dtype=np.int64)
    tokens[valid] = forest.symbols[-1]
    if not trees:
        return Sample(tokens.reshape(n, width), lengths, None, None)
    shift = np.arange(n) * width - (np.cumsum(lengths) - lengths)  # token index -> padded index
    ancestors = np.full((depth, n * width), -1, dtype=np.int64)
    boundaries = np.zeros((depth, n * width), dtype=bool)
    last = forest.ends[cut] - 1  # index of the last token under each node of level k
    for k in range(cut, 0, -1):
        if k < cut:
            last = last[forest.ends[k] - 1]
        ancestors[k - 1][valid] = np.repeat(forest.symbols[k], np.diff(last, prepend=-1))
        boundaries[k - 1][last + np.repeat(shift, np.diff(last_nodes[k], prepend=-1))] = True
    present = np.take(plan.levels[-1].rhs, forest.subtrees, axis=0) >= 0
    for j in range(depth - cut):
        ancestors[cut + j][valid] = np.take(plan.below_ancestors[j], forest.subtrees, axis=0)[present]
        boundaries[cut + j][valid] = np.take(plan.below_ends[j], forest.subtrees, axis=0)[present]
    return Sample(
        tokens.reshape(n, width),
        lengths,
        np.moveaxis(ancestors.reshape(depth, n, width), 0, -1),
        np.moveaxis(boundaries.reshape(depth, n, width), 0, -1),
    )


def sample_sentences(g: Grammar, n: int, seed: int, max_len: int | None = None, trees: bool = True) -> Sample:
    """Draw n sentences of a layered grammar with their parse trees, vectorized level by level.

    Deterministic in (grammar, n, seed, max_len). Rows are padded to the longest sentence, or to
    ``max_len`` when given: then sentences longer than ``max_len`` are dropped and replaced by fresh
    draws, in batches sized by the exact probability of fitting (a sample of the grammar conditioned
    on length <= max_len). ``trees=False`` skips the parse trees (tokens are the same). The tree
    arrays are views of level-major buffers, so ``ancestors[..., k]`` is contiguous.
    """
    plan = _plan(g)
    rng = np.random.default_rng(seed)
    if max_len is None:
        forest = _grow(plan, n, rng)
        return _to_sample(plan, forest, int(np.diff(forest.last_nodes()[-1], prepend=-1).max(initial=0)), trees)
    fit = float(length_distribution(g, max_len).sum())
    if fit <= 0.0:
        raise ValueError(f"no sentence of this grammar has length <= {max_len}")
    parts: list[_Forest] = []
    have = 0
    while have < n or not parts:
        need = n - have
        forest = _grow(plan, math.ceil(need / fit * 1.1) + 8, rng)
        keep = np.diff(forest.last_nodes()[-1], prepend=-1) <= max_len
        parts.append(_select(forest, keep & (np.cumsum(keep) <= need)))
        have += parts[-1].symbols[0].size
    return _to_sample(plan, _concat(parts), max_len, trees)


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
