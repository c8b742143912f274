"""Non-terminal probe (SPEC §4): linear probes on frozen last-layer hidden states of unmasked sentences
predict each token's ancestor non-terminal at every level of its parse tree.

Labels [N, T, D]: labels[b, t, l] = ancestor at level l+1 of the token at input position t, or -1 where
there is none (BOS, padding). Unlabelled positions are left out of the loss, the accuracies and the
counts. Batches are sentences; the probe is seeded without touching the caller's global RNG.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .ngram import model_device


@torch.no_grad()
def hidden_features(model: nn.Module, tokens: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Last-layer hidden states [N, T, H] in eval mode (the training flag is restored)."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model.hidden_states(tokens[s:s + batch_size]).float()
                          for s in range(0, len(tokens), batch_size)])
    finally:
        model.train(was_training)


def _labelled(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features [P, H] and labels [P, D] of the positions with a label at some level, and their mask [N, T]."""
    keep = (labels >= 0).any(-1)
    return features[keep], labels[keep], keep


def _loss(logits: torch.Tensor, labels: torch.Tensor, num_classes: list[int]) -> torch.Tensor:
    """Sum over levels of the mean cross-entropy over that level's labelled positions."""
    total = logits.new_zeros(())
    for level, part in enumerate(logits.split(num_classes, -1)):
        target = labels[:, level]
        count = (target >= 0).sum().clamp(min=1)
        total = total + F.cross_entropy(part, target, ignore_index=-1, reduction="sum") / count
    return total


def train_probe(features: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor, num_classes: list[int],
                steps: int, lr: float, seed: int, batch_size: int) -> nn.Linear:
    """Adam on one nn.Linear(H, sum(num_classes)) over labelled positions (`_labelled`); each step uses
    those of `batch_size` seeded random sentences (all of them when there are no more)."""
    sentences, sentence = len(keep), keep.nonzero()[:, 0]
    devices = [features.device] if features.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        probe = nn.Linear(features.shape[-1], sum(num_classes)).to(features.device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    for _ in range(steps):
        if sentences > batch_size:
            chosen = torch.randperm(sentences, generator=gen)[:batch_size].to(features.device)
            pick = torch.isin(sentence, chosen)
            x, y = features[pick], labels[pick]
        else:
            x, y = features, labels
        opt.zero_grad(set_to_none=True)
        _loss(probe(x), y, num_classes).backward()
        opt.step()
    return probe.requires_grad_(False)


def _accuracy(correct: torch.Tensor, where: torch.Tensor) -> float | None:
    count = int(where.sum())
    return float(correct[where].sum()) / count if count else None


def position_baseline(train_labels: torch.Tensor, test_labels: torch.Tensor, num_classes: list[int]) -> list[float | None]:
    """Per level, the held-out accuracy of predicting each token's ancestor from its position alone (the
    train set's most common label at that position): what a probe gets from positional information."""
    test = test_labels.cpu().long()
    length, levels = max(train_labels.shape[1], test.shape[1]), train_labels.shape[2]
    counts = torch.zeros(length, levels, max(num_classes) + 1, dtype=torch.long)
    index = (train_labels.cpu().long() + 1).clamp(min=0).permute(1, 2, 0)  # -1 (no label) -> column 0, dropped
    counts.scatter_add_(2, index, torch.ones_like(index))
    table = counts[:, :, 1:].argmax(-1)  # [T, D] most common label per position and level
    table[counts[:, :, 1:].sum(-1) == 0] = -2  # no training label at that position (or beyond): no prediction
    correct = test == table[:test.shape[1]].unsqueeze(0)
    return [_accuracy(correct[..., level], test[..., level] >= 0) for level in range(levels)]


def nonterminal_probe(model: nn.Module, train_tokens: torch.Tensor, train_labels: torch.Tensor,
                      test_tokens: torch.Tensor, test_labels: torch.Tensor, num_classes: list[int],
                      test_boundaries: torch.Tensor | None = None, steps: int = 300, lr: float = 1e-2,
                      seed: int = 0, batch_size: int = 256) -> dict[str, Any]:
    """Per-level held-out accuracy of linear probes (and at span boundaries when `test_boundaries`
    [M, T, D] is given), next to the majority-label baseline of the train set."""
    if train_labels.shape[-1] != len(num_classes) or test_labels.shape[-1] != len(num_classes):
        raise ValueError("labels need one column per level of num_classes")
    device = model_device(model)
    train_x, train_y, train_keep = _labelled(hidden_features(model, train_tokens.to(device), batch_size),
                                             train_labels.to(device))
    probe = train_probe(train_x, train_y, train_keep, num_classes, steps, lr, seed, batch_size)
    test_x, test_y, test_keep = _labelled(hidden_features(model, test_tokens.to(device), batch_size),
                                          test_labels.to(device))
    boundaries = None if test_boundaries is None else test_boundaries.to(device)[test_keep]
    with torch.no_grad():
        parts = probe(test_x).split(num_classes, -1)
    by_position = position_baseline(train_labels, test_labels, num_classes)
    levels = []
    for level, part in enumerate(parts):
        target, has = test_y[:, level], test_y[:, level] >= 0
        correct = part.argmax(-1) == target
        train_level = train_y[:, level]
        majority = int(train_level[train_level >= 0].bincount(minlength=num_classes[level]).argmax())
        at_boundary = None if boundaries is None else has & boundaries[:, level]
        levels.append({
            "level": level + 1,
            "accuracy": _accuracy(correct, has),
            "boundary_accuracy": None if at_boundary is None else _accuracy(correct, at_boundary),
            "count": int(has.sum()),
            "boundary_count": None if at_boundary is None else int(at_boundary.sum()),
            "majority_baseline": _accuracy(target == majority, has),
            "position_baseline": by_position[level],
        })
    return {"levels": levels, "mean_accuracy": _mean([entry["accuracy"] for entry in levels]),
            "mean_position_baseline": _mean(by_position)}


def _mean(values: list[float | None]) -> float | None:
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else None
