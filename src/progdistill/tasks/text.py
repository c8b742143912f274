"""Masked language modelling on natural-language text (SPEC §5, the paper's BERT on Wikipedia + Books).

Documents are split into training and held-out documents by a seeded permutation (no document on both
sides). A WordPiece tokenizer is trained on the training documents only (or reused: `tokenizer`, the
JSON text of a saved tokenizer.json). Each side's documents are tokenized, concatenated with [SEP]
after every document, and cut into sequences of `max_len` tokens: [CLS] + max_len - 2 tokens + [SEP]
(the last incomplete piece is dropped). Special tokens: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4.

Training batches come from a stream of training sequences that is independent of the batch size:
stream row r is sequence perm_e[r mod N] with e = r div N and perm_e a seeded permutation (every
sequence once per epoch); batch `step` holds rows [step*B, (step+1)*B) with a fresh BERT mask, so it is
a pure function of (seed, data_seed, step, batch_size). `seed` fixes the split, the held-out set, its
mask and the probe's sentences; `data_seed` only the training order and masks.

Masking (Devlin et al. 2019): every ordinary token (never a special one, [UNK] included) is selected
with probability `mask_prob` (at least one per batch); a selected token becomes [MASK] with probability
`mask_token_prob`, a uniformly random ordinary token with probability `random_token_prob`, else stays;
the loss is on selected positions.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch

from ..text.corpus import Corpus, CorpusError, document_hash, read_corpus
from ..text.tokenizer import (CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, encode, load_tokenizer,
                              tokenizer_digest, train_wordpiece)
from .base import Batch, Task, seeded_generator
from .masking import bert_mask

_STREAM, _MASK, _HELDOUT_MASK, _SPLIT = 1, 2, 4, 6  # seed purposes
_EVAL_BATCH = 256
_FIRST = len(SPECIAL_TOKENS)  # first ordinary token id


def _seed(*keys: int) -> int:
    """A non-negative seed that depends only on the integer keys (mixed like `seeded_generator`)."""
    seed = 0
    for key in keys:
        seed = (seed * 1_000_003 + int(key) + 1) % (2**63 - 1)
    return seed


@lru_cache(maxsize=4)
def _cached_corpus(path: str | None, format: str, field: str, documents: str, stamp: tuple) -> Corpus:
    return read_corpus(path, format, field, documents)


def _file_stamp(path: str | None) -> tuple:
    """(name, size, mtime) of every file under `path`: a corpus re-read only when its files changed."""
    from pathlib import Path

    from ..text.corpus import default_corpus_file

    try:
        root = default_corpus_file() if path is None else Path(path)
    except CorpusError:
        return ()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


def split_documents(n: int, heldout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held-out) of n documents: a seeded permutation, the first ceil(heldout * n)
    held out. Raises CorpusError unless both sides get at least one document.
    The permutation is `np.random.default_rng(_seed(seed, _SPLIT)).permutation(n)`."""
    held = math.ceil(heldout * n)
    if n < 2 or held >= n:
        raise CorpusError(f"the corpus has {n} document(s): a split by document with heldout={heldout} needs at "
                          "least one training and one held-out document")
    order = np.random.default_rng(_seed(seed, _SPLIT)).permutation(n)
    return np.sort(order[held:]), order[:held]


def pack(ids: list[list[int]], max_len: int) -> torch.Tensor:
    """[n, max_len] int64 sequences [CLS] + max_len - 2 tokens + [SEP] cut from the documents' tokens,
    each document followed by [SEP]; the last incomplete piece is dropped."""
    body = max_len - 2
    stream = np.fromiter((t for doc in ids for t in (*doc, SEP_ID)), dtype=np.int64)
    n = len(stream) // body
    rows = torch.from_numpy(stream[: n * body].reshape(n, body))
    return torch.cat([torch.full((n, 1), CLS_ID), rows, torch.full((n, 1), SEP_ID)], 1)


