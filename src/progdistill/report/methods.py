""""What the methods are": each method's teacher schedule in words, as configured and as it resolved
on this run's teacher (checkpoint numbers, switch steps, speed and refresh)."""

from __future__ import annotations

from typing import Any

from ..schedule import Adaptive, Auto, Progressive, TwoShot, make_schedule
from ..trajectory import Phases

_REF = {"before": "the last checkpoint before the drop", "drop_start": "the start of the drop",
        "middle": "the middle of the drop", "drop_end": "the end of the drop",
        "after": "the first checkpoint after the drop", "final": "the final checkpoint"}

CONFIGURED = {
    "ce": "true labels only, no teacher",
    "one-shot": "the final teacher checkpoint at every step",
    "progressive": "the teacher's checkpoints in order: at step t, the first saved checkpoint at or after "
                   "start + s·R·(1 + ⌊t/R⌋) (speed s, refresh every R steps), then the final one",
    "two-shot": "one intermediate checkpoint for the first steps, then the final checkpoint",
    "adaptive": "starts at one checkpoint and moves to the next saved one whenever the student's held-out "
                "accuracy stops improving",
    "auto": "the checkpoint in the middle of the teacher's detected drop until the student catches up with it "
            "or stops improving, then the final checkpoint",
}


def teacher_accuracy(curve: list[dict[str, Any]], step: int) -> float:
    """The teacher's held-out accuracy at the evaluation nearest to `step`."""
    return min(curve, key=lambda p: abs(p["step"] - step))["accuracy"]


def _checkpoint(step: int, curve: list[dict[str, Any]]) -> str:
    return f"checkpoint {step:,} (teacher accuracy {teacher_accuracy(curve, step):.3f})"


def _where(ref: Any, step: int | None = None, phases: Phases | None = None, saved: list[int] | None = None) -> str:
    """' (the start of the drop)' for a phase reference `ref`. Given the `step` it resolved to, the
    teacher's `phases` and its `saved` checkpoints, a phase-named checkpoint that does not lie where its
    name says is described as what it is: the middle snapped outside the drop, or (no saved checkpoint
    in the drop at all) the start or end snapped to one on either side, ' (the saved checkpoint nearest
    the start of the drop at 5,678: 10,000, after the drop's end at 6,856)'. The start snapped to the
    checkpoint just before the drop while others lie inside it is the usual rounding, not flagged."""
    if not (isinstance(ref, str) and ref in _REF):
        return ""
    plain = f" ({_REF[ref]})"
    if step is None or phases is None or ref == "final":
        return plain
    start, end = phases.drop_start, phases.drop_end
    empty = not any(start <= c <= end for c in saved or [])
    if ref in ("drop_start", "middle", "drop_end") and not start <= step <= end and (ref == "middle" or empty):
        side = f"before the drop's start at {start:,}" if step < start else f"after the drop's end at {end:,}"
        return f" (the saved checkpoint nearest {_REF[ref]} at {getattr(phases, ref):,}: {step:,}, {side})"
    if ref == "before" and step >= start:
        return f" (no saved checkpoint before the drop's start at {start:,}: the first one, {step:,})"
    if ref == "after" and step <= end:
        return f" (no saved checkpoint after the drop's end at {end:,}: the last one, {step:,})"
    return plain


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _per_seed(values: dict[str, Any], unit: str = "") -> str:
    seeds = sorted(values, key=int)
    text = " / ".join("no switch" if values[s] is None else f"{values[s]:,}{unit}" for s in seeds)
    return f"{text} (seed{'s' if len(seeds) > 1 else ''} {' / '.join(seeds)})"


def _first_step_at_final(schedule: Progressive, budget: int) -> int | None:
    final = schedule.saved[-1]
    return next((t for t in range(0, budget, schedule.refresh) if schedule.checkpoint(t) == final), None)


