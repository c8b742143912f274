"""Report sections for natural-language runs (task text-mlm): the corpus and tokenizer statistics with the
corpus's license (from the run folder's corpus.json), and the paper's BERT results beside the students'."""

from __future__ import annotations

from typing import Any

# Panigrahi et al. 2025 (arXiv 2410.05464), BERT on Wikipedia + Books: student top-1 masked accuracy read off
# the paper's plot (≈, SPEC §5); progressive = the best intermediate-checkpoint method there.
PAPER_BUDGETS = (24_000, 60_000, 120_000)
PAPER_ACCURACY = {"ce": (0.36, 0.463, 0.50), "one-shot": (0.38, 0.477, 0.508), "progressive": (0.402, 0.481, 0.515)}


def corpus_section(stats: dict[str, Any]) -> list[str]:
    """Markdown lines: where the text comes from, its license, split, tokenizer and packing statistics."""
    docs, tokens, tok, seqs = stats["documents"], stats["tokens"], stats["tokenizer"], stats["sequences"]
    lines = ["## Corpus and tokenizer", "",
             f"Source: `{stats['source']}` ({stats['files']} file{'s' if stats['files'] != 1 else ''}, "
             f"digest {stats['digest']}). License: {stats.get('license') or 'not recorded (a corpus you supplied)'}.",
             "",
             "| | value |", "| --- | --- |",
             f"| documents (train / held-out, split by document) | {docs['all']:,} ({docs['train']:,} / "
             f"{docs['heldout']:,}) |",
             f"| words (whitespace-separated) | {stats['words']['all']:,} |",
             f"| tokens (train / held-out) | {tokens['train']:,} / {tokens['heldout']:,} |",
             f"| tokens per document, median (mean) | {tokens['per_document_median']:.0f} "
             f"({tokens['per_document_mean']:.1f}) |",
             f"| tokens per word | {tokens['per_word']:.2f} |",
             f"| tokenizer | {tok['kind']}, vocabulary {tok['vocab_size']:,} (asked {tok['requested_vocab_size']:,}), "
             f"{'lowercased' if tok['lowercase'] else 'cased'}, trained on the {tok['trained_on']} |",
             f"| [UNK] rate on held-out text | {tokens['unk_rate_heldout']:.2e} |",
             f"| packed sequences of {seqs['max_len']} tokens (train / held-out / evaluated) | {seqs['train']:,} / "
             f"{seqs['heldout']:,} / {seqs['eval']:,} |",
             f"| unigram loss (held-out tokens under the training unigram distribution; a model that ignores the "
             f"context sits here) | {stats['unigram_loss']:.3f} nats |", ""]
    if stats.get("heldout_duplicates"):
        lines += [f"{stats['heldout_duplicates']} held-out document(s) have the exact text of a training document.", ""]
    return lines


def paper_section(summary: dict[str, Any]) -> list[str]:
    """Markdown lines: the paper's student accuracies at its budgets, then ours per method and budget
    (median [min–max] over seeds); the scales differ (BERT-base-sized models, 24k–120k steps there)."""
    head = "| | " + " | ".join(f"{b:,} steps" for b in PAPER_BUDGETS) + " |"
    lines = ["## Beside the paper", "",
             "The paper's students on Wikipedia + Books (top-1 masked accuracy read off its plot, SPEC §5; "
             "'progressive' is its best intermediate-checkpoint method):", "", head,
             "| --- |" + " --- |" * len(PAPER_BUDGETS)]
    lines += [f"| {name} | " + " | ".join(f"{a:.3f}" for a in acc) + " |" for name, acc in PAPER_ACCURACY.items()]
    methods = summary.get("methods", {})
    budgets = sorted({int(b) for entry in methods.values() for b in entry["budgets"]})
    if budgets:
        lines += ["", "This run (median [min–max] over seeds):", "",
                  "| | " + " | ".join(f"{b:,} steps" for b in budgets) + " |",
                  "| --- |" + " --- |" * len(budgets)]
        for label, entry in methods.items():
            cells = []
            for b in budgets:
                e = entry["budgets"].get(str(b))
                accs = [s["final_accuracy"] for s in e["seeds"].values()] if e else []
                cells.append(f"{e['median_final_accuracy']:.3f} [{min(accs):.3f}–{max(accs):.3f}]" if e else "")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]
