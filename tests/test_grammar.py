"""Tests of progdistill.grammar: parser, generator, exact lengths, samplers and parse trees."""

from __future__ import annotations

import hashlib
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from progdistill.grammar import (
    Grammar,
    GrammarError,
    Symbol,
    expected_length,
    format_grammar,
    generate_grammar,
    length_distribution,
    length_stats,
    load_grammar,
    parse_grammar,
    sample_sentences,
    sample_sentences_recursive,
    truncate_grammar,
)

GRAMMARS = Path(os.environ.get("PROGDISTILL_GRAMMARS", Path(__file__).resolve().parents[2] / "shared" / "grammars"))
CFG3 = ["cfg3b", "cfg3f", "cfg3g", "cfg3h", "cfg3i"]

SMALL = """
# a tiny layered grammar
s -> x y        # uniform: 1/2 each
s -> y
x -> 'b' 'a' [0.25]
x -> 'c' [0.75]

y -> 'a' 'a' 'c'
"""

MIXED = """
s -> x 'a' y [0.5]
s -> y [0.5]
x -> 'b'
x -> 'a' 'b' 'c'
y -> x x
y -> 'c'
"""


def reference(name: str) -> Grammar:
    path = GRAMMARS / f"{name}.txt"
    if not path.is_file():
        pytest.skip(f"reference grammars not found at {GRAMMARS}")
    return load_grammar(path)


def chi_square_ok(lengths: np.ndarray, law: np.ndarray) -> bool:
    """Pearson test of sampled lengths against an exact law (bins pooled to expected >= 5, the tail
    beyond the law as one more bin); accept below df + 6 sd of the chi-square distribution."""
    n = lengths.size
    observed = np.bincount(lengths, minlength=law.size)[: law.size]
    assert observed.sum() == n, "a sampled length lies beyond the exact law's support"
    bins_o, bins_e, acc_o, acc_e = [], [], 0.0, 0.0
    for o, e in zip(observed, n * law, strict=True):
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= 5:
            bins_o.append(acc_o)
            bins_e.append(acc_e)
            acc_o = acc_e = 0.0
    bins_o[-1] += acc_o
    bins_e[-1] += acc_e + n * max(0.0, 1.0 - law.sum())
    o, e = np.array(bins_o), np.array(bins_e)
    df = o.size - 1
    return float(((o - e) ** 2 / e).sum()) < df + 6 * math.sqrt(2 * df)


def mean_ok(lengths: np.ndarray, law: np.ndarray) -> bool:
    """Sample mean within 4 standard errors of the exact mean."""
    k = np.arange(law.size)
    mean = (k * law).sum()
    sd = math.sqrt((k**2 * law).sum() - mean**2)
    return abs(lengths.mean() - mean) < 4 * sd / math.sqrt(lengths.size)


def spans(ends: np.ndarray) -> list[tuple[int, int]]:
    stops = np.flatnonzero(ends) + 1
    return list(zip(np.concatenate([[0], stops[:-1]]).tolist(), stops.tolist(), strict=True))


def rederive(g: Grammar, tokens: np.ndarray, ancestors: np.ndarray, ends: np.ndarray) -> Counter:
    """Rebuild one sentence's derivation from its tree arrays, asserting every step is a rule of
    the grammar; return how often each (lhs, rhs) was used."""
    depth = g.depth
    assert ends[-1].all(), "the last token must close every span"
    for k in range(1, depth):
        assert np.all(ends[:, k] >= ends[:, k - 1]), "a span must end where its parent's span ends"
    used: Counter = Counter()
    rules = {lhs: {r.rhs for r in rs} for lhs, rs in g.rules.items()}
    for k in range(depth, -1, -1):  # level k spans and their children
        level_spans = spans(ends[:, k - 1]) if k else [(0, tokens.size)]
        child_spans = spans(ends[:, k]) if k < depth else []
        for start, stop in level_spans:
            if k:
                assert np.all(ancestors[start:stop, k - 1] == ancestors[start, k - 1])
            lhs = g.levels[k][ancestors[start, k - 1]] if k else g.root
            if k == depth:
                rhs = tuple(Symbol(g.terminals[t], True) for t in tokens[start:stop])
            else:
                inner = [a for a, b in child_spans if start <= a and b <= stop]
                rhs = tuple(Symbol(g.levels[k + 1][ancestors[a, k]], False) for a in inner)
            assert rhs in rules[lhs], f"{lhs} -> {' '.join(map(str, rhs))} is not a rule"
            used[lhs, rhs] += 1
    return used


