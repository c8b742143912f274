"""Sentence samplers: a vectorized one for layered grammars that returns the parse trees, and a
plain recursive reference sampler for any grammar.

The fast sampler expands the whole batch one level at a time (one rule draw per node, children laid
out with NumPy gathers and compaction). The bottom levels are drawn in one step: every complete
subtree of a symbol at the "cut" level is enumerated once with its probability (while each symbol
has at most MAX_SUBTREES of them), which samples exactly the same distribution.

Output is built straight into the padded arrays, a chunk of rows at a time so that temporaries stay
in cache, with few passes over the big arrays. Every position of a subtree carries one small packed
unsigned code (token id + 1 and, below the cut, ancestor index + 1 and span end), so the tokens and
the lower tree levels come out of one gather + compaction + padding of those codes and one to three
bit operations per field. The ancestors down to the cut are packed the same way into per-node codes,
built level by level and repeated over each node's tokens by a single ``np.repeat``; their span ends
take one scatter per level. Rule draws among many alternatives use an exact bucket lookup table
instead of one comparison per alternative.
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

    ``tokens[i, t]`` (int64 [n, L]) is a terminal id; ``ancestors[i, t, k - 1]`` ([n, L, depth]) is
    the index, within ``grammar.levels[k]``, of the level-k ancestor of token t (k = 1..depth);
    ``boundaries[i, t, k - 1]`` (bool [n, L, depth]) is True where token t ends that ancestor's span.
    ``ancestors`` has the smallest signed integer dtype that holds every level's symbol count:
    int8 while each level has at most 127 symbols (then int16, int32, int64); cast it if you need
    int64. Both tree arrays are views of level-major C-contiguous buffers ([depth, n, L]), so
    ``ancestors[..., k]`` is contiguous. Trees are None when sampled with ``trees=False``.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    ancestors: np.ndarray | None
    boundaries: np.ndarray | None


MAX_SUBTREES = 16  # bottom levels are drawn whole while no symbol has more complete subtrees
_BUCKETS = 4096  # rule draws look up (symbol, floor(u * buckets)) in a table when that decides the rule
_BUCKET_ENTRIES = 1 << 16  # ... with at most this many table entries per level
_CHUNK_TOKENS = 1 << 19  # output is built this many padded positions at a time (temporaries stay in cache)


@dataclass(frozen=True)
class _Level:
    """Rule tables of one level; children index the next level (terminal ids below the cut).

    ``lookup[symbol * buckets + floor(u * buckets)]`` is the rule drawn with uniform u whenever all u
    in that bucket draw the same rule, else -1 (then the cumulative table decides); None when the
    level has at most two rules per symbol (the direct comparison is as fast)."""

    cum: np.ndarray  # [max rules - 1, symbols] cumulative rule probabilities, padded with 1
    first_rule: np.ndarray  # [symbols]
    rhs_len: np.ndarray  # [rules]
    rhs: np.ndarray  # [rules, max rhs length] children, padded with -1
    lookup: np.ndarray | None
    buckets: int


class _Field(NamedTuple):
    """A bit field of the packed subtree codes: ``(words[word] >> shift) & (2**bits - 1)``."""

    word: int
    shift: int
    bits: int


@dataclass(frozen=True)
class _Codes:
    """Per subtree position, packed unsigned codes (one table [subtrees, max length] per word; 0 is
    padding): the token id + 1 and, below the cut, each level's ancestor index + 1 and span end."""

    tables: list[np.ndarray]
    token: _Field
    ancestors: list[_Field]
    ends: list[_Field]


@dataclass(frozen=True)
class _Plan:
    """Sampling tables: ``levels[k]`` expands level k; at the last (cut) level the "rules" are whole
    subtrees of each symbol, whose positions are described by ``tokens`` (token ids only) or
    ``trees`` (token ids and the tree levels below the cut). ``upper[k - 1]`` is the field of the
    level-k ancestor index + 1 (k = 1..cut) in per-node codes of dtypes ``upper_dtypes``."""

    levels: list[_Level]
    tokens: _Codes
    trees: _Codes
    upper: list[_Field]
    upper_dtypes: list[np.dtype]
    ancestor_dtype: np.dtype


class _Subtree(NamedTuple):
    prob: float
    tokens: tuple[int, ...]
    ancestors: tuple[tuple[int, ...], ...]  # per token, its ancestors' indices at the levels below
    ends: tuple[tuple[bool, ...], ...]  # per token, whether it ends those ancestors' spans


