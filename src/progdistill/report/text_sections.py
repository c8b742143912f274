"""Report sections for natural-language runs (task text-mlm): the corpus and tokenizer statistics with the
corpus's license (summary.json's `corpus` entry), and the paper's BERT results beside the students'."""

from __future__ import annotations

from typing import Any

from .document import Block, Heading, Paragraph, Table

# Panigrahi et al. 2025 (arXiv 2410.05464), BERT on Wikipedia + Books: student top-1 masked accuracy read off
# the paper's plot (≈, SPEC §5); progressive = the best intermediate-checkpoint method there.
PAPER_BUDGETS = (24_000, 60_000, 120_000)
PAPER_ACCURACY = {"ce": (0.36, 0.463, 0.50), "one-shot": (0.38, 0.477, 0.508), "progressive": (0.402, 0.481, 0.515)}


def corpus_blocks(stats: dict[str, Any]) -> list[Block]:
    """Where the text comes from, its license, split, tokenizer and packing statistics."""
    docs, tokens, tok, seqs = stats["documents"], stats["tokens"], stats["tokenizer"], stats["sequences"]
    rows = [
        ["documents (train / held-out, split by document)", f"{docs['all']:,} ({docs['train']:,} / {docs['heldout']:,})"],
        ["words (whitespace-separated)", f"{stats['words']['all']:,}"],
        ["tokens (train / held-out)", f"{tokens['train']:,} / {tokens['heldout']:,}"],
        ["tokens per document, median (mean)", f"{tokens['per_document_median']:.0f} ({tokens['per_document_mean']:.1f})"],
        ["tokens per word", f"{tokens['per_word']:.2f}"],
        ["tokenizer", f"{tok['kind']}, vocabulary {tok['vocab_size']:,} (asked {tok['requested_vocab_size']:,}), "
                      f"{'lowercased' if tok['lowercase'] else 'cased'}, trained on the {tok['trained_on']}"],
        ["[UNK] rate on held-out text", f"{tokens['unk_rate_heldout']:.2e}"],
        [f"packed sequences of {seqs['max_len']} tokens (train / held-out / evaluated)",
         f"{seqs['train']:,} / {seqs['heldout']:,} / {seqs['eval']:,}"],
        ["unigram loss (held-out tokens under the training unigram distribution; a model that ignores the context "
         "sits here)", f"{stats['unigram_loss']:.3f} nats"],
    ]
    blocks: list[Block] = [
        Heading("Corpus and tokenizer"),
        Paragraph(f"Source: `{stats['source']}` ({stats['files']} file{'s' if stats['files'] != 1 else ''}, digest "
                  f"{stats['digest']}). License: {stats.get('license') or 'not recorded (a corpus you supplied)'}."),
        Table(["", "value"], rows)]
    if stats.get("heldout_duplicates"):
        blocks.append(Paragraph(f"{stats['heldout_duplicates']} held-out document(s) have the exact text of a "
                                "training document."))
    return blocks


def paper_blocks(summary: dict[str, Any]) -> list[Block]:
    """The paper's student accuracies at its budgets, then ours per method and budget (median [min–max]
    over seeds); the scales differ (BERT-base-sized models, 24k–120k steps there)."""
    blocks: list[Block] = [
        Heading("Beside the paper"),
        Table([""] + [f"{b:,} steps" for b in PAPER_BUDGETS],
              [[name] + [f"{a:.3f}" for a in acc] for name, acc in PAPER_ACCURACY.items()],
              caption="The paper's students on Wikipedia + Books (top-1 masked accuracy read off its plot, SPEC §5; "
                      "'progressive' is its best intermediate-checkpoint method). Its models and budgets are far "
                      "larger than a CPU run's: compare the order of the methods, not the numbers.")]
    methods = summary.get("methods", {})
    budgets = sorted({int(b) for entry in methods.values() for b in entry["budgets"]})
    if budgets:
        rows = []
        for label, entry in methods.items():
            cells = []
            for b in budgets:
                e = entry["budgets"].get(str(b))
                accs = [s["final_accuracy"] for s in e["seeds"].values()] if e else []
                cells.append(f"{e['median_final_accuracy']:.3f} [{min(accs):.3f}–{max(accs):.3f}]" if accs else "")
            rows.append([label] + cells)
        blocks.append(Table([""] + [f"{b:,} steps" for b in budgets], rows,
                            caption="This run: final held-out masked accuracy, median [min–max] over seeds."))
    return blocks