def check_sample_trees(g: Grammar, n: int, seed: int) -> Counter:
    sample = sample_sentences(g, n, seed)
    width = sample.tokens.shape[1]
    assert sample.ancestors.shape == sample.boundaries.shape == (n, width, g.depth)
    assert sample.tokens.dtype == sample.lengths.dtype == np.int64 and sample.boundaries.dtype == bool
    assert sample.ancestors.dtype == (np.int8 if max(map(len, g.levels)) <= 127 else np.int16)  # smallest fit
    used: Counter = Counter()
    for i, length in enumerate(sample.lengths):
        assert np.all(sample.tokens[i, length:] == -1) and np.all(sample.ancestors[i, length:] == -1)
        assert not sample.boundaries[i, length:].any()
        used += rederive(g, sample.tokens[i, :length], sample.ancestors[i, :length], sample.boundaries[i, :length])
    return used


# --- parser ------------------------------------------------------------------------------------


def test_parse_small_grammar() -> None:
    g = parse_grammar(SMALL)
    assert g.root == "s" and g.terminals == ("a", "b", "c")
    assert g.levels == (("s",), ("x", "y")) and g.nonterminals == ("s", "x", "y")
    assert [r.prob for r in g.rules["s"]] == [0.5, 0.5]
    assert [r.prob for r in g.rules["x"]] == [0.25, 0.75]
    assert g.rules["x"][0].rhs == (Symbol("b", True), Symbol("a", True))
    assert g.is_layered and g.depth == 1
    mixed = parse_grammar(MIXED)
    assert not mixed.is_layered and mixed.levels == (("s",), ("x", "y"))


def test_parse_custom_root_and_hash_terminal() -> None:
    g = parse_grammar("top -> '#' u  # comment\nu -> 'x'\n", root="top")
    assert g.root == "top" and g.terminals == ("#", "x") and g.levels == (("top",), ("u",))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s -> 'a'\nthis is not a rule\n", "src:2: malformed rule"),
        ("s -> 'a'\nS -> 'b'\n", "src:2: malformed rule: left-hand side 'S'"),
        ("s -> A 'b'\n", "src:1: malformed rule: bad symbol 'A'"),
        ("s ->\n", "src:1: malformed rule: empty right-hand side"),
        ("s -> 'a' [half]\n", "src:1: malformed rule: probability 'half' is not a number"),
        ("s -> 'a' [1.5]\n", "src:1: malformed rule: probability 1.5 is not in (0, 1]"),
        ("s -> 'a' [0.5\n", "src:1: malformed rule"),
        ("s -> x 'a'\n", "src:1: undefined symbol 'x'"),
        ("s -> 'a'\n\nu -> 'b'\n", "src:3: unreachable symbol 'u'"),
        ("s -> 'a' [0.5]\ns -> 'b' [0.4]\n", "src:1: probabilities of 's' sum to 0.9, not 1"),
        ("s -> 'a' [0.5]\ns -> 'b'\n", "src:1: rules of 's' mix given and missing probabilities"),
        ("s -> 'a'\ns -> 'a'\n", "src:2: duplicate rule for 's'"),
        ("", "src: empty grammar"),
        ("# only a comment\n\n", "src: empty grammar"),
        ("t -> 'a'\n", "src: missing root: root symbol 's' has no rules"),
    ],
)
def test_parse_errors(text: str, expected: str) -> None:
    with pytest.raises(GrammarError) as info:
        parse_grammar(text, source="src")
    assert expected in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parse_lists_every_problem_in_line_order() -> None:
    text = "s -> x 'a'\ns -> q\nbad line\nu -> 'b' [0.3]\ns -> 'c'\n"
    with pytest.raises(GrammarError) as info:
        parse_grammar(text, source="g.txt")
    assert info.value.problems == [
        "g.txt:1: undefined symbol 'x' (used but has no rules)",
        "g.txt:2: undefined symbol 'q' (used but has no rules)",
        "g.txt:3: malformed rule 'bad line' (expected `LHS -> SYM ... [prob]`)",
        "g.txt:4: probabilities of 'u' sum to 0.3, not 1",
        "g.txt:4: unreachable symbol 'u' (not derivable from root 's')",
    ]