class TextMLMTask(Task):
    """BERT masked language modelling on a text corpus (module docstring)."""

    name = "text-mlm"
    fixed_width = True  # packed: every training row is max_len tokens, so students of all seeds group unpadded

    def __init__(self, corpus: dict[str, Any] | None = None, vocab_size: int = 4000, lowercase: bool = True,
                 max_len: int = 64, heldout: float = 0.05, eval_size: int = 512, mask_prob: float = 0.15,
                 mask_token_prob: float = 0.8, random_token_prob: float = 0.1, seed: int = 0, data_seed: int = 0,
                 device: str | torch.device = "cpu", tokenizer: str | None = None) -> None:
        if max_len < 4:
            raise ValueError(f"max_len must be >= 4 ([CLS] + tokens + [SEP]), got {max_len}")
        if not 0.0 < heldout < 1.0:
            raise ValueError(f"heldout must be in (0, 1), got {heldout}")
        if eval_size < 1:
            raise ValueError(f"eval_size must be >= 1, got {eval_size}")
        if not 0.0 < mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
        if mask_token_prob < 0 or random_token_prob < 0 or mask_token_prob + random_token_prob > 1:
            raise ValueError("mask_token_prob and random_token_prob must be >= 0 with a sum <= 1, got "
                             f"{mask_token_prob} and {random_token_prob}")
        spec = {"path": None, "format": "auto", "field": "text", "documents": "blank-lines", **(corpus or {})}
        self.corpus = _cached_corpus(spec["path"], spec["format"], spec["field"], spec["documents"],
                                     _file_stamp(spec["path"]))
        self.seed, self.data_seed, self.device = seed, data_seed, torch.device(device)
        self.max_len, self.seq_len = max_len, max_len
        self.mask_prob, self.mask_token_prob, self.random_token_prob = mask_prob, mask_token_prob, random_token_prob
        self.train_docs, self.heldout_docs = split_documents(len(self.corpus.documents), heldout, seed)
        documents = self.corpus.documents
        if tokenizer is None:
            self.tokenizer = train_wordpiece([documents[i] for i in self.train_docs], vocab_size, lowercase)
        else:
            self.tokenizer = load_tokenizer(tokenizer)
        self.vocab_size = self.tokenizer.get_vocab_size()
        self._prepared = _encoded(self.corpus, self.tokenizer.to_str(), seed, heldout)
        train_ids, held_ids = self._prepared["train_ids"], self._prepared["heldout_ids"]
        self.train_sequences = pack(train_ids, max_len).to(self.device)
        self.heldout_sequences = pack(held_ids, max_len).to(self.device)
        if len(self.train_sequences) < 1 or len(self.heldout_sequences) < 1:
            raise CorpusError(f"{self.corpus.source}: too little text for max_len={max_len}: "
                              f"{len(self.train_sequences)} training and {len(self.heldout_sequences)} held-out "
                              "sequences (need at least one of each; use a larger corpus or a smaller max_len)")
        self.eval_inputs = self.heldout_sequences[:eval_size]
        gen = seeded_generator(self.device, seed, _HELDOUT_MASK)
        self._eval = [self._masked(self.eval_inputs[s:s + _EVAL_BATCH], gen)
                      for s in range(0, len(self.eval_inputs), _EVAL_BATCH)]
        self._perms: dict[int, torch.Tensor] = {}
        self.settings = {"vocab_size": vocab_size, "lowercase": lowercase, "max_len": max_len, "heldout": heldout,
                         "eval_size": eval_size}

    # --- Task interface ---------------------------------------------------------------------
    def model_io(self) -> dict[str, Any]:
        return {"seq_len": self.seq_len, "vocab_size": self.vocab_size, "pad_id": PAD_ID,
                "num_classes": self.vocab_size}

    def _epoch(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            gen = seeded_generator(torch.device("cpu"), self.seed, self.data_seed, _STREAM, epoch)
            self._perms = {**{e: p for e, p in self._perms.items() if e >= epoch - 1},
                           epoch: torch.randperm(len(self.train_sequences), generator=gen).to(self.device)}
        return self._perms[epoch]

    def stream_rows(self, step: int, batch_size: int) -> torch.Tensor:
        """Clean training sequences [B, max_len] of batch `step` (stream rows [step*B, (step+1)*B)).
        Epoch e's permutation is `torch.randperm(N, generator=seeded_generator(cpu, seed, data_seed, _STREAM, e))`."""
        if batch_size < 1 or step < 0:
            raise ValueError(f"need step >= 0 and batch_size >= 1, got {step}, {batch_size}")
        n = len(self.train_sequences)
        rows = torch.arange(step * batch_size, (step + 1) * batch_size)
        epochs = rows // n
        index = torch.empty_like(rows)
        for e in epochs.unique().tolist():
            at = epochs == e
            index[at] = self._epoch(e).cpu()[rows[at] % n]
        return self.train_sequences[index.to(self.device)]

    def _masked(self, inputs: torch.Tensor, gen: torch.Generator) -> Batch:
        """BERT-mask clean rows [B, T] with draws from `gen` (module docstring): ordinary tokens only."""
        return bert_mask(inputs, inputs >= _FIRST, gen, self.mask_prob, self.mask_token_prob, self.random_token_prob,
                         MASK_ID, _FIRST, self.vocab_size)

    def mask(self, inputs: torch.Tensor, step: int) -> Batch:
        """The training mask of `step` applied to clean sequences, drawn from
        `seeded_generator(inputs.device, seed, data_seed, _MASK, step)`."""
        return self._masked(inputs, seeded_generator(inputs.device, self.seed, self.data_seed, _MASK, step))

    def train_batch(self, step: int, batch_size: int) -> Batch:
        return self.mask(self.stream_rows(step, batch_size), step)

    def eval_batches(self) -> list[Batch]:
        return self._eval

    # --- run-folder files ---------------------------------------------------------------------
    def input_hashes(self) -> dict[str, str]:
        return {"task.corpus": self.corpus.digest, "tokenizer.json": tokenizer_digest(self.tokenizer)}

    def artifacts(self) -> dict[str, str | dict[str, Any]]:
        return {"tokenizer.json": self.tokenizer.to_str(), "corpus.json": self.statistics()}

    def statistics(self) -> dict[str, Any]:
        """Corpus, split, tokenizer and packing statistics, with the corpus's license (corpus.json)."""
        p = self._prepared
        lengths = np.array([len(d) for d in p["train_ids"]] + [len(d) for d in p["heldout_ids"]])
        words = p["words"]
        return {
            "source": self.corpus.source, "license": self.corpus.license, "digest": self.corpus.digest,
            "files": self.corpus.files,
            "documents": {"all": len(self.corpus.documents), "train": len(self.train_docs),
                          "heldout": len(self.heldout_docs)},
            "words": words,
            "tokens": {"train": p["train_tokens"], "heldout": p["heldout_tokens"],
                       "per_document_median": float(np.median(lengths)), "per_document_mean": float(lengths.mean()),
                       "per_word": (p["train_tokens"] + p["heldout_tokens"]) / max(1, words["all"]),
                       "unk_rate_heldout": p["heldout_unk"] / max(1, p["heldout_tokens"])},
            "tokenizer": {"kind": "WordPiece (tokenizers)", "vocab_size": self.vocab_size,
                          "requested_vocab_size": self.settings["vocab_size"], "lowercase": self.settings["lowercase"],
                          "trained_on": "training documents", "digest": tokenizer_digest(self.tokenizer),
                          "special_tokens": list(SPECIAL_TOKENS)},
            "sequences": {"max_len": self.max_len, "train": len(self.train_sequences),
                          "heldout": len(self.heldout_sequences), "eval": len(self.eval_inputs)},
            "unigram_loss": p["unigram_loss"], "heldout_duplicates": p["heldout_duplicates"],
        }

    # --- probes -----------------------------------------------------------------------------
    def probe_sentences(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n held-out documents with at least one token, each as [CLS] + its first max_len - 2
        tokens + [SEP] + [PAD]..., [n', max_len] (n' <= n), and their lengths without the final [SEP]."""
        docs = [d for d in self._prepared["heldout_ids"] if d][:n]
        rows = torch.full((len(docs), self.max_len), PAD_ID, dtype=torch.long)
        for i, doc in enumerate(docs):
            body = doc[: self.max_len - 2]
            rows[i, : len(body) + 2] = torch.tensor([CLS_ID, *body, SEP_ID])
        lengths = (rows != PAD_ID).sum(1) - 1
        return rows.to(self.device), lengths.to(self.device)

    def _ngram_probe(self, model: torch.nn.Module, sentences: int = 256, n_max: int = 3,
                     positions: int = 4) -> dict[str, Any]:
        """M_robust / M_close TV distances (over the ordinary tokens) on held-out document openings, the
        [CLS] and final [SEP] never masked."""
        from ..probes.ngram import ngram_probe

        if sentences < 1 or n_max < 1 or positions < 1:
            raise ValueError("need sentences, n_max and positions >= 1")
        inputs, lengths = self.probe_sentences(sentences)
        result = ngram_probe(model, inputs, lengths, MASK_ID, PAD_ID, n_max=n_max, positions=positions,
                             vocab=slice(_FIRST, self.vocab_size))
        return {**result, "sentences": len(inputs)}

    def probes(self) -> dict[str, Callable[..., dict]]:
        return {"ngram": self._ngram_probe}


@lru_cache(maxsize=4)
def _encoded_cached(corpus: Corpus, tokenizer_json: str, seed: int, heldout: float) -> dict[str, Any]:
    tokenizer = load_tokenizer(tokenizer_json)
    train_docs, heldout_docs = split_documents(len(corpus.documents), heldout, seed)
    train_ids = encode(tokenizer, [corpus.documents[i] for i in train_docs])
    heldout_ids = encode(tokenizer, [corpus.documents[i] for i in heldout_docs])
    counts = np.bincount(np.fromiter((t for d in train_ids for t in d), dtype=np.int64),
                         minlength=tokenizer.get_vocab_size()).astype(float)[_FIRST:]
    held = np.fromiter((t for d in heldout_ids for t in d), dtype=np.int64)
    held = held[held >= _FIRST] - _FIRST
    smoothed = (counts + 1) / (counts.sum() + len(counts))  # add-one: every held-out token has a probability
    words = {"all": sum(len(d.split()) for d in corpus.documents)}
    return {
        "train_ids": train_ids, "heldout_ids": heldout_ids,
        "train_tokens": sum(map(len, train_ids)), "heldout_tokens": sum(map(len, heldout_ids)),
        "heldout_unk": sum(d.count(1) for d in heldout_ids),
        # the loss of the best context-free predictor: cross-entropy of held-out tokens under the
        # training unigram distribution (nats), where a model's loss sits before it uses the context
        "unigram_loss": float(-np.log(smoothed[held]).mean()) if len(held) else float("nan"),
        "words": words,
        # documents whose exact text is also a training document (a corpus with duplicates)
        "heldout_duplicates": len({document_hash(corpus.documents[i]) for i in heldout_docs}
                                  & {document_hash(corpus.documents[i]) for i in train_docs}),
    }


def _encoded(corpus: Corpus, tokenizer_json: str, seed: int, heldout: float) -> dict[str, Any]:
    """Token ids of the training and held-out documents and their statistics (cached per process)."""
    return _encoded_cached(corpus, tokenizer_json, seed, heldout)
