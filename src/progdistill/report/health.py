"""Run health: did the teacher leave its plateau, did any loss spike and recover, did a student end
far below its own best? One verdict on whether the numbers can be trusted, with the evidence."""

from __future__ import annotations

from typing import Any

import numpy as np

from .curves import SeedCurves

COLLAPSE = 0.05  # a student that ends this far below its own best held-out accuracy has collapsed
RISE = 0.05  # a teacher whose accuracy rose less than this never left its plateau (with no drop detected)


def _recovered(losses: list[float]) -> bool:
    """Whether a run's last held-out loss is back below twice its best (a spike that did not last)."""
    finite = [x for x in losses if np.isfinite(x)]
    return bool(finite) and np.isfinite(losses[-1]) and losses[-1] <= 2 * min(finite)


def teacher_health(summary: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(problems, facts) about the teacher."""
    teacher = summary["teacher"]
    curve = teacher["curve"]
    first, last = curve[0], curve[-1]
    problems, facts = [], []
    if teacher.get("phases"):
        p = teacher["phases"]
        facts.append(f"the teacher left its plateau (sharp drop at steps {p['drop_start']:,}–{p['drop_end']:,}) and "
                     f"ended at held-out accuracy {last['accuracy']:.3f}")
    elif last["accuracy"] - first["accuracy"] < RISE:
        problems.append(f"the teacher never left its plateau (held-out accuracy {first['accuracy']:.3f} → "
                        f"{last['accuracy']:.3f}): every method that learns from its checkpoints learns from a "
                        "teacher that knows nothing (train it longer, or with a larger `teacher.optim.lr`)")
    else:
        problems.append("no phase transition was detected in the teacher's curve, so the methods that start from "
                        "it (`auto`, `two-shot` at a phase, `progressive` from a phase) could not use it")
    spikes = teacher.get("loss_spikes") or []
    if spikes:
        worst = max(spikes, key=lambda x: x["loss"])
        what = (f"the teacher's held-out loss spiked above twice its best so far at {len(spikes)} evaluation(s) "
                f"from step {min(x['step'] for x in spikes):,} (highest {worst['loss']:.3g} after a best of "
                f"{worst['best_before']:.3g})")
        if _recovered([p["loss"] for p in curve]):
            facts.append(what + f", then recovered (final loss {last['loss']:.3g})")
        else:
            problems.append(what + " and had not recovered at the end (lower `teacher.optim.lr`)")
    else:
        facts.append("its held-out loss never spiked")
    return problems, facts


def students_health(summary: dict[str, Any], curves: dict[tuple[str, int], SeedCurves],
                    configured_seeds: int) -> tuple[list[str], list[str]]:
    """(problems, facts) about the students: missing seeds, loss spikes and whether they recovered,
    students that ended far below their own best accuracy."""
    problems, facts = [], []
    total = spiked = 0
    unrecovered, collapsed, missing, where_spiked = [], [], [], {}
    for label, entry in summary["methods"].items():
        for budget, b in entry["budgets"].items():
            c = curves.get((label, int(budget)))
            where = f"`{label}` at budget {int(budget):,}"
            if len(b["seeds"]) < configured_seeds:
                missing.append(f"{where} ({len(b['seeds'])} of {configured_seeds})")
            for i, (seed, r) in enumerate(b["seeds"].items()):
                total += 1
                spiked += bool(r.get("loss_spikes"))
                if r.get("loss_spikes"):
                    where_spiked[label] = where_spiked.get(label, 0) + 1
                if c is None or i >= len(c.loss):
                    continue
                if r.get("loss_spikes") and not _recovered(list(c.loss[i])):
                    unrecovered.append(f"{where}, seed {seed}")
                if c.accuracy[i].max() - c.accuracy[i][-1] > COLLAPSE:
                    collapsed.append(f"{where}, seed {seed} ({c.accuracy[i].max():.3f} → {c.accuracy[i][-1]:.3f})")
    if missing:
        problems.append("some students have not finished: " + "; ".join(missing) + " (medians over fewer seeds)")
    if unrecovered:
        problems.append(f"{len(unrecovered)} student(s) ended with a held-out loss above twice their best: "
                        + "; ".join(unrecovered[:6]) + ("; …" if len(unrecovered) > 6 else "")
                        + " (too high a `students.optim.lr`, or a confidently wrong teacher checkpoint)")
    if collapsed:
        problems.append(f"{len(collapsed)} student(s) ended more than {COLLAPSE:g} below their own best held-out "
                        "accuracy: " + "; ".join(collapsed[:6]) + ("; …" if len(collapsed) > 6 else ""))
    if spiked and not unrecovered:
        counts = ", ".join(f"`{k}` {n}" for k, n in where_spiked.items())
        facts.append(f"{spiked} of {total} students had a held-out loss spike (above twice their best so far: "
                     f"{counts}) and all recovered by the end")
    elif not spiked:
        facts.append(f"no student of the {total} had a held-out loss spike")
    return problems, facts


def health(summary: dict[str, Any], curves: dict[tuple[str, int], SeedCurves], configured_seeds: int) -> str:
    """One paragraph: the verdict in bold, then its evidence."""
    problems, facts = teacher_health(summary)
    if summary["methods"]:
        p, f = students_health(summary, curves, configured_seeds)
        problems, facts = problems + p, facts + f
    if problems:
        head = "**Run health: read the numbers with care.** "
        body = "; ".join(problems) + "." + (" Otherwise: " + "; ".join(facts) + "." if facts else "")
    else:
        head = "**Run health: the numbers can be trusted.** "
        body = "; ".join(facts) + "."
    return head + body[0].upper() + body[1:]