def test_load_grammar_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.txt"
    with pytest.raises(GrammarError, match=re.escape(f"{path}: cannot read grammar file")):
        load_grammar(path)


def test_load_grammar_refuses_endless_large_and_non_utf8_inputs(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(GrammarError, match=r"^/dev/zero: cannot read grammar file: not a regular file$"):
        load_grammar("/dev/zero")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"s -> 'a'\n\xff\n")
    with pytest.raises(GrammarError, match=re.escape(f"{bad}:2: cannot read grammar file: not UTF-8 text (byte 0xff)")):
        load_grammar(bad)
    monkeypatch.setattr("progdistill.grammar.pcfg.MAX_GRAMMAR_BYTES", 8)
    with pytest.raises(GrammarError, match=re.escape(f"{bad}: cannot read grammar file: larger than 0 MiB")):
        load_grammar(bad)
    small = tmp_path / "small.txt"
    small.write_bytes(b"s -> 'a'")  # exactly the limit
    assert load_grammar(small).root == "s"


def test_load_grammar_reports_path(tmp_path: Path) -> None:
    path = tmp_path / "g.txt"
    path.write_text("s -> x\n")
    with pytest.raises(GrammarError, match=re.escape(f"{path}:1: undefined symbol 'x'")):
        load_grammar(path)


@pytest.mark.parametrize(
    "g",
    [
        parse_grammar(SMALL),
        parse_grammar(MIXED),
        parse_grammar("s -> a a\ns -> a\ns -> 'q'\na -> 'x'\n"),
        generate_grammar(3, seed=4),
        generate_grammar(2, symbols_per_level=4, rules_per_symbol=3, rhs_lengths=(1, 2, 3), terminals=5, seed=1),
    ],
)
def test_format_round_trip(g: Grammar) -> None:
    text = format_grammar(g)
    assert parse_grammar(text) == g
    assert format_grammar(parse_grammar(text)) == text


# --- generator ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("levels", "symbols", "rules", "lengths", "terminals"),
    [(1, 3, 2, (2, 3), 3), (3, 3, 2, (2, 3), 3), (5, 3, 2, (2, 3), 3), (2, 5, 3, (1, 2, 4), 4), (3, 2, 1, (3,), 2)],
)
def test_generator_structure(levels: int, symbols: int, rules: int, lengths: tuple[int, ...], terminals: int) -> None:
    g = generate_grammar(levels, symbols, rules, lengths, terminals, seed=3)
    assert g.is_layered and g.depth == levels
    assert [len(level) for level in g.levels] == [1] + [symbols] * levels
    assert set(g.rules) == set(g.nonterminals)  # every defined symbol is reachable
    assert len(g.terminals) == terminals
    for rs in g.rules.values():
        assert len(rs) == rules and len({r.rhs for r in rs}) == rules
        assert all(len(r.rhs) in lengths and r.prob == pytest.approx(1 / rules) for r in rs)


