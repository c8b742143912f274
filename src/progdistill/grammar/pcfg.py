"""Probabilistic context-free grammars: data structure, text format, generator, exact length law.

Text format, one production per line (blank lines and ``#`` comments allowed)::

    LHS -> SYM SYM [SYM ...] [prob]

Non-terminals are bare lower-case names, terminals are quoted (``'a'``), ``s`` is the default root.
A missing probability means "uniform over the rules of that LHS".
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import NamedTuple

import numpy as np

PROB_TOLERANCE = 1e-6

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_TERMINAL = re.compile(r"'([^'\s]+)'")
_COMMENT = re.compile(r"('[^'\s]*')|#.*")
_RULE = re.compile(r"(?P<lhs>\S+?)\s*->\s*(?P<rhs>[^\[\]]*?)\s*(?:\[(?P<prob>[^\[\]]*)\])?")


class GrammarError(ValueError):
    """Invalid grammar; the message lists every problem as ``source:line: reason``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __reduce__(self) -> tuple[type[GrammarError], tuple[list[str]]]:
        return GrammarError, (self.problems,)


class Symbol(NamedTuple):
    """A right-hand-side symbol: a non-terminal name or a terminal (written quoted)."""

    name: str
    terminal: bool

    def __str__(self) -> str:
        return f"'{self.name}'" if self.terminal else self.name


@dataclass(frozen=True)
class Rule:
    """One production ``lhs -> rhs`` with its probability."""

    lhs: str
    rhs: tuple[Symbol, ...]
    prob: float


@dataclass(frozen=True)
class Grammar:
    """A validated PCFG.

    ``rules`` maps each non-terminal to its productions (in definition order); ``levels[k]`` lists,
    sorted, the non-terminals whose shortest derivation from the root takes ``k`` steps;
    ``terminals`` are sorted and a terminal's token id is its index there.
    """

    root: str
    rules: dict[str, tuple[Rule, ...]]
    nonterminals: tuple[str, ...]
    terminals: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]

    @property
    def depth(self) -> int:
        """Number of non-terminal levels below the root (pre-terminal level included)."""
        return len(self.levels) - 1

    @property
    def is_layered(self) -> bool:
        """Every level-k rule produces only level-(k+1) symbols; the last level only terminals."""
        for k, level in enumerate(self.levels):
            below = {Symbol(name, False) for name in self.levels[k + 1]} if k < self.depth else None
            for rule in (r for lhs in level for r in self.rules[lhs]):
                if not all(s.terminal if below is None else s in below for s in rule.rhs):
                    return False
        return True


class _Entry(NamedTuple):
    lhs: str
    rhs: tuple[Symbol, ...]
    prob: float | None
    line: int | None


def _parse_symbol(token: str) -> Symbol | None:
    if m := _TERMINAL.fullmatch(token):
        return Symbol(m.group(1), True)
    return Symbol(token, False) if _NAME.fullmatch(token) else None


def _parse_line(raw: str, line: int, source: str) -> tuple[_Entry | None, list[tuple[int, str]]]:
    """Parse one line: (entry, or None for blank/comment/bad lines; located problems)."""
    text = _COMMENT.sub(lambda m: m.group(1) or "", raw).strip()
    if not text:
        return None, []
    where = f"{source}:{line}: malformed rule"
    m = _RULE.fullmatch(text)
    if m is None:
        return None, [(line, f"{where} {text!r} (expected `LHS -> SYM ... [prob]`)")]
    problems = []
    if not _NAME.fullmatch(m["lhs"]):
        problems.append(f"{where}: left-hand side {m['lhs']!r} is not a lower-case name")
    tokens = m["rhs"].split()
    if not tokens:
        problems.append(f"{where}: empty right-hand side")
    symbols = [_parse_symbol(t) for t in tokens]
    problems += [
        f"{where}: bad symbol {t!r} (non-terminals are lower-case names, terminals are quoted like 'a')"
        for t, sym in zip(tokens, symbols, strict=True)
        if sym is None
    ]
    prob = None
    if m["prob"] is not None:
        try:
            prob = float(m["prob"])
        except ValueError:
            problems.append(f"{where}: probability {m['prob']!r} is not a number")
        else:
            if not 0.0 < prob <= 1.0:
                problems.append(f"{where}: probability {m['prob']} is not in (0, 1]")
    if problems:
        return None, [(line, p) for p in problems]
    return _Entry(m["lhs"], tuple(s for s in symbols if s is not None), prob, line), []


