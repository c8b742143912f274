"""Natural-language text for masked language modelling (SPEC §5): corpus readers and a WordPiece tokenizer."""

from .corpus import Corpus, CorpusError, read_corpus

__all__ = ["Corpus", "CorpusError", "read_corpus"]
