"""Benchmark: vectorized grammar sampler vs the plain recursive one (not a test).

    python benchmarks/bench_sampler.py [GRAMMAR.txt] [--n 20000] [--n-recursive 1000] [--repeats 3]

Uses cfg3b from ../shared/grammars (or $PROGDISTILL_GRAMMARS) when no file is given, else falls back
to generate_grammar(5). Times are the best of ``--repeats`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from progdistill.grammar import (
    Grammar,
    generate_grammar,
    length_stats,
    load_grammar,
    sample_sentences,
    sample_sentences_recursive,
)


def default_grammar() -> tuple[Grammar, str]:
    folder = Path(os.environ.get("PROGDISTILL_GRAMMARS", Path(__file__).resolve().parents[2] / "shared" / "grammars"))
    path = folder / "cfg3b.txt"
    if path.is_file():
        return load_grammar(path), str(path)
    return generate_grammar(5), "generate_grammar(levels=5, seed=0)"


def best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grammar", nargs="?", type=Path, help="grammar file (default: cfg3b)")
    parser.add_argument("--n", type=int, default=20000, help="sentences per fast-sampler run")
    parser.add_argument("--n-recursive", type=int, default=1000, help="sentences per recursive-sampler run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    g, name = (load_grammar(args.grammar), str(args.grammar)) if args.grammar else default_grammar()

    runs = {
        "recursive (tokens)": (args.n_recursive, lambda: sample_sentences_recursive(g, args.n_recursive, args.seed)),
        "fast (tokens)": (args.n, lambda: sample_sentences(g, args.n, args.seed, trees=False)),
        "fast (tokens + trees)": (args.n, lambda: sample_sentences(g, args.n, args.seed)),
    }
    rates = {label: n / best_time(fn, args.repeats) for label, (n, fn) in runs.items()}
    stats = length_stats(sample_sentences(g, args.n, args.seed, trees=False).lengths)
    print(f"grammar: {name} (depth {g.depth}); lengths: {stats}; {os.cpu_count()} CPUs")
    base = rates["recursive (tokens)"]
    for label, (n, _) in runs.items():
        print(f"{label:<22} {n:>7} sentences  {rates[label]:>12,.0f} sentences/s  {rates[label] / base:>7.1f}x")


if __name__ == "__main__":
    main()