@dataclass(frozen=True)
class _Forest:
    """Derivations of a batch, level by level down to the cut; nodes in sentence then left-to-right
    order: ``symbols[k]`` per level-k node (k = 0..cut); ``ends[k]`` = cumulative child counts of the
    level-k nodes (node i's children are ``symbols[k + 1][ends[k][i - 1]:ends[k][i]]``; at the cut
    level: cumulative token counts); ``subtrees`` = the subtree drawn for each node of the cut level."""

    symbols: list[np.ndarray]
    ends: list[np.ndarray]
    subtrees: np.ndarray

    def last_nodes(self) -> list[np.ndarray]:
        """Per level (then for the tokens), the index of each sentence's last node."""
        last = [np.arange(self.symbols[0].size)]
        for ends in self.ends:
            last.append(ends[last[-1]] - 1)
        return last

    def rows(self, last_nodes: list[np.ndarray], start: int, stop: int) -> _Forest:
        """Sentences start..stop - 1 (``last_nodes`` as given by ``last_nodes()``), as views."""
        first = [int(last[start - 1]) + 1 if start else 0 for last in last_nodes]
        end = [int(last[stop - 1]) + 1 for last in last_nodes]
        return _Forest(
            [s[a:b] for s, a, b in zip(self.symbols, first, end, strict=False)],
            [e[a:b] - c for e, a, b, c in zip(self.ends, first, end, first[1:], strict=False)],
            self.subtrees[first[-2] : end[-2]],
        )


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