def _bfs_levels(root: str, children: dict[str, list[str]]) -> list[list[str]]:
    """Non-terminals grouped by shortest distance from the root, each level sorted."""
    seen = {root}
    levels = [[root]]
    while True:
        nxt = sorted({c for lhs in levels[-1] for c in children[lhs] if c not in seen})
        if not nxt:
            return levels
        seen.update(nxt)
        levels.append(nxt)


def _check(entries: Sequence[_Entry], root: str, source: str) -> list[tuple[int, str]]:
    """Problems of a rule set as (line, message); line 0 for whole-grammar problems."""
    if not entries:
        return [(0, f"{source}: empty grammar (no rules)")]
    by_lhs: dict[str, list[_Entry]] = {}
    for e in entries:
        by_lhs.setdefault(e.lhs, []).append(e)
    problems: list[tuple[int, str]] = []

    def report(line: int | None, reason: str) -> None:
        where = source if line is None else f"{source}:{line}"
        problems.append((line or 0, f"{where}: {reason}"))

    if root not in by_lhs:
        report(None, f"missing root: root symbol '{root}' has no rules")
    for e in entries:
        for name in dict.fromkeys(s.name for s in e.rhs if not s.terminal and s.name not in by_lhs):
            report(e.line, f"undefined symbol '{name}' (used but has no rules)")
    for lhs, group in by_lhs.items():
        seen: set[tuple[Symbol, ...]] = set()
        for e in group:
            if e.rhs in seen:
                report(e.line, f"duplicate rule for '{lhs}'")
            seen.add(e.rhs)
        given = [e.prob for e in group if e.prob is not None]
        if given and len(given) != len(group):
            report(group[0].line, f"rules of '{lhs}' mix given and missing probabilities")
        elif given and abs(math.fsum(given) - 1.0) > PROB_TOLERANCE:
            report(group[0].line, f"probabilities of '{lhs}' sum to {math.fsum(given):.9g}, not 1")
    if root in by_lhs:
        children = {
            lhs: [s.name for e in group for s in e.rhs if s.name in by_lhs and not s.terminal]
            for lhs, group in by_lhs.items()
        }
        reachable = {name for level in _bfs_levels(root, children) for name in level}
        for lhs, group in by_lhs.items():
            if lhs not in reachable:
                report(group[0].line, f"unreachable symbol '{lhs}' (not derivable from root '{root}')")
    return problems


def _raise(problems: list[tuple[int, str]]) -> None:
    raise GrammarError([msg for _, msg in sorted(problems, key=lambda p: p[0])])


def _assemble(entries: Sequence[_Entry], root: str, source: str) -> Grammar:
    """Validate entries and build the Grammar (levels, sorted terminals, explicit probabilities)."""
    problems = _check(entries, root, source)
    if problems:
        _raise(problems)
    grouped: dict[str, list[_Entry]] = {}
    for e in entries:
        grouped.setdefault(e.lhs, []).append(e)
    rules = {
        lhs: tuple(Rule(lhs, e.rhs, 1.0 / len(group) if e.prob is None else e.prob) for e in group)
        for lhs, group in grouped.items()
    }
    children = {lhs: [s.name for r in rs for s in r.rhs if not s.terminal] for lhs, rs in rules.items()}
    levels = _bfs_levels(root, children)
    terminals = sorted({s.name for rs in rules.values() for r in rs for s in r.rhs if s.terminal})
    return Grammar(
        root=root,
        rules=rules,
        nonterminals=tuple(name for level in levels for name in level),
        terminals=tuple(terminals),
        levels=tuple(tuple(level) for level in levels),
    )


def parse_grammar(text: str, source: str = "<string>", root: str = "s") -> Grammar:
    """Parse the text format; raise GrammarError listing every problem with ``source:line``."""
    entries, problems = [], []
    for line, raw in enumerate(text.splitlines(), start=1):
        entry, bad = _parse_line(raw, line, source)
        problems += bad
        if entry is not None:
            entries.append(entry)
    if problems:
        _raise(problems + (_check(entries, root, source) if entries else []))
    return _assemble(entries, root, source)


MAX_GRAMMAR_BYTES = 64 * 2**20  # a grammar is a few kB; this refuses /dev/zero and other endless inputs


