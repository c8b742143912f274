"""Probabilistic context-free grammars: parse, generate, measure and sample (with parse trees)."""

from .pcfg import (
    Grammar,
    GrammarError,
    LengthStats,
    Rule,
    Symbol,
    expected_length,
    format_grammar,
    generate_grammar,
    length_distribution,
    length_stats,
    load_grammar,
    parse_grammar,
    truncate_grammar,
)
from .sampler import Sample, sample_sentences, sample_sentences_recursive

__all__ = [
    "Grammar",
    "GrammarError",
    "LengthStats",
    "Rule",
    "Sample",
    "Symbol",
    "expected_length",
    "format_grammar",
    "generate_grammar",
    "length_distribution",
    "length_stats",
    "load_grammar",
    "parse_grammar",
    "sample_sentences",
    "sample_sentences_recursive",
    "truncate_grammar",
]
