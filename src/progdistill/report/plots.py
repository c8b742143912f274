"""Figures of the teacher and the students: each function builds one matplotlib figure for one claim
(`style.save` writes it as PNG and PDF). Medians over seeds with min–max bands, as in the tables."""

from __future__ import annotations

from typing import Any

import numpy as np

from .curves import SeedCurves
from .style import (COLUMN, PAGE, TEACHER, Look, figure, legend_below, legend_right, log_y, shade_drop, target_line,
                    thousands)


def _samples_per_step(curve: list[dict[str, Any]]) -> float:
    """Training samples per teacher step; 1 for a trajectory from outside whose batch size is unknown
    (hub revisions: its curve has no `samples`, and its steps stand in for them)."""
    last = curve[-1]
    return last["samples"] / last["step"] if last.get("step") and last.get("samples") else 1.0


def _teacher_samples(curve: list[dict[str, Any]]) -> list[float]:
    return [p["samples"] if "samples" in p else p["step"] for p in curve]


def _draw_students(ax, curves: SeedCurves, look: Look, label: str, index: int, band: bool = True) -> None:
    n = len(curves.samples)
    every = max(1, n // 7)  # about seven markers a curve, shifted per method so coinciding curves show both
    ax.plot(curves.samples, curves.median, label=label, markevery=(int(index * every / 8) % every, every),
            zorder=3 + index * 0.01, **look.line())
    if band and len(curves.accuracy) > 1:
        ax.fill_between(curves.samples, curves.accuracy.min(0), curves.accuracy.max(0), color=look.colour,
                        alpha=0.12, lw=0, zorder=2)


def teacher_figure(summary: dict[str, Any]):
    """Teacher accuracy and loss over its steps, with the detected drop and the checkpoints that the
    phase references (before / middle / after) resolve to."""
    teacher = summary["teacher"]
    curve = teacher["curve"]
    steps = [p["step"] for p in curve]
    fig, axes = figure(PAGE, 2.5, ncols=2)
    refs = {"before": ("#777777", (0, (4, 1.5))), "middle": ("#333333", (0, (6, 1.5, 1.5, 1.5))),
            "after": ("#777777", (0, (1, 1.2)))}
    for ax, key, name in ((axes[0, 0], "accuracy", "held-out accuracy"), (axes[0, 1], "loss", "held-out loss")):
        ax.plot(steps, [p[key] for p in curve], color=TEACHER, lw=1.4, label="teacher")
        if summary.get("oracle"):
            ax.axhline(summary["oracle"]["eval"][key], color="#BBBBBB", ls="-", lw=3, zorder=1,
                       label="Bayes-optimal predictor")
        if key == "loss" and summary.get("corpus"):
            ax.axhline(summary["corpus"]["unigram_loss"], color="#999999", ls=":", lw=1.2,
                       label="unigram loss (no context)")
        shade_drop(ax, teacher["phases"])
        for ref, step in (teacher.get("auto_checkpoint") or {}).items():
            colour, dashes = refs[ref]
            ax.axvline(step, color=colour, ls=dashes, lw=1, label=f"checkpoint {ref} the drop ({step:,})"
                       if ref != "middle" else f"checkpoint in the middle ({step:,})")
        ax.set_xlabel("teacher step")
        ax.set_ylabel(name)
        thousands(ax)
    log_y(axes[0, 1])
    legend_below(fig, axes.flat, ncol=3)
    return fig


def students_figure(curves: dict[tuple[str, int], SeedCurves], looks: dict[str, Look], target: float):
    """Held-out accuracy vs samples, one panel per budget: median over seeds, band = min..max."""
    budgets = sorted({b for _, b in curves})
    width = COLUMN if len(budgets) == 1 and len(looks) <= 4 else PAGE
    fig, axes = figure(width, 2.6 if len(budgets) > 1 else 2.9, ncols=len(budgets), sharey=True)
    for ax, budget in zip(axes[0], budgets):
        for i, label in enumerate(looks):
            if (label, budget) in curves:
                _draw_students(ax, curves[(label, budget)], looks[label], label, i)
        target_line(ax, target)
        ax.set_xlabel("training samples")
        ax.set_title(f"budget {budget:,} steps")
        thousands(ax)
    axes[0, 0].set_ylabel("held-out accuracy")
    if len(budgets) == 1 and width == PAGE:  # one wide panel: the legend beside it
        legend_right(fig, axes[0, 0])
    else:
        legend_below(fig, axes.flat, ncol=2 if width == COLUMN else 4)
    return fig


def summary_figure(summary: dict[str, Any], curves: dict[tuple[str, int], SeedCurves], looks: dict[str, Look],
                   shown: list[str], probe: dict[str, Any] | None):
    """The paper's Fig. 1 for this run: (a) teacher and students' held-out accuracy vs training samples
    at the largest budget, (b) the curriculum probe over the teacher's samples; the drop shaded in both.
    `probe`: {"ylabel", "series": [(label, line style, teacher steps, values)], "lines": [(label, line
    style, value)] drawn across, "log": bool}."""
    teacher = summary["teacher"]
    scale = _samples_per_step(teacher["curve"])
    budget = max(b for _, b in curves) if curves else None
    fig, axes = figure(PAGE if probe else COLUMN, 2.7, ncols=2 if probe else 1)
    ax = axes[0, 0]
    ax.plot(_teacher_samples(teacher["curve"]), [p["accuracy"] for p in teacher["curve"]], color=TEACHER,
            lw=1.6, label="teacher", zorder=5)
    for i, label in enumerate(looks):
        if label in shown and (label, budget) in curves:
            _draw_students(ax, curves[(label, budget)], looks[label], label, i)
    shade_drop(ax, teacher["phases"], scale)
    target_line(ax, summary["target"])
    ax.set_xlabel("training samples")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("(a) teacher and students" + (f", budget {budget:,} steps" if budget else ""))
    thousands(ax)
    if probe:
        ax = axes[0, 1]
        for label, style, steps, values in probe["series"]:
            ax.plot(np.array(steps) * scale, values, label=label, **style)
        for label, style, value in probe.get("lines", []):
            ax.axhline(value, label=label, **style)
        shade_drop(ax, teacher["phases"], scale, label=False)
        if probe.get("log"):
            log_y(ax)
        ax.set_xlabel("teacher's training samples")
        ax.set_ylabel(probe["ylabel"])
        ax.set_title("(b) curriculum probe on the teacher")
        thousands(ax)
    legend_below(fig, axes.flat, ncol=4 if probe else 2)
    return fig


def final_accuracy_figure(summary: dict[str, Any], looks: dict[str, Look]):
    """Median final accuracy vs budget per method, bars = min..max over seeds (runs with several budgets)."""
    fig, axes = figure(COLUMN, 3.0)
    ax = axes[0, 0]
    budgets = sorted({int(b) for e in summary["methods"].values() for b in e["budgets"]})
    spread = 0.3  # budgets at evenly spaced positions, methods side by side within ±spread of each
    for i, (label, look) in enumerate(looks.items()):
        entry = summary["methods"].get(label)
        if entry is None:
            continue
        xs, med, lo, hi = [], [], [], []
        for position, b in enumerate(budgets):
            if str(b) in entry["budgets"]:
                b_entry = entry["budgets"][str(b)]
                accs = [r["final_accuracy"] for r in b_entry["seeds"].values()]
                m = b_entry["median_final_accuracy"]  # the table's median
                xs.append(position + spread * (2 * i / max(1, len(looks) - 1) - 1))
                med.append(m)
                lo.append(m - min(accs))
                hi.append(max(accs) - m)
        ax.errorbar(xs, med, yerr=[lo, hi], label=label, capsize=1.5, elinewidth=0.8,
                    **{**look.line(), "linewidth": min(look.width, 1.6)})
    teacher = summary["teacher"]["curve"][-1]["accuracy"]
    ax.axhline(teacher, color=TEACHER, ls=":", lw=1, label="final teacher")
    ax.set_xticks(range(len(budgets)), [f"{b:,}" for b in budgets])
    ax.set_xlim(-0.5, len(budgets) - 0.5)
    ax.set_xlabel("student budget (steps)")
    ax.set_ylabel("final held-out accuracy")
    legend_below(fig, [ax], ncol=2)
    return fig


def sweep_figure(summary: dict[str, Any], looks: dict[str, Look]):
    """(2, T) sweep: each student's final accuracy against the checkpoint T it learned from first; median
    and min..max per T; CE's and one-shot's medians at the same budget for reference."""
    sweep = summary["sweep"]
    teacher = summary["teacher"]
    fig, axes = figure(COLUMN, 3.0)
    ax = axes[0, 0]
    xs = [e["checkpoint"] for e in sweep]
    for x, e in zip(xs, sweep):
        ax.scatter([x] * len(e["final_accuracies"]), e["final_accuracies"], s=7, color="#999999", zorder=2,
                   label="one seed", lw=0)
    med = [e["median_final_accuracy"] for e in sweep]
    err = [[m - min(e["final_accuracies"]) for m, e in zip(med, sweep)],
           [max(e["final_accuracies"]) - m for m, e in zip(med, sweep)]]
    ax.errorbar(xs, med, yerr=err, color=TEACHER, marker="o", ms=3.5, capsize=2, lw=1.2, elinewidth=0.8,
                label="median, min–max", zorder=3)
    if len(xs) <= 8:  # a tick at every T when they are few
        ax.set_xticks(xs)
    budget = str(sweep[0]["budget"])
    for label in ("ce", "one-shot"):
        entry = summary["methods"].get(label, {}).get("budgets", {}).get(budget)
        if entry and label in looks:
            ax.axhline(entry["median_final_accuracy"], color=looks[label].colour, ls=looks[label].dashes,
                       lw=min(looks[label].width, 2.0), label=f"{label}, median")
    shade_drop(ax, teacher["phases"])
    if teacher.get("auto_checkpoint"):
        auto = teacher["auto_checkpoint"]["middle"]
        ax.axvline(auto, color=looks["auto"].colour if "auto" in looks else "#009E73", lw=1, ls="-.",
                   label=f"auto's choice ({auto:,})")
    ax.set_xlabel(r"first teacher checkpoint $T$ (teacher step)")
    ax.set_ylabel("student's final accuracy")
    ax.set_title(f"$T$ for {sweep[0]['switch']:,} steps, then the final teacher\n(budget {int(budget):,} steps)")
    thousands(ax)
    legend_below(fig, [ax], ncol=2)
    return fig
