"""The report's computed sentences: the one-paragraph answer, what identical rows mean, and whether the
run is healthy enough for its numbers to be trusted. Every number comes from summary.json."""

from __future__ import annotations

from typing import Any

from ..io import read_json
from ..layout import student_folder
from .numbers import BASELINE, baseline, budgets

PERFECT = 0.9995  # held-out accuracy at which a teacher's argmax is the label on (practically) every input


def _names(labels: list[str]) -> str:
    quoted = [f"`{x}`" for x in labels]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def budget_answer(summary: dict[str, Any], budget: str, several: bool) -> str:
    """One or two sentences on one budget: the fastest method to the target and its ratio to CE, the
    methods that never reached it; or, when no method reached it on most seeds, the best final accuracy."""
    target = summary["target"]
    entries = {label: e["budgets"][budget] for label, e in summary["methods"].items() if budget in e["budgets"]}
    base = baseline(summary, budget)
    where = f"At budget {int(budget):,} steps, " if several else ""
    reached = {k: e for k, e in entries.items() if not e["median_samples_is_lower_bound"]}
    text = []
    if reached:
        best = min(reached, key=lambda k: reached[k]["median_samples_to_target"])
        e = reached[best]
        n = len(e["seeds"])
        sentence = (f"{where}`{best}` reached the target accuracy {target:g} first: in "
                    f"{e['median_samples_to_target']:,} training samples (median of {_seeds(n)})")
        if best == BASELINE and len(reached) > 1:
            sentence += ", no teacher-based method faster"
        if base is not None and best != BASELINE:
            ratio = e["median_samples_to_target"] / base["median_samples_to_target"]
            if base["median_samples_is_lower_bound"]:
                sentence += (f", at most {ratio:.2f}× CE's {base['median_samples_to_target']:,} (a lower bound: CE "
                             f"reached it on {base['reached_target']} of {_seeds(len(base['seeds']))} within its "
                             "budget)")
            else:
                sentence += f", {ratio:.2f}× the {base['median_samples_to_target']:,} samples CE needed"
        text.append(sentence + ".")
        never = [k for k, x in entries.items() if x["reached_target"] == 0]
        if never:
            counts = {len(entries[k]["seeds"]) for k in never}
            each = f" (0 of {_seeds(counts.pop())}{' each' if len(never) > 1 else ''})" if len(counts) == 1 else ""
            text.append(f"{_names(never)} never reached it{each}.")
    top = max(e["median_final_accuracy"] for e in entries.values())
    winners = [k for k, e in entries.items() if e["median_final_accuracy"] == top]
    if len(winners) == 1:
        sentence = f"The highest median final accuracy was `{winners[0]}`'s, {top:.3f}"
    else:
        sentence = f"{_names(winners)} ended at the highest median final accuracy, {top:.3f}"
    if not reached:
        none = f"no method reached the target accuracy {target:g} on most seeds. "
        sentence = (where + none if where else none[0].upper() + none[1:]) + sentence
    if base is not None and BASELINE not in winners:
        sentence += f", {100 * (top - base['median_final_accuracy']):+.1f} points over CE " \
                    f"({base['median_final_accuracy']:.3f})"
        one_shot = entries.get("one-shot")
        if one_shot is not None and "one-shot" not in winners:
            sentence += (f" and {100 * (top - one_shot['median_final_accuracy']):+.1f} over "
                         f"one-shot ({one_shot['median_final_accuracy']:.3f})")
    text.append(sentence + ".")
    return " ".join(text)


def answer(summary: dict[str, Any]) -> str:
    """The report's first paragraph: the result per budget, with numbers equal to summary.json's."""
    if not summary["methods"]:
        return "No student has finished yet, so there is no result to state; the teacher's part is below."
    several = len(budgets(summary)) > 1
    return " ".join(budget_answer(summary, b, several) for b in budgets(summary))


def _same_students(a: dict[str, Any], b: dict[str, Any], curves_a=None, curves_b=None) -> bool:
    """Whether two methods' students ended identical on every common seed: same final accuracy and
    samples to target and, when the curves are at hand, the same held-out curve at every evaluation
    (two students stuck at chance share their final numbers without being the same student)."""
    keys = ("final_accuracy", "samples_to_target")
    common = set(a["seeds"]) & set(b["seeds"])
    if not common or not all(all(a["seeds"][s].get(k) == b["seeds"][s].get(k) for k in keys) for s in common):
        return False
    if curves_a is None or curves_b is None:
        return True
    return (list(a["seeds"]) == list(b["seeds"]) and curves_a.loss.shape == curves_b.loss.shape
            and bool((curves_a.loss == curves_b.loss).all() and (curves_a.accuracy == curves_b.accuracy).all()))


def _supervision(out, label: str, budget: str, seed: str) -> Any:
    try:
        return [(seg["start"], seg["end"], seg["checkpoint"])
                for seg in read_json(student_folder(out, label, int(budget), int(seed)) / "supervision.json")]
    except Exception:  # a missing or older file: no claim about it
        return None


def identical_rows(summary: dict[str, Any], out, tau: float, curves: dict | None = None) -> list[str]:
    """A sentence for each group of methods whose students ended identical at a budget, saying why.
    `curves`: (label, budget) -> SeedCurves, to compare whole held-out curves."""
    curves = curves or {}
    teacher = summary["teacher"]
    perfect = {c for c in teacher["checkpoints"]
               if min(teacher["curve"], key=lambda p: abs(p["step"] - c))["accuracy"] >= PERFECT}
    notes = []
    for budget in budgets(summary):
        entries = {k: e["budgets"][budget] for k, e in summary["methods"].items() if budget in e["budgets"]}
        groups: list[list[str]] = []
        for label in entries:  # each method joins the first group whose first member it equals
            home = next((g for g in groups if _same_students(entries[g[0]], entries[label],
                                                             curves.get((g[0], int(budget))),
                                                             curves.get((label, int(budget))))), None)
            if home is None:
                groups.append([label])
            else:
                home.append(label)
        for group in (g for g in groups if len(g) > 1):
            used = sorted({c for k in group for r in entries[k]["seeds"].values()
                           for c in r.get("teacher_checkpoints", [])})
            head = f"{_names(group)} (budget {int(budget):,}) have identical rows"
            if tau == 0 and set(used) <= perfect:
                which = ", ".join(f"{c:,}" for c in used)
                notes.append(f"{head}: with τ = 0 a student learns its teacher checkpoint's argmax as its label, "
                             f"and every checkpoint these students learned from ({which}) is perfect on the "
                             "held-out set (accuracy 1.000), so its argmax is the true label: the same labels, "
                             "from the same initialisation, on the same data.")
            elif all(len({repr(_supervision(out, k, budget, s)) for k in group}) == 1
                     and _supervision(out, group[0], budget, s) is not None for s in entries[group[0]]["seeds"]):
                notes.append(f"{head}: their schedules resolved to the same teacher checkpoint at every step (see "
                             "the methods table), and students of one seed share their initialisation and data.")
            else:
                notes.append(f"{head} although their supervision differs: the checkpoints they learned from gave "
                             "the same labels on the inputs these students saw.")
    return notes
