"""Run health: did the teacher leave its plateau, did any loss spike and recover, did a student end
far below its own best? One verdict on whether the numbers can be trusted, with the evidence."""

from __future__ import annotations

from typing import Any

import numpy as np

from .curves import SeedCurves

COLLAPSE = 0.05  # a student that ends this far below its own best held-out accuracy has collapsed
DROP_CHECKPOINTS = 4  # the checkpoints in the drop that the suggested `teacher.checkpoint_every` gives
RISE = 0.05  # a teacher whose accuracy rose less than this never left its plateau (even with a drop detected)


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
    rose = (last["accuracy"] - first["accuracy"]) if None not in (first["accuracy"], last["accuracy"]) else None
    if rose is not None and rose < RISE:  # a "drop" detected in the noise of a flat curve is no transition
        problems.append(f"the teacher never left its plateau (held-out accuracy {first['accuracy']:.3f} → "
                        f"{last['accuracy']:.3f}): every method that learns from its checkpoints learns from a "
                        "teacher that knows nothing (train it longer, or with a larger `teacher.optim.lr`)")
    elif teacher.get("phases"):
        p = teacher["phases"]
        facts.append(f"the teacher left its plateau (sharp drop at steps {p['drop_start']:,}–{p['drop_end']:,}) and "
                     f"ended at held-out accuracy {last['accuracy']:.3f}")
        unresolved = unresolved_drop(teacher.get("checkpoints") or [], p)
        if unresolved:
            problems.append(unresolved)
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


def suggested_checkpoint_every(width: int, count: int = DROP_CHECKPOINTS) -> int:
    """The largest 1, 2 or 5 x 10^k steps that is at most `width` / `count`: saving a checkpoint that often
    puts at least `count` of them in any `width` steps (any interval of length L holds at least floor(L / n)
    multiples of n), so `count` in the drop; 1 for a drop narrower than `count` steps."""
    target = max(width / count, 1.0)
    best = 1
    for exponent in range(len(str(int(target))) + 1):
        for mantissa in (1, 2, 5):
            if mantissa * 10**exponent <= target:
                best = max(best, mantissa * 10**exponent)
    return best


def unresolved_drop(checkpoints: list[int], phases: dict[str, Any]) -> str | None:
    """A problem (None if none) when no saved checkpoint lies in the teacher's drop [drop_start, drop_end]
    (both ends included): the checkpoints do not resolve the phase transition, so every method that needs
    a checkpoint inside it (`progressive` from a phase, `two-shot` at a phase, `auto`) resolves to a
    checkpoint before or after the drop, and a progressive schedule jumps over it. Names the drop, the
    saved checkpoints on either side of it and a `teacher.checkpoint_every` that puts DROP_CHECKPOINTS in it."""
    start, end = phases["drop_start"], phases["drop_end"]
    if not checkpoints or any(start <= c <= end for c in checkpoints):
        return None
    before = [c for c in checkpoints if c < start]
    after = [c for c in checkpoints if c > end]
    around = " and ".join(([f"the last before it at {before[-1]:,}"] if before else [])
                          + ([f"the first after it at {after[0]:,}"] if after else []))
    every = suggested_checkpoint_every(end - start)
    return (f"no saved teacher checkpoint lies in its sharp drop (steps {start:,}–{end:,}; {around}), so the methods "
            "that learn from the drop (`progressive` from a phase, `two-shot` at a phase, `auto`) were taught by a "
            f"checkpoint outside it and a progressive schedule jumps over it (save checkpoints more often: "
            f"`teacher.checkpoint_every={every}` puts at least {DROP_CHECKPOINTS} in the drop)")


def _ended_on_intermediate(r: dict[str, Any], final: int) -> bool:
    """Whether a student's last teacher was an intermediate checkpoint (the final one never took over)."""
    used = r.get("teacher_checkpoints") or []
    return bool(used) and max(used) < final


def _grouped(items: list[tuple[str, str]]) -> str:
    """'`a` at budget 300 (seeds 0, 1); ...' from (where, seed) pairs."""
    groups: dict[str, list[str]] = {}
    for where, seed in items:
        groups.setdefault(where, []).append(seed)
    return "; ".join(f"{w} (seed{'s' if len(v) > 1 else ''} {', '.join(v)})" for w, v in groups.items())


def students_health(summary: dict[str, Any], curves: dict[tuple[str, int], SeedCurves],
                    configured_seeds: int) -> tuple[list[str], list[str]]:
    """(problems, facts) about the students: missing seeds; loss spikes and whether they recovered;
    students that ended with a held-out loss above twice their best, or more than COLLAPSE below their
    best accuracy with a loss 1.5× their best (not the noise of a student at chance). Such an end is a
    problem for a student taught by the labels or the final teacher at the end, and expected of one
    still imitating an intermediate checkpoint (wrong on part of the inputs) when its budget ran out."""
    problems, facts = [], []
    final = summary["teacher"]["checkpoints"][-1]
    total = spiked = 0
    bad, expected, missing, where_spiked = [], [], [], {}
    for label, entry in summary["methods"].items():
        for budget, b in entry["budgets"].items():
            c = curves.get((label, int(budget)))
            where = f"`{label}` at budget {int(budget):,}"
            if len(b["seeds"]) < configured_seeds:
                missing.append(f"{where} ({len(b['seeds'])} of {configured_seeds})")
            for i, (seed, r) in enumerate(b["seeds"].items()):
                total += 1
                if r.get("loss_spikes"):
                    spiked += 1
                    where_spiked[label] = where_spiked.get(label, 0) + 1
                if c is None or i >= len(c.loss):
                    continue
                loss, acc = c.loss[i], c.accuracy[i]
                best_loss = np.nanmin(loss) if np.isfinite(loss).any() else np.inf
                worse = not _recovered(list(loss)) or (acc.max() - acc[-1] > COLLAPSE and loss[-1] > 1.5 * best_loss)
                if worse:
                    (expected if _ended_on_intermediate(r, final) else bad).append((where, seed))
    if missing:
        problems.append("some students have not finished: " + "; ".join(missing) + " (medians over fewer seeds)")
    if bad:
        problems.append(f"{len(bad)} student(s) ended well below their own best (held-out loss above twice its "
                        f"best, or accuracy more than {COLLAPSE:g} below its best): {_grouped(bad)}; too high a "
                        "`students.optim.lr` does this")
    if expected:
        facts.append(f"{len(expected)} student(s) ended below their own best while still taught by an intermediate "
                     f"checkpoint, which is wrong on part of the inputs: {_grouped(expected)} (the method's result "
                     "at that budget, not a failed run)")
    if spiked:
        counts = ", ".join(f"`{k}` {n}" for k, n in where_spiked.items())
        facts.append(f"{spiked} of {total} students had a held-out loss spike (above twice their best so far: "
                     f"{counts})" + ("" if bad or expected else " and all recovered by the end"))
    else:
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