def resolved(method: dict[str, Any], budgets: dict[str, Any], summary: dict[str, Any]) -> str:
    """How a method's schedule resolved on this teacher, per budget where it depends on the budget."""
    teacher = summary["teacher"]
    saved, curve = teacher["checkpoints"], teacher["curve"]
    phases = Phases(**teacher["phases"]) if teacher.get("phases") else None
    name = method["name"]
    if name == "ce":
        return "no teacher"
    parts = []
    for budget, entry in sorted(budgets.items(), key=lambda kv: int(kv[0])):
        try:
            schedule = make_schedule(method, saved, phases, curve, int(budget))
        except ValueError as e:
            return f"cannot run on this teacher: {e}"
        prefix = f"budget {int(budget):,}: " if len(budgets) > 1 else ""
        seeds = entry["seeds"]
        if name == "one-shot":
            return _checkpoint(saved[-1], curve)
        if isinstance(schedule, Progressive):
            reach = _first_step_at_final(schedule, int(budget))
            start = method.get("start", 0)
            used = sorted({c for r in seeds.values() for c in r.get("teacher_checkpoints", [])})
            where = _where(start, schedule.start, phases, saved)
            text = (f"from teacher step {schedule.start:,}{where}, s = {schedule.speed:.3g}"
                    f"{' (fitted to the budget)' if method.get('speed') == 'fit' else ''}, R = {schedule.refresh:,}"
                    f"{' (the checkpoint interval)' if not method.get('refresh') else ''}; "
                    + (f"the final checkpoint from step {reach:,}" if reach is not None else
                       "never the final checkpoint within the budget")
                    + (f"; {_count(len(used), 'checkpoint')}, {used[0]:,} to {used[-1]:,}" if used else ""))
        elif isinstance(schedule, TwoShot):
            where = _where(method.get("checkpoint"), schedule.intermediate, phases, saved)
            text = (f"checkpoint {schedule.intermediate:,}{where[:-1] + ', ' if where else ' ('}teacher accuracy "
                    f"{teacher_accuracy(curve, schedule.intermediate):.3f}) for steps "
                    f"0–{max(schedule.switch - 1, 0):,}, then {schedule.final:,}")
        elif isinstance(schedule, Adaptive):
            last = {s: max(r.get("teacher_checkpoints") or [schedule.saved[schedule.index]]) for s, r in seeds.items()}
            text = (f"from checkpoint {schedule.saved[schedule.index]:,}, patience {method.get('patience', 3)} "
                    f"evaluations, min gain {method.get('min_delta', 0.005):g}; last checkpoint reached: "
                    + _per_seed(last))
        elif isinstance(schedule, Auto):
            switches = {s: (schedule.switch if schedule.switch is not None else
                            (r.get("schedule") or {}).get("switched_at")) for s, r in seeds.items()}
            outside = _where("middle", schedule.intermediate, phases, saved)
            outside = "" if outside == _where("middle") else outside
            text = (f"{_checkpoint(schedule.intermediate, curve)}{outside}, then {schedule.final:,} from step "
                    + _per_seed(switches) + f" (at the latest {schedule.latest:,})")
        else:  # a schedule this report does not know: name its checkpoints
            used = sorted({c for r in seeds.values() for c in r.get("teacher_checkpoints", [])})
            text = "checkpoints " + ", ".join(f"{c:,}" for c in used)
        parts.append(prefix + text)
    return "; ".join(parts)


def configured(method: dict[str, Any]) -> str:
    """The method's rule in words, with the options set in the recipe."""
    name = method["name"]
    text = CONFIGURED.get(name, name)
    if name == "two-shot":
        text = (f"checkpoint `{method['checkpoint']}`{_where(method['checkpoint'])} for the first "
                f"{method['switch']:,} steps, then the final checkpoint")
    elif name == "auto" and method.get("switch") is not None:
        text = (f"the checkpoint in the middle of the teacher's detected drop for {method['switch']:,} steps, then the "
                "final one")
    elif name == "progressive":
        speed = method.get("speed", 1)
        opts = [f"speed {speed if isinstance(speed, str) else format(speed, 'g')}", f"start `{method.get('start', 0)}`"]
        if method.get("refresh"):
            opts.append(f"refresh {method['refresh']:,}")
        if method.get("speed") == "fit":
            opts.append(f"final checkpoint by {method.get('reach', 1.0):g} × budget")
        text += " (" + ", ".join(opts) + ")"
    return text


def methods_rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row per method: label, its rule as configured (the rule in full at the first label of each
    method, its options after that), its schedule as resolved on this teacher."""
    rows, first = [], {}
    for label, entry in summary["methods"].items():
        method = entry["method"]
        text = configured(method)
        name = method["name"]
        if name in first and name in ("progressive", "adaptive", "auto") and text.endswith(")"):
            text = f"as `{first[name]}`" + text[text.rindex(" ("):]
        first.setdefault(name, label)
        rows.append([f"`{label}`", text, resolved(method, entry["budgets"], summary)])
    return rows



