"""A WordPiece tokenizer trained locally with the Hugging Face `tokenizers` library (optional extra [text]).

Special tokens [PAD] [UNK] [CLS] [SEP] [MASK] have ids 0..4; the other tokens follow in sorted order.

Training is `tokenizers`' own: its WordPieceTrainer is its BPE trainer with a "##" prefix on the
symbols that continue a word, and that is what runs here, with one change that makes it deterministic.
The BPE trainer breaks ties between equally frequent pairs by symbol id, and gives the "##" symbols ids
in hash-map order, which differs between processes: two trainings on the same text can end with
different vocabularies (they do on small corpora). Here the text is normalised first (BertNormalizer)
and every character that continues a word (neither a space nor punctuation, after a character that is
neither: where BertPreTokenizer does not split) is replaced by a stand-in, its code point plus U+F0000,
in the supplementary private-use planes; `tokenizers.trainers.BpeTrainer` then runs with
BertPreTokenizer and no prefix, every character of the text in its initial alphabet (as WordPieceTrainer
has). Every symbol is then a single character of the sorted alphabet, ties are broken the same way in
every process, and the learnt pieces map back one to one ("x" + stand-ins -> "x...", stand-ins only ->
"##..."). The pair counts are WordPieceTrainer's, so the vocabulary is one it could have learnt (on the
default corpus at 1,000 and 4,000 tokens it is the very same set), and the same documents and settings
give the same tokenizer.json, byte for byte. Characters of those private-use planes in the text itself
are read as spaces for training, and a character above U+1FFFF that continues a word (rare: CJK
characters stand alone) keeps its own code point.
"""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Any, Sequence

from .corpus import EXTRA, CorpusError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
MIN_VOCAB = 2 * len(SPECIAL_TOKENS)


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise CorpusError(f"text tasks need the optional extra [{EXTRA}]: pip install 'progdistill[{EXTRA}]' "
                          "(package tokenizers)") from None
    return tokenizers


def _pipeline(model: Any, lowercase: bool) -> Any:
    tk = _tokenizers()
    tokenizer = tk.Tokenizer(model)
    tokenizer.normalizer = tk.normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = tk.decoders.WordPiece()
    return tokenizer


_STAND_IN = 0xF0000  # continuation character c <-> chr(_STAND_IN + ord(c)), for ord(c) < 0x20000
_MAPPABLE = 0x20000


def _is_punctuation(code: int) -> bool:
    """BertPreTokenizer's punctuation: ASCII punctuation or a Unicode P* character."""
    c = chr(code)
    return (c.isascii() and not c.isalnum() and c.isprintable() and not c.isspace()) or \
        unicodedata.category(c).startswith("P")


def _training_text(documents: Sequence[str], normalizer: Any, chunk: int = 1 << 16) -> tuple[list[str], list[str]]:
    """The documents normalised as the tokenizer will (in pieces of about `chunk` characters, cut at
    spaces), with every character that continues a word (neither a space nor punctuation, after a
    character that is neither) replaced by its stand-in; and every character of the text but the space,
    each a word-initial token too, as in tokenizers' WordPieceTrainer."""
    import numpy as np

    pieces, size, out = [], 0, []
    for doc in documents:  # normalising in pieces is faster than one call on the whole corpus
        pieces.append(doc)
        size += len(doc)
        if size >= chunk:
            out.append(normalizer.normalize_str("\n".join(pieces)))
            pieces, size = [], 0
    if pieces:
        out.append(normalizer.normalize_str("\n".join(pieces)))
    codes = np.frombuffer(" ".join(out).encode("utf-32-le"), dtype=np.uint32).copy()
    codes[codes >= _STAND_IN] = ord(" ")  # private-use characters would read as stand-ins
    codes[codes < ord(" ")] = ord(" ")  # the normaliser leaves no other control character but newlines
    chars = np.unique(codes)
    boundary = np.isin(codes, np.array([c for c in chars.tolist() if c == ord(" ") or _is_punctuation(c)],
                                       dtype=np.uint32))
    inside = ~boundary
    inside[1:] &= ~boundary[:-1]
    inside[:1] = False
    codes[inside & (codes < _MAPPABLE)] += _STAND_IN
    text = codes.tobytes().decode("utf-32-le")
    alphabet = sorted(chr(c) for c in chars.tolist() if c != ord(" "))
    cuts = [0]
    while cuts[-1] < len(text):
        cut = text.find(" ", cuts[-1] + chunk)
        cuts.append(len(text) if cut < 0 else cut + 1)
    return [text[a:b] for a, b in zip(cuts, cuts[1:])], alphabet


def _unmap(token: str) -> str:
    if token in SPECIAL_TOKENS:
        return token
    first = ord(token[0]) >= _STAND_IN
    body = "".join(chr(ord(c) - _STAND_IN) if ord(c) >= _STAND_IN else c for c in token)
    return "##" + body if first else body


def train_wordpiece(documents: Sequence[str], vocab_size: int, lowercase: bool = True) -> Any:
    """A WordPiece `tokenizers.Tokenizer` trained on `documents` (BERT normalizer and pre-tokenizer,
    lowercased unless `lowercase=False`, "##" continuation prefix) with at most `vocab_size` tokens
    (more if the corpus's alphabet alone is larger); deterministic, see the module docstring.
    Raises CorpusError without the `tokenizers` package or for a vocab_size below 10."""
    tk = _tokenizers()
    if vocab_size < MIN_VOCAB:
        raise CorpusError(f"vocab_size must be >= {MIN_VOCAB}, got {vocab_size}")
    template = _pipeline(tk.models.WordPiece(unk_token="[UNK]"), lowercase)
    pieces, alphabet = _training_text(documents, template.normalizer)
    bpe = tk.Tokenizer(tk.models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                     initial_alphabet=alphabet)
    bpe.train_from_iterator(pieces, trainer, length=len(pieces))
    ordinary = sorted({_unmap(t) for t in bpe.get_vocab()} - set(SPECIAL_TOKENS))
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *ordinary))}
    tokenizer = _pipeline(tk.models.WordPiece(vocab, unk_token="[UNK]"), lowercase)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def load_tokenizer(text: str, where: str = "tokenizer.json") -> Any:
    """A tokenizer from its JSON text (a saved tokenizer.json); checks the special-token ids. Raises
    CorpusError naming `where` if it does not parse or its special tokens are not ids 0..4."""
    tk = _tokenizers()
    try:
        tokenizer = tk.Tokenizer.from_str(text)
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise CorpusError(f"{where}: not a tokenizers JSON file ({str(e).splitlines()[0][:200]})") from None
    wrong = [t for i, t in enumerate(SPECIAL_TOKENS) if tokenizer.token_to_id(t) != i]
    if wrong:
        raise CorpusError(f"{where}: special tokens {wrong} are not at ids 0..4 (not a progdistill tokenizer)")
    return tokenizer


def tokenizer_digest(tokenizer: Any) -> str:
    """Short sha256 of the tokenizer's JSON serialisation."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]


def encode(tokenizer: Any, documents: Sequence[str]) -> list[list[int]]:
    """Token ids of every document, without special tokens."""
    return [e.ids for e in tokenizer.encode_batch(list(documents), add_special_tokens=False)]