def _lookup(cum: np.ndarray, first_rule: np.ndarray) -> tuple[np.ndarray | None, int]:
    """The bucket table of a level (see _Level): exact, as every bucket edge b / buckets is a float."""
    symbols = cum.shape[1]
    buckets = min(_BUCKETS, 1 << max(0, (_BUCKET_ENTRIES // symbols).bit_length() - 1))
    if len(cum) < 2 or buckets < 64:
        return None, 0
    edges = np.arange(buckets + 1) / buckets
    low = np.zeros((symbols, buckets), dtype=np.int64)  # thresholds <= every u of the bucket
    high = np.zeros((symbols, buckets), dtype=np.int64)  # thresholds <= some u of the bucket
    for row in cum:
        low += row[:, None] <= edges[None, :-1]
        high += row[:, None] < edges[None, 1:]
    return np.where(low == high, first_rule[:, None] + low, -1).ravel(), buckets


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
    first_rule = np.cumsum([0] + [len(a) for a in rules[:-1]])
    lookup, buckets = _lookup(cum[:-1], first_rule)
    return _Level(cum[:-1], first_rule, (rhs >= 0).sum(axis=1), rhs, lookup, buckets)


def _pack(bits: list[int]) -> tuple[list[_Field], list[np.dtype]]:
    """Lay out bit fields in as few words of at most 64 bits as first fit allows, in order; each word
    gets the smallest unsigned dtype that holds it."""
    used: list[int] = []
    fields = []
    for b in bits:
        word = next((i for i, u in enumerate(used) if u + b <= 64), len(used))
        if word == len(used):
            used.append(0)
        fields.append(_Field(word, used[word], b))
        used[word] += b
    unsigned = [np.dtype(d) for d in (np.uint8, np.uint16, np.uint32, np.uint64)]
    return fields, [next(d for d in unsigned if 8 * d.itemsize >= u) for u in used]


def _codes(values: list[np.ndarray], bits: list[int]) -> tuple[list[np.ndarray], list[_Field]]:
    """Packed code tables of fields given as non-negative value tables (all [subtrees, max length])."""
    fields, dtypes = _pack(bits)
    tables = []
    for word, dtype in enumerate(dtypes):
        table = np.zeros(values[0].shape, dtype=np.uint64)
        for f, v in zip(fields, values, strict=True):
            if f.word == word:
                table |= v.astype(np.uint64) << np.uint64(f.shift)
        tables.append(table.astype(dtype))
    return tables, fields


def _plan(g: Grammar) -> _Plan:
    if not g.is_layered:
        raise GrammarError(
            [f"the fast sampler needs a layered grammar, where every rule of a level-k symbol produces only "
             f"level-(k+1) symbols and the last level only terminals, as in the cfg3 family (root '{g.root}' "
             f"is not); from Python, sample_sentences_recursive samples any grammar"]
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
    below, shape = g.depth - cut, (len(flat), levels[-1].rhs.shape[1])
    token = np.zeros(shape, dtype=np.int64)  # token id + 1, 0 on padding
    ancestors = np.zeros((below, *shape), dtype=np.int64)  # ancestor index + 1
    ends = np.zeros((below, *shape), dtype=np.int64)
    for i, t in enumerate(flat):
        token[i, : len(t.tokens)] = np.array(t.tokens) + 1
        ancestors[:, i, : len(t.tokens)] = np.array(t.ancestors, dtype=np.int64).reshape(len(t.tokens), -1).T + 1
        ends[:, i, : len(t.tokens)] = np.array(t.ends, dtype=np.int64).reshape(len(t.tokens), -1).T
    token_bits = len(g.terminals).bit_length()
    tables, (token_field,) = _codes([token], [token_bits])
    tokens = _Codes(tables, token_field, [], [])
    values, bits = [token], [token_bits]
    for j in range(below):
        values += [ancestors[j], ends[j]]
        bits += [len(g.levels[cut + 1 + j]).bit_length(), 1]
    tables, fields = _codes(values, bits)
    trees = _Codes(tables, fields[0], fields[1::2], fields[2::2])
    upper, upper_dtypes = _pack([len(g.levels[k]).bit_length() for k in range(1, cut + 1)])
    most = max((len(level) for level in g.levels[1:]), default=0)
    dtype = next(np.dtype(d) for d in (np.int8, np.int16, np.int32, np.int64) if np.iinfo(d).max >= most)
    return _Plan(levels, tokens, trees, upper, upper_dtypes, dtype)


def _draw(level: _Level, symbols: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One rule per node: rule ``first_rule[s] + #{j : u >= cum[j, s]}`` with one uniform u per node."""
    if not len(level.cum):
        return level.first_rule[symbols]
    u = rng.random(symbols.size)
    if level.lookup is None:
        rule = level.first_rule[symbols]
        for cum in level.cum:
            rule += u >= cum[symbols]
        return rule
    index = symbols * level.buckets
    index += (u * level.buckets).astype(np.intp)  # exact: buckets is a power of two
    rule = level.lookup[index]
    odd = np.flatnonzero(rule < 0)  # a threshold falls inside the bucket: compare exactly
    if odd.size:
        s, v = symbols[odd], u[odd]
        exact = level.first_rule[s]
        for cum in level.cum:
            exact += v >= cum[s]
        rule[odd] = exact
    return rule


def _grow(plan: _Plan, n: int, rng: np.random.Generator) -> _Forest:
    """Expand n roots level by level over the whole batch, then draw a subtree per cut-level node."""
    symbols, ends = [np.zeros(n, dtype=np.int64)], []
    for level in plan.levels[:-1]:
        rule = _draw(level, symbols[-1], rng)
        children = np.take(level.rhs, rule, axis=0)
        symbols.append(children[children >= 0])
        ends.append(np.cumsum(level.rhs_len[rule]))
    subtrees = _draw(plan.levels[-1], symbols[-1], rng)
    ends.append(np.cumsum(plan.levels[-1].rhs_len[subtrees]))
    return _Forest(symbols, ends, subtrees)


def _select(forest: _Forest, keep: np.ndarray) -> _Forest:
    """The sentences where ``keep`` is True."""
    masks = [np.repeat(keep, np.diff(last, prepend=-1)) for last in forest.last_nodes()[:-1]]
    return _Forest(
        [s[m] for s, m in zip(forest.symbols, masks, strict=True)],
        [np.cumsum(np.diff(e, prepend=0)[m]) for e, m in zip(forest.ends, masks, strict=True)],
        forest.subtrees[masks[-1]],
    )


def _concat(forests: list[_Forest]) -> _Forest:
    """The sentences of several forests, in order."""
    symbols = [np.concatenate(parts) for parts in zip(*(f.symbols for f in forests), strict=True)]
    counts = [[np.diff(e, prepend=0) for e in parts] for parts in zip(*(f.ends for f in forests), strict=True)]
    subtrees = np.concatenate([f.subtrees for f in forests])
    return _Forest(symbols, [np.cumsum(np.concatenate(c)) for c in counts], subtrees)


class _Words:
    """Packed codes for every padded token position (0 on padding), with field decoders that work
    in the words' own unsigned dtypes (one scratch buffer per dtype)."""

    def __init__(self, words: list[np.ndarray], scratch: dict[np.dtype, np.ndarray]) -> None:
        self.words = words
        self.scratch = scratch  # reused across chunks

    @classmethod
    def of_subtrees(cls, codes: _Codes, subtrees: np.ndarray, valid: np.ndarray, scratch: dict) -> _Words:
        """The subtree codes of every token, by one gather + compaction + padding per word."""
        present = None
        words = []
        for table in codes.tables:
            grid = np.take(table, subtrees, axis=0).ravel()
            if present is None:
                present = grid != 0  # token id + 1 > 0 exactly on the subtrees' tokens
            padded = np.zeros(valid.size, dtype=table.dtype)
            padded[valid] = grid[present]
            words.append(padded)
        return cls(words, scratch)

    @classmethod
    def of_nodes(cls, plan: _Plan, forest: _Forest, lengths: np.ndarray, width: int, scratch: dict) -> _Words:
        """The ancestors down to the cut of every token: per word, the fields are or-ed into codes
        of the nodes level by level, then the cut-level codes are repeated over their tokens, with
        a padding node (code 0) inserted after each sentence."""
        n, cut = lengths.size, len(forest.ends) - 1
        pads = forest.last_nodes()[cut] + 1 + np.arange(n)  # their indices among the cut-level nodes
        real = np.ones(forest.subtrees.size + n, dtype=bool)
        real[pads] = False
        counts = np.empty(real.size, dtype=np.intp)  # tokens per node
        counts[real] = np.diff(forest.ends[cut], prepend=0)
        counts[pads] = width - lengths
        words = []
        for word, dtype in enumerate(plan.upper_dtypes):
            code = np.zeros(n, dtype=dtype)
            for k, f in enumerate(plan.upper, start=1):
                code = np.repeat(code, np.diff(forest.ends[k - 1], prepend=0))  # one per level-k node
                if f.word == word:
                    code |= (forest.symbols[k].astype(dtype) + dtype.type(1)) << dtype.type(f.shift)
            padded = np.zeros(real.size, dtype=dtype)
            padded[real] = code
            words.append(np.repeat(padded, counts))
        return cls(words, scratch)

    def _tmp(self, like: np.ndarray) -> np.ndarray:
        buffer = self.scratch.get(like.dtype)
        if buffer is None or buffer.size < like.size:
            buffer = self.scratch[like.dtype] = np.empty_like(like)
        return buffer[: like.size]

    def value(self, f: _Field, out: np.ndarray | None = None) -> np.ndarray:
        """The field's values, in the words' dtype (in ``out``, viewed so, when given)."""
        words = self.words[f.word]
        top = f.shift + f.bits == 8 * words.itemsize
        if f.shift == 0 and top:
            return words
        out = self._tmp(words) if out is None else out.view(words.dtype)
        if f.shift:
            np.right_shift(words, f.shift, out=out)
        if not top:
            np.bitwise_and(out if f.shift else words, (1 << f.bits) - 1, out=out)
        return out

    def minus_one(self, f: _Field, out: np.ndarray) -> None:
        """``out[:] = field - 1`` (ids are stored + 1, so padding becomes -1)."""
        v = self.value(f)
        if f.bits < 8 * v.itemsize:  # the values fit the signed type of the word's width: compute
            np.subtract(v.view(f"i{v.itemsize}"), 1, out=out, casting="unsafe")  # narrow, then cast
        else:
            np.subtract(v, 1, out=out, dtype=out.dtype, casting="unsafe")

    def flag(self, f: _Field, out: np.ndarray) -> None:
        """``out[:] = field`` for a one-bit field, written as 0 / 1 bytes into the bool array."""
        target = out.view(np.uint8)
        if self.words[f.word].itemsize == 1:
            self.value(f, target)  # a one-bit field is never a whole byte: this writes target
        else:
            np.copyto(target, self.value(f), casting="unsafe")


def _to_sample(plan: _Plan, forest: _Forest, width: int, trees: bool) -> Sample:
    """Padded arrays; trees go level by level into level-major buffers, returned as views. Built in
    chunks of about _CHUNK_TOKENS padded positions, so that the temporaries stay in cache."""
    n, depth = forest.symbols[0].size, len(forest.ends) - 1 + len(plan.trees.ancestors)
    last_nodes = forest.last_nodes()
    lengths = np.diff(last_nodes[-1], prepend=-1)
    tokens = np.empty((n, width), dtype=np.int64)
    ancestors = np.empty((depth, n, width), dtype=plan.ancestor_dtype) if trees else None
    boundaries = np.zeros((depth, n, width), dtype=bool) if trees else None
    rows = max(1, _CHUNK_TOKENS // max(width, 1))
    scratch: dict[np.dtype, np.ndarray] = {}
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        part = forest.rows(last_nodes, start, stop)
        if ancestors is None or boundaries is None:
            _fill(plan, part, lengths[start:stop], width, tokens[start:stop], None, None, scratch)
        else:
            trees_out = ancestors[:, start:stop], boundaries[:, start:stop]
            _fill(plan, part, lengths[start:stop], width, tokens[start:stop], *trees_out, scratch)
    if ancestors is None or boundaries is None:
        return Sample(tokens, lengths, None, None)
    return Sample(tokens, lengths, np.moveaxis(ancestors, 0, -1), np.moveaxis(boundaries, 0, -1))


def _fill(
    plan: _Plan,
    forest: _Forest,
    lengths: np.ndarray,
    width: int,
    tokens: np.ndarray,
    ancestors: np.ndarray | None,
    boundaries: np.ndarray | None,
    scratch: dict[np.dtype, np.ndarray],
) -> None:
    """Write the rows of one chunk: tokens [n, width]; trees, when given, [depth, n, width] views."""
    n, cut = lengths.size, len(forest.ends) - 1
    valid = np.repeat(np.tile([True, False], n), np.column_stack([lengths, width - lengths]).ravel())
    codes = plan.tokens if ancestors is None else plan.trees
    leaves = _Words.of_subtrees(codes, forest.subtrees, valid, scratch)
    leaves.minus_one(codes.token, tokens.reshape(-1))
    if ancestors is None or boundaries is None:
        return
    # levels 1..cut: ancestors from node codes; span ends: the last token of each node, in padded
    # coordinates, found from the last token of its last child
    if cut:
        nodes = _Words.of_nodes(plan, forest, lengths, width, scratch)
        last_nodes = forest.last_nodes()
        shift = np.arange(n) * width - (np.cumsum(lengths) - lengths)  # token index -> padded index
        last = forest.ends[cut] - 1 + np.repeat(shift, np.diff(last_nodes[cut], prepend=-1))
        for k in range(cut, 0, -1):
            if k < cut:
                last = last[forest.ends[k] - 1]
            nodes.minus_one(plan.upper[k - 1], ancestors[k - 1].reshape(-1))
            boundaries[k - 1].reshape(-1)[last] = True
    # levels below the cut: fields of the subtree codes
    for j, (ancestor, end) in enumerate(zip(codes.ancestors, codes.ends, strict=True)):
        leaves.minus_one(ancestor, ancestors[cut + j].reshape(-1))
        leaves.flag(end, boundaries[cut + j].reshape(-1))


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


def sample_sentences_recursive(g: Grammar, n: int, seed: int, max_len: int = 1_000_000) -> list[list[int]]:
    """Plain reference sampler for any grammar (tests and benchmarks): `n` sentences as token-id lists.

    Expands depth first, left to right, with an explicit stack (no Python recursion, so grammars whose
    sentences are thousands of tokens long work). Raises ValueError when a sentence exceeds `max_len`
    terminals (a grammar that almost never terminates would otherwise run out of memory).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    rng = random.Random(seed)
    ids = {t: i for i, t in enumerate(g.terminals)}
    options = {
        lhs: ([r.rhs for r in rs], list(itertools.accumulate(r.prob for r in rs))) for lhs, rs in g.rules.items()
    }
    sentences = []
    for _ in range(n):
        out: list[int] = []
        stack = [Symbol(g.root, False)]
        while stack:
            symbol = stack.pop()
            if symbol.terminal:
                out.append(ids[symbol.name])
                if len(out) > max_len:
                    raise ValueError(f"a sentence exceeded max_len={max_len} terminals (a grammar that rarely "
                                     "terminates?); raise max_len or change the rule probabilities")
                continue
            rhss, cum = options[symbol.name]
            stack.extend(reversed(rng.choices(rhss, cum_weights=cum)[0]))
        sentences.append(out)
    return sentences