def test_generator_deterministic_and_seeded() -> None:
    assert generate_grammar(3, seed=11) == generate_grammar(3, seed=11)
    assert format_grammar(generate_grammar(3, seed=11)) != format_grammar(generate_grammar(3, seed=12))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"levels": 0}, "levels, symbols_per_level, rules_per_symbol and terminals must be >= 1"),
        ({"levels": 2, "rhs_lengths": ()}, "rhs_lengths must be positive"),
        ({"levels": 2, "rules_per_symbol": 1, "rhs_lengths": (2,)},
         "the rules cannot reach every symbol of the next level"),
        ({"levels": 2, "symbols_per_level": 1, "rules_per_symbol": 3, "rhs_lengths": (1,)},
         "only 1 distinct right-hand sides exist over 1 symbols"),
    ],
)
def test_generator_rejects_impossible(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_grammar(**kwargs)


def test_same_output_in_another_process() -> None:
    code = (
        "import hashlib; from progdistill.grammar import generate_grammar, format_grammar, sample_sentences\n"
        "g = generate_grammar(3, seed=7); s = sample_sentences(g, 64, seed=5)\n"
        "print(hashlib.sha256(format_grammar(g).encode() + s.tokens.tobytes() + s.ancestors.tobytes()"
        " + s.boundaries.tobytes()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    g = generate_grammar(3, seed=7)
    s = sample_sentences(g, 64, seed=5)
    digest = hashlib.sha256(
        format_grammar(g).encode() + s.tokens.tobytes() + s.ancestors.tobytes() + s.boundaries.tobytes()
    ).hexdigest()
    assert out.stdout.strip() == digest


# --- reference grammars ------------------------------------------------------------------------


@pytest.mark.parametrize("name", CFG3)
def test_reference_grammars(name: str) -> None:
    g = reference(name)
    assert g.is_layered and g.depth == 6 and g.terminals == ("a", "b", "c")
    assert g.levels == (
        ("s",),
        ("p", "q", "r"),
        ("m", "n", "o"),
        ("j", "k", "l"),
        ("g", "h", "i"),
        ("d", "e", "f"),
        ("a", "b", "c"),
    )
    assert parse_grammar(format_grammar(g)) == g


# --- exact lengths -----------------------------------------------------------------------------


def test_exact_length_distribution_small() -> None:
    g = parse_grammar(SMALL)
    # s -> x y: x has length 2 (1/4) or 1 (3/4), y has length 3; s -> y: length 3.
    law = length_distribution(g, 6)
    np.testing.assert_allclose(law, [0, 0, 0, 0.5, 0.375, 0.125, 0])
    assert expected_length(g) == pytest.approx((np.arange(7) * law).sum())
    np.testing.assert_allclose(length_distribution(g, 4), [0, 0, 0, 0.5, 0.375])


def test_exact_lengths_need_non_recursive_grammar() -> None:
    g = parse_grammar("s -> 'a' s [0.5]\ns -> 'b' [0.5]\n")
    with pytest.raises(GrammarError, match="recursive"):
        length_distribution(g, 10)
    with pytest.raises(GrammarError, match="recursive"):
        expected_length(g)


def test_fast_sampler_refuses_a_grammar_that_is_not_layered() -> None:
    g = parse_grammar("s -> 'a' s [0.5]\ns -> 'b' [0.5]\n")
    with pytest.raises(GrammarError, match="needs a layered grammar, where every rule of a level-k symbol"):
        sample_sentences(g, 4, seed=0)
    assert len(sample_sentences_recursive(g, 4, seed=0)) == 4


def test_length_stats() -> None:
    stats = length_stats(np.arange(1, 102))
    assert (stats.median, stats.p1, stats.p99, stats.mean) == (51.0, 2.0, 100.0, 51.0)
    assert "median 51" in str(stats)


# --- samplers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "g",
    [
        parse_grammar(SMALL),  # whole sentences drawn as one subtree
        parse_grammar("s -> x x x\ns -> x\nx -> y y\nx -> y\ny -> u\nu -> 'a' 'a'\nu -> 'b'\n"),  # repeated siblings
        generate_grammar(2, rules_per_symbol=4, rhs_lengths=(3,), seed=0),  # too many subtrees: rule by rule
        generate_grammar(3, seed=2),
        generate_grammar(4, seed=1),
    ],
)
def test_trees_rederive_with_rule_frequencies(g: Grammar) -> None:
    assert g.is_layered
    used = check_sample_trees(g, 600, seed=1)
    for lhs, rs in g.rules.items():
        total = sum(used[lhs, r.rhs] for r in rs)
        for r in rs:
            sd = math.sqrt(total * r.prob * (1 - r.prob))
            assert abs(used[lhs, r.rhs] - total * r.prob) <= 5 * sd + 1, (lhs, r.rhs)


def test_trees_rederive_cfg3b() -> None:
    check_sample_trees(reference("cfg3b"), 40, seed=3)


@pytest.mark.parametrize(
    "g",
    [generate_grammar(2, seed=0), generate_grammar(3, seed=0), generate_grammar(4, seed=0), parse_grammar(SMALL)],
)
def test_sampled_lengths_match_exact_law(g: Grammar) -> None:
    lengths = sample_sentences(g, 20000, seed=1, trees=False).lengths
    law = length_distribution(g, int(lengths.max()) + 1)
    assert mean_ok(lengths, law) and chi_square_ok(lengths, law)


@pytest.mark.parametrize(("name", "mean"), [("cfg3b", 294.0), ("cfg3f", None)])
def test_sampled_lengths_match_exact_law_reference(name: str, mean: float | None) -> None:
    g = reference(name)
    lengths = sample_sentences(g, 20000, seed=1, trees=False).lengths
    law = length_distribution(g, int(lengths.max()) + 1)
    assert mean is None or expected_length(g) == pytest.approx(mean)
    assert mean_ok(lengths, law) and chi_square_ok(lengths, law)


def test_fast_sampler_is_seeded() -> None:
    g = generate_grammar(3, seed=0)
    a, b, c = (sample_sentences(g, 500, seed=s) for s in (4, 4, 5))
    for field in ("tokens", "lengths", "ancestors", "boundaries"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.lengths, c.lengths)
    tokens_only = sample_sentences(g, 500, seed=4, trees=False)
    np.testing.assert_array_equal(tokens_only.tokens, a.tokens)
    assert tokens_only.ancestors is None and tokens_only.boundaries is None


def test_fast_sampler_needs_layered_grammar() -> None:
    with pytest.raises(GrammarError, match="layered"):
        sample_sentences(parse_grammar(MIXED), 10, seed=0)


def test_fast_sampler_empty_batch() -> None:
    g = generate_grammar(2, seed=0)
    s = sample_sentences(g, 0, seed=0)
    assert s.tokens.shape == (0, 0) and s.ancestors.shape == (0, 0, 2) and s.lengths.shape == (0,)


def test_max_len_redraws_long_sentences() -> None:
    g = generate_grammar(3, seed=0)
    cap = int(np.median(sample_sentences(g, 2000, seed=0, trees=False).lengths))
    s = sample_sentences(g, 20000, seed=9, max_len=cap)
    assert s.tokens.shape == (20000, cap) and s.lengths.max() <= cap
    law = length_distribution(g, cap)
    assert chi_square_ok(s.lengths, law / law.sum())
    small = sample_sentences(g, 300, seed=2, max_len=cap)
    np.testing.assert_array_equal(small.tokens, sample_sentences(g, 300, seed=2, max_len=cap).tokens)
    for i, n in enumerate(small.lengths):
        rederive(g, small.tokens[i, :n], small.ancestors[i, :n], small.boundaries[i, :n])
    with pytest.raises(ValueError, match="no sentence"):
        sample_sentences(g, 5, seed=0, max_len=1)


def test_recursive_sampler_any_grammar() -> None:
    g = parse_grammar(SMALL)
    sentences = sample_sentences_recursive(g, 4000, seed=0)
    assert sentences == sample_sentences_recursive(g, 4000, seed=0)
    assert {tuple(s) for s in sentences} <= {(1, 0, 0, 0, 2), (2, 0, 0, 2), (0, 0, 2)}
    lengths = np.array([len(s) for s in sentences])
    law = length_distribution(g, 6)
    assert mean_ok(lengths, law) and chi_square_ok(lengths, law)
    mixed = parse_grammar(MIXED)
    lengths = np.array([len(s) for s in sample_sentences_recursive(mixed, 4000, seed=0)])
    law = length_distribution(mixed, 16)
    assert mean_ok(lengths, law) and chi_square_ok(lengths, law)
    recursive = sample_sentences_recursive(parse_grammar("s -> 'a' s [0.5]\ns -> 'b' [0.5]\n"), 4000, seed=1)
    assert abs(np.mean([len(s) for s in recursive]) - 2.0) < 4 * math.sqrt(2 / 4000)


def test_recursive_and_fast_samplers_agree_on_lengths() -> None:
    g = generate_grammar(2, seed=5)
    slow = np.array([len(s) for s in sample_sentences_recursive(g, 3000, seed=0)])
    law = length_distribution(g, int(slow.max()) + 1)
    assert mean_ok(slow, law) and chi_square_ok(slow, law)


# --- truncation --------------------------------------------------------------------------------


def test_truncate_generated_grammar() -> None:
    g = generate_grammar(4, seed=1)
    t = truncate_grammar(g, 2)
    assert t.is_layered and t.depth == 2 and t.levels == g.levels[:3]
    assert all(t.rules[lhs] == g.rules[lhs] for level in g.levels[:2] for lhs in level)
    for i, lhs in enumerate(g.levels[2]):
        assert [(r.rhs, r.prob) for r in t.rules[lhs]] == [((Symbol(g.terminals[i], True),), 1.0)]
    with pytest.raises(GrammarError, match=re.escape("pre_terminal_level must be in [0, 4], got 5")):
        truncate_grammar(g, 5)
    with pytest.raises(GrammarError, match="layered"):
        truncate_grammar(parse_grammar(MIXED), 1)


def test_truncate_cfg3b() -> None:
    g = reference("cfg3b")
    assert truncate_grammar(g, g.depth) == g  # a b c -> 'a' 'b' 'c' already
    t = truncate_grammar(g, 4)  # g h i act as pre-terminals
    assert t.levels[-1] == ("g", "h", "i") and t.is_layered
    assert format_grammar(t).endswith("g -> 'a' [1]\nh -> 'b' [1]\ni -> 'c' [1]\n")
    stats = length_stats(sample_sentences(t, 5000, seed=0, trees=False).lengths)
    assert 35 <= stats.median <= 39 and 20 <= stats.p1 <= 26 and 45 <= stats.p99 <= 51
    assert expected_length(t) == pytest.approx(36.75)


def test_cli_grammar_show_with_truncation(capsys) -> None:
    from progdistill.cli import main

    assert main(["grammar", "show", "generate:levels=2,seed=0", "-n", "100"]) == 0
    assert "level 2:" in capsys.readouterr().out
    assert main(["grammar", "show", "generate:levels=2,seed=0", "-n", "100", "--truncate", "0"]) == 0
    out = capsys.readouterr().out  # the root is the only non-terminal: one-token sentences
    assert "level 1:" not in out and "median 1 (p1 1, p99 1)" in out


@pytest.mark.parametrize("spec, message", [("generate:levels=abc", "generate.levels: Input should be a valid integer"),
                                           ("generate:foo=1", "generate.foo: unknown key"),
                                           ("generate:levels=-1", "generate.levels: Input should be greater than or equal to 1"),
                                           ("generate:levels", "'levels' is not KEY=VALUE")])
def test_a_bad_generate_spec_names_its_key(spec, message, capsys):
    from progdistill.cli import main

    assert main(["grammar", "show", spec, "-n", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("spec, message", [
    ("levels=999999", "generate.levels: Input should be less than or equal to 64"),
    ("levels=3,rhs_lengths=2/100000000", "generate.rhs_lengths: [2, 100000000]: give one or more lengths from 1 to 64"),
    ("levels=64,symbols_per_level=10000,rules_per_symbol=10000",
     "generate.rules_per_symbol: (levels x symbols_per_level + 1) x rules_per_symbol = 6,400,010,000 rules, beyond "
     "the limit of 1,000,000"),
])
def test_generate_sizes_that_would_hang_are_refused_at_once(spec, message, capsys) -> None:
    from progdistill.cli import main

    assert main(["grammar", "sample", f"generate:{spec}", "-n", "2"]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_truncate_outside_the_levels_names_the_option(capsys) -> None:
    from progdistill.cli import main

    assert main(["grammar", "sample", "generate:levels=3,seed=0", "--truncate", "99"]) == 2
    assert capsys.readouterr().err == "error: --truncate 99: the grammar's levels are 0 to 3\n"
