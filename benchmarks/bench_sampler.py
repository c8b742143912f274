"""Benchmark: vectorized grammar sampler vs the plain recursive one (not a test).

    python benchmarks/bench_sampler.py [GRAMMAR.txt] [--n 20000] [--n-recursive 1000] [--repeats 7]

Uses cfg3b from ../shared/grammars (or $PROGDISTILL_GRAMMARS) when no file is given, else falls back
to generate_grammar(5). After one warm-up run of each, the runs are interleaved (every round times
each sampler once) so that all of them see the same background load; rates use the best of
``--repeats`` rounds, by wall clock and by process CPU time (the latter ignores time spent waiting
for a core on a shared machine). Ratios are relative to the recursive sampler of the same run.
"""

from __future__ import annotations

import argparse
import math
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


def best_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Per function, the best (wall, CPU) seconds of ``repeats`` interleaved rounds, after a warm-up."""
    for fn in fns.values():
        fn()
    best = {label: (math.inf, math.inf) for label in fns}
    for _ in range(repeats):
        for label, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[label] = (min(best[label][0], wall), min(best[label][1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grammar", nargs="?", type=Path, help="grammar file (default: cfg3b)")
    parser.add_argument("--n", type=int, default=20000, help="sentences per fast-sampler run")
    parser.add_argument("--n-recursive", type=int, default=1000, help="sentences per recursive-sampler run")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    g, name = (load_grammar(args.grammar), str(args.grammar)) if args.grammar else default_grammar()

    runs = {
        "recursive (tokens)": (args.n_recursive, lambda: sample_sentences_recursive(g, args.n_recursive, args.seed)),
        "fast (tokens)": (args.n, lambda: sample_sentences(g, args.n, args.seed, trees=False)),
        "fast (tokens + trees)": (args.n, lambda: sample_sentences(g, args.n, args.seed)),
    }
    best = best_times({label: fn for label, (_, fn) in runs.items()}, args.repeats)
    sample = sample_sentences(g, args.n, args.seed)
    assert sample.ancestors is not None and sample.boundaries is not None
    tree_mb = (sample.ancestors.nbytes + sample.boundaries.nbytes) / 2**20
    print(f"grammar: {name} (depth {g.depth}); lengths: {length_stats(sample.lengths)}; {os.cpu_count()} CPUs")
    print(
        f"trees of {args.n} sentences: ancestors {sample.ancestors.dtype} + boundaries {sample.boundaries.dtype}"
        f" {list(sample.ancestors.shape)}, {tree_mb:,.0f} MiB; tokens {sample.tokens.nbytes / 2**20:,.0f} MiB"
    )
    base = [args.n_recursive / t for t in best["recursive (tokens)"]]
    print(f"{'':<22} {'':>17}  {'wall clock':>26}  {'CPU time':>26}")
    for label, (n, _) in runs.items():
        cells = [f"{n / t:>12,.0f} /s {n / t / b:>8.1f}x" for t, b in zip(best[label], base, strict=True)]
        print(f"{label:<22} {n:>7} sentences  {cells[0]:>26}  {cells[1]:>26}")


if __name__ == "__main__":
    main()