def load_grammar(path: str | Path, root: str = "s") -> Grammar:
    """Read and parse a grammar file (UTF-8 text, at most MAX_GRAMMAR_BYTES).

    Raises GrammarError: a missing, unreadable, non-regular (a device, a FIFO), too large or non-UTF-8
    file (naming the line of the first bad byte), and every problem of the text (`parse_grammar`)."""
    p = Path(path)
    try:
        if p.exists() and not p.is_file():
            raise GrammarError([f"{path}: cannot read grammar file: not a regular file"])
        with open(p, "rb") as f:
            data = f.read(MAX_GRAMMAR_BYTES + 1)
    except OSError as exc:
        raise GrammarError([f"{path}: cannot read grammar file: {exc.strerror or exc}"]) from None
    if len(data) > MAX_GRAMMAR_BYTES:
        raise GrammarError([f"{path}: cannot read grammar file: larger than {MAX_GRAMMAR_BYTES // 2**20} MiB"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise GrammarError([f"{path}:{line}: cannot read grammar file: not UTF-8 text "
                            f"(byte {data[exc.start]:#04x})"]) from None
    return parse_grammar(text, source=str(path), root=root)


def _format_prob(p: float) -> str:
    short = f"{p:g}"
    return short if float(short) == p else repr(p)


def format_grammar(g: Grammar) -> str:
    """The grammar in the text format (parses back to an equal Grammar)."""
    lines = [
        f"{r.lhs} -> {' '.join(map(str, r.rhs))} [{_format_prob(r.prob)}]" for rules in g.rules.values() for r in rules
    ]
    return "\n".join(lines) + "\n"


def _draw_rules(
    rng: np.random.Generator, parents: int, children: int, rules: int, lengths: tuple[int, ...]
) -> list[list[tuple[int, ...]]]:
    """Distinct random right-hand sides (child indices) per parent, redrawn until all children are used."""
    for _ in range(1000):
        drawn: list[list[tuple[int, ...]]] = []
        for _ in range(parents):
            own: list[tuple[int, ...]] = []
            while len(own) < rules:
                rhs = tuple(int(c) for c in rng.integers(children, size=int(rng.choice(lengths))))
                if rhs not in own:
                    own.append(rhs)
            drawn.append(own)
        if len({c for own in drawn for rhs in own for c in rhs}) == children:
            return drawn
    raise ValueError("could not draw rules that use every symbol; use more rules or longer right-hand sides")


def generate_grammar(
    levels: int,
    symbols_per_level: int = 3,
    rules_per_symbol: int = 2,
    rhs_lengths: tuple[int, ...] = (2, 3),
    terminals: int = 3,
    seed: int = 0,
) -> Grammar:
    """A random layered grammar of the cfg3 family.

    Root ``s`` plus ``levels`` levels of ``symbols_per_level`` non-terminals named ``n<level>_<i>``;
    the last level are pre-terminals producing terminal strings. Each symbol gets ``rules_per_symbol``
    distinct rules of uniform probability, with right-hand-side lengths drawn from ``rhs_lengths``;
    every symbol and terminal is reachable. Deterministic in ``seed`` (NumPy PCG64).
    """
    lengths = tuple(sorted(set(rhs_lengths)))
    if levels < 1 or symbols_per_level < 1 or rules_per_symbol < 1 or terminals < 1:
        raise ValueError("levels, symbols_per_level, rules_per_symbol and terminals must be >= 1")
    if not lengths or lengths[0] < 1:
        raise ValueError("rhs_lengths must be positive")
    for k in {symbols_per_level, terminals}:
        if sum(k**n for n in lengths) < rules_per_symbol:
            raise ValueError(f"only {sum(k**n for n in lengths)} distinct right-hand sides exist over {k} symbols")
    if rules_per_symbol * lengths[-1] < symbols_per_level or (
        symbols_per_level * rules_per_symbol * lengths[-1] < terminals
    ):
        raise ValueError("the rules cannot reach every symbol of the next level; use more or longer rules")
    rng = np.random.default_rng(seed)
    width = len(str(symbols_per_level - 1))
    names = [["s"]] + [[f"n{k}_{i:0{width}d}" for i in range(symbols_per_level)] for k in range(1, levels + 1)]
    if terminals <= 26:
        terms = [chr(ord("a") + i) for i in range(terminals)]
    else:
        terms = [f"t{i:0{len(str(terminals - 1))}d}" for i in range(terminals)]
    entries = []
    for k, parents in enumerate(names):
        below = names[k + 1] if k < levels else terms
        drawn = _draw_rules(rng, len(parents), len(below), rules_per_symbol, lengths)
        for lhs, own in zip(parents, drawn, strict=True):
            for rhs in own:
                syms = tuple(Symbol(below[c], k == levels) for c in rhs)
                entries.append(_Entry(lhs, syms, 1.0 / rules_per_symbol, None))
    return _assemble(entries, "s", f"<generated levels={levels} seed={seed}>")


def truncate_grammar(g: Grammar, pre_terminal_level: int) -> Grammar:
    """Cut a layered grammar so that the symbols of ``levels[pre_terminal_level]`` are pre-terminals.

    Rules above that level are kept; each symbol of the level gets the single rule
    ``x -> 't' [1]`` where ``t`` is the terminal whose token id is x's index within its level;
    everything below is dropped (as a b c -> 'a' 'b' 'c' in cfg3b). Truncating cfg3b at level 4
    makes g h i the pre-terminals (g -> 'a', h -> 'b', i -> 'c'): sentences are the g/h/i
    sequences, median 37 tokens. Needs at least as many terminals as symbols in that level.
    """
    if not g.is_layered:
        raise GrammarError([f"truncate_grammar needs a layered grammar (root '{g.root}' is not)"])
    if not 0 <= pre_terminal_level <= g.depth:
        raise GrammarError([f"pre_terminal_level must be in [0, {g.depth}], got {pre_terminal_level}"])
    level = g.levels[pre_terminal_level]
    if len(level) > len(g.terminals):
        raise GrammarError(
            [f"level {pre_terminal_level} has {len(level)} symbols but there are only {len(g.terminals)} terminals"]
        )
    above = [r for names in g.levels[:pre_terminal_level] for lhs in names for r in g.rules[lhs]]
    entries = [_Entry(r.lhs, r.rhs, r.prob, None) for r in above]
    entries += [_Entry(lhs, (Symbol(g.terminals[i], True),), 1.0, None) for i, lhs in enumerate(level)]
    return _assemble(entries, g.root, f"<{g.root} truncated at level {pre_terminal_level}>")


def _bottom_up(g: Grammar) -> list[str]:
    """Non-terminals, children before parents; GrammarError for recursive grammars."""
    graph = {lhs: {s.name for r in rs for s in r.rhs if not s.terminal} for lhs, rs in g.rules.items()}
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise GrammarError([f"recursive grammar (cycle {cycle}): lengths need a non-recursive grammar"]) from None


def length_distribution(g: Grammar, max_len: int) -> np.ndarray:
    """Exact P(sentence length = k) for k = 0..max_len (mass of longer sentences is left out).

    Dynamic programming bottom-up: a symbol's law is the probability-weighted sum over its rules of
    the convolution of its children's laws, truncated at ``max_len``.
    """
    size = max_len + 1
    terminal = np.zeros(size)
    if size > 1:
        terminal[1] = 1.0
    law: dict[str, np.ndarray] = {}
    for lhs in _bottom_up(g):
        total = np.zeros(size)
        for rule in g.rules[lhs]:
            acc = np.zeros(size)
            acc[0] = 1.0
            for s in rule.rhs:
                acc = np.convolve(acc, terminal if s.terminal else law[s.name])[:size]
            total += rule.prob * acc
        law[lhs] = total
    return law[g.root]


def expected_length(g: Grammar) -> float:
    """Exact expected sentence length."""
    mean: dict[str, float] = {}
    for lhs in _bottom_up(g):
        mean[lhs] = math.fsum(r.prob * sum(1.0 if s.terminal else mean[s.name] for s in r.rhs) for r in g.rules[lhs])
    return mean[g.root]


@dataclass(frozen=True)
class LengthStats:
    """Summary of sampled sentence lengths."""

    median: float
    p1: float
    p99: float
    mean: float

    def __str__(self) -> str:
        return f"median {self.median:g} (p1 {self.p1:g}, p99 {self.p99:g}), mean {self.mean:.2f}"


def length_stats(sample_lengths: Sequence[int] | np.ndarray) -> LengthStats:
    """Median, 1st and 99th percentile and mean of sentence lengths."""
    x = np.asarray(sample_lengths, dtype=float)
    if x.size == 0:
        raise ValueError("length_stats needs at least one length")
    p1, median, p99 = np.percentile(x, [1, 50, 99])
    return LengthStats(float(median), float(p1), float(p99), float(x.mean()))
