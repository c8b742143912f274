"""Parity curriculum probe: correlations of a model's output with monomials chi_A(x) = prod_{i in A} x_i.

corr(A) = |E_x[chi_A(x) * p_1(x)]| with p_1 the softmax probability of class 1. The estimate uses
p_1 minus its sample mean (chi_A has mean 0 for non-empty A, so the expectation is unchanged while the
variance drops from E[p_1^2] to Var[p_1]). For d <= `exact_max_d` with 2^d <= samples the whole cube
is enumerated and the value is exact.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..models.outputs import logits_of
from ..tasks.base import seeded_generator

if TYPE_CHECKING:
    from ..tasks.parity import ParityTask

_PROBE = 7  # generator purpose, distinct from the task's


def all_signs(d: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Every point of {-1,+1}^d, [2^d, d]."""
    bits = (torch.arange(2**d, device=device)[:, None] >> torch.arange(d, device=device)) & 1
    return 1.0 - 2.0 * bits.float()


def off_support_sets(d: int, support: list[int], degree: int, count: int, seed: int) -> list[tuple[int, ...]]:
    """Up to `count` distinct seeded sets of `degree` coordinates disjoint from the support
    (all of them when fewer exist), sorted. Each draw is the first `degree` entries of a
    `torch.randperm` of the outside coordinates with `seeded_generator(cpu, seed, _PROBE, degree)`."""
    outside = [i for i in range(d) if i not in set(support)]
    total = math.comb(len(outside), degree)
    if total <= count:
        return list(itertools.combinations(outside, degree))
    gen = seeded_generator(torch.device("cpu"), seed, _PROBE, degree)
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < count:
        pick = torch.randperm(len(outside), generator=gen)[:degree]
        chosen.add(tuple(sorted(outside[int(i)] for i in pick)))
    return sorted(chosen)


@torch.no_grad()
def class_probability(model: nn.Module, x: torch.Tensor, target_class: int = 1, batch: int = 512) -> torch.Tensor:
    """Softmax probability of `target_class` for each row of `x` [N, d] (float32 [N]), in forward passes of
    `batch` rows: small enough that a wide layer's activations stay in the CPU's cache (at width 2,000,
    rows of 512 run ~3x faster than of 8,192 on a 2-core EPYC; every row is computed on its own, so the
    values do not depend on `batch` where the matrix product does not round by the row count)."""
    was_training = model.training
    model.eval()
    out = torch.cat([torch.softmax(logits_of(model(x[i:i + batch])).float(), -1)[:, target_class]
                     for i in range(0, len(x), batch)])
    model.train(was_training)
    return out


def monomial_correlations(x: torch.Tensor, p: torch.Tensor, sets: list[tuple[int, ...]]) -> list[float]:
    """|mean(chi_A(x) * (p - mean p))| for each set A (all sets of one size); `x` [N, d] of -1/+1, `p` [N].

    chi_A(x) = (-1)^(number of -1 entries of x in A): the counts are one exact product with the sets'
    indicator matrix (integers below 2^24 are exact in float32), so chi is exactly the product of the
    entries, without gathering N x |sets| x |A| values."""
    if not sets:
        return []
    indicator = torch.zeros(x.shape[1], len(sets), device=x.device)  # [d, m]
    for column, s in enumerate(sets):
        indicator[list(s), column] = 1.0
    negative = (x < 0).float()
    centred = p - p.mean()
    total = torch.zeros(len(sets), dtype=torch.float64, device=x.device)
    for i in range(0, len(x), 8192):
        chi = 1.0 - 2.0 * torch.remainder(negative[i:i + 8192] @ indicator, 2.0)  # [n, m], exactly +-1
        total += (chi * centred[i:i + 8192, None]).sum(0).double()
    return (total / len(x)).abs().tolist()


def monomial_probe(model: nn.Module, task: ParityTask, samples: int = 100_000, off_support: int = 100,
                   degrees: list[int] | None = None, seed: int = 0, target_class: int = 1,
                   exact_max_d: int = 16) -> dict[str, Any]:
    """Correlations for every in-support set and `off_support` seeded off-support sets per degree.
    Sampled points are `torch.randint(0, 2, (samples, d), generator=seeded_generator(device, seed, _PROBE))`
    mapped to -1/+1 (1 -> +1), on the model's device."""
    d, support = task.d, task.support
    device = next(model.parameters()).device
    exact = d <= exact_max_d and 2**d <= samples
    if exact:
        x = all_signs(d, device)
    else:
        x = torch.randint(0, 2, (samples, d), generator=seeded_generator(device, seed, _PROBE),
                          device=device).float() * 2 - 1
    p = class_probability(model, x, target_class)
    result: dict[str, Any] = {"exact": exact, "samples": len(x), "degrees": {}}
    for j in degrees or range(1, len(support) + 1):
        in_sets = list(itertools.combinations(support, j))
        off_sets = off_support_sets(d, support, j, off_support, seed)
        ins, offs = monomial_correlations(x, p, in_sets), monomial_correlations(x, p, off_sets)
        result["degrees"][str(j)] = {
            "in_sets": in_sets, "in": ins, "off_sets": off_sets, "off": offs,
            "in_mean": sum(ins) / len(ins), "off_mean": sum(offs) / len(offs) if offs else float("nan"),
        }
    return result


def tidy_rows(step: int, probe: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (degree, set): step, degree, kind (in/off), set, correlation."""
    rows = []
    for j, entry in probe["degrees"].items():
        for kind in ("in", "off"):
            for s, c in zip(entry[f"{kind}_sets"], entry[kind]):
                rows.append({"step": step, "degree": int(j), "kind": kind,
                             "set": " ".join(map(str, s)), "correlation": c})
    return rows


def monomial_series(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per degree: in-support and off-support mean correlation over the trajectory."""
    steps = [r["step"] for r in rows]
    degrees = sorted(rows[0]["result"]["degrees"], key=int)
    return {
        "steps": steps,
        "accuracy": [r.get("accuracy") for r in rows],
        "in": {j: [r["result"]["degrees"][j]["in_mean"] for r in rows] for j in degrees},
        "off": {j: [r["result"]["degrees"][j]["off_mean"] for r in rows] for j in degrees},
    }


def monomial_peak(rows: list[dict[str, Any]], degree: str = "1",
                  window: tuple[int, int] | None = None) -> dict[str, Any]:
    """The checkpoint where the mean in-support correlation of `degree` peaks (within `window`, a range
    of teacher steps, if given), with the off-support mean there."""
    series = monomial_series(rows)
    inside = [i for i, s in enumerate(series["steps"]) if window is None or window[0] <= s <= window[1]]
    i = max(inside or range(len(series["steps"])), key=lambda j: series["in"][degree][j])
    a, b = series["in"][degree][i], series["off"][degree][i]
    return {"degree": int(degree), "step": series["steps"][i], "accuracy": series["accuracy"][i],
            "in_mean": a, "off_mean": b, "ratio": a / b if b else None, "window": window}


def transition_window(phases: dict[str, Any] | None) -> tuple[int, int] | None:
    """The teacher's sharp drop widened by its own width on the left (where the spike starts)."""
    if not phases:
        return None
    width = phases["drop_end"] - phases["drop_start"]
    return phases["drop_start"] - width, phases["drop_end"]
