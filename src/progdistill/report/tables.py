"""Tables of the report as (header, rows) of strings: results with ratios to CE, the curriculum probes,
the non-terminal probe and the (2, T) sweep."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..layout import samples_to_target_text
from ..probes.monomials import monomial_series
from .numbers import accuracy_ratio, baseline, samples_ratio

Rows = tuple[list[str], list[list[str]]]


def _samples_range(entry: dict[str, Any]) -> str:
    values = [r.get("samples_to_target") for r in entry["seeds"].values()]
    reached = sorted(v for v in values if v is not None)
    never = len(values) - len(reached)
    if not reached:
        return f"never ×{never}" if never > 1 else "never"
    span = f"{reached[0]:,}–{reached[-1]:,}" if len(reached) > 1 else f"{reached[0]:,}"
    return span + (f", never ×{never}" if never > 1 else ", never" if never else "")


def results_table(summary: dict[str, Any]) -> Rows:
    """Per budget and method: median final accuracy [min–max], its ratio to CE; median samples to
    target [range over seeds], its ratio to CE; how many seeds reached the target."""
    header = ["budget (steps)", "method", "final accuracy, median [min–max]", "vs CE",
              f"samples to {summary['target']:g}, median [seeds]", "vs CE", "reached"]
    rows = []
    for label, entry in summary["methods"].items():
        for budget, b in sorted(entry["budgets"].items(), key=lambda kv: int(kv[0])):
            accs = [r["final_accuracy"] for r in b["seeds"].values()]
            base = baseline(summary, budget)
            is_base = label == "ce"
            rows.append([f"{int(budget):,}", f"`{label}`",
                         f"{b['median_final_accuracy']:.3f} [{min(accs):.3f}–{max(accs):.3f}]",
                         "1" if is_base else accuracy_ratio(b, base),
                         f"{samples_to_target_text(b)} [{_samples_range(b)}]",
                         "1" if is_base else samples_ratio(b, base),
                         f"{b['reached_target']}/{len(accs)}"])
    rows.sort(key=lambda r: int(r[0].replace(",", "")))  # stable: methods in recipe order within a budget
    return header, rows


def monomial_table(rows: list[dict[str, Any]]) -> Rows:
    """Per probed teacher checkpoint: accuracy, degree-1 in-support and off-support mean correlation, ratio."""
    series = monomial_series(rows)
    header = ["teacher step", "teacher accuracy", "degree-1 in-support", "degree-1 off-support", "ratio"]
    out = []
    for i, step in enumerate(series["steps"]):
        a, b = series["in"]["1"][i], series["off"]["1"][i]
        ratio = f"{a / b:.1f}" if b else "–"
        out.append([f"{step:,}", f"{series['accuracy'][i]:.3f}", f"{a:.4f}", f"{b:.4f}", ratio])
    return header, out


def ngram_table(rows: list[dict[str, Any]], oracle: dict[str, Any] | None = None) -> Rows:
    """Per probed checkpoint (and the Bayes-optimal predictor): loss and the median M_robust / M_close per window."""
    windows = sorted(rows[0]["result"]["windows"], key=int)
    header = (["teacher step", "held-out loss"] + [f"M_robust, {w}-token window" for w in windows]
              + [f"M_close, {w}-token window" for w in windows])
    named = [(f"{r['step']:,}", r.get("loss"), r["result"]) for r in rows]
    if oracle is not None and "ngram" in oracle:
        named.append(("Bayes-optimal", oracle["eval"]["loss"], oracle["ngram"]))
    out = []
    for name, loss, result in named:
        ws = result["windows"]
        out.append([name, f"{loss:.3f}" if loss is not None else "–"]
                   + [f"{ws[w]['robust']['median']:.3g}" for w in windows]
                   + [f"{ws[w]['close']['median']:.3g}" for w in windows])
    return header, out


def nonterminal_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> Rows:
    """Per level: the position-alone baseline, each probed teacher checkpoint, each student (mean over seeds)."""
    levels = len(rows[0]["result"]["levels"])
    header = ["model"] + [f"level {i + 1}" for i in range(levels)] + ["mean"]

    def row(name: str, results: list[dict[str, Any]]) -> list[str]:
        per_level = [np.mean([r["levels"][i]["accuracy"] for r in results]) for i in range(levels)]
        return [name] + [f"{a:.3f}" for a in per_level] + [f"{np.mean([r['mean_accuracy'] for r in results]):.3f}"]

    out = []
    baseline_row = [lv.get("position_baseline") for lv in rows[0]["result"]["levels"]]
    if None not in baseline_row:  # a property of the probe's sentences, the same for every model
        out.append(["position alone (baseline)"] + [f"{a:.3f}" for a in baseline_row]
                   + [f"{np.mean(baseline_row):.3f}"])
    out += [row(f"teacher step {r['step']:,}", [r["result"]]) for r in rows]
    for label, entry in summary["methods"].items():
        for budget, b in entry["budgets"].items():
            results = [s["probes"]["nonterminal"] for s in b["seeds"].values() if "nonterminal" in s.get("probes", {})]
            if results:
                out.append(row(f"student `{label}`, budget {int(budget):,} (mean of {len(results)} seeds)", results))
    return header, out


def sweep_table(summary: dict[str, Any]) -> Rows:
    """Per T: the teacher's accuracy at T, the students' median [min–max] and mean ± standard error."""
    header = ["checkpoint T", "teacher accuracy at T", "student final accuracy, median [min–max]", "mean ± s.e."]
    curve = summary["teacher"]["curve"]
    out = []
    for e in summary["sweep"]:
        acc = min(curve, key=lambda p: abs(p["step"] - e["checkpoint"]))["accuracy"]
        a = e["final_accuracies"]
        error = f" ± {np.std(a, ddof=1) / np.sqrt(len(a)):.4f}" if len(a) > 1 else ""
        out.append([f"{e['checkpoint']:,}", f"{acc:.3f}",
                    f"{e['median_final_accuracy']:.4f} [{min(a):.4f}–{max(a):.4f}]", f"{np.mean(a):.4f}{error}"])
    return header, out


def sweep_text(summary: dict[str, Any]) -> str:
    """The sweep's best T in words: on how many seeds, where against the drop, auto's distance to it."""
    best = summary["sweep_best"]
    text = f"Best T: {best['checkpoint']:,}"
    if best.get("seeds_compared", 0) > 1:
        text += f" (the best T on {best['best_on_seeds']} of {best['seeds_compared']} seeds)"
    if "phase" in best:
        p = summary["teacher"]["phases"]
        text += f", {best['phase']} ({p['drop_start']:,}–{p['drop_end']:,})"
    if "auto" in best:
        text += f"; `auto` chose {best['auto']:,}, {best['checkpoints_from_auto']} saved checkpoint(s) from it"
    inside = best.get("best_inside_drop")
    if inside and inside["checkpoint"] != best["checkpoint"]:
        text += f"; the best T inside the drop is {inside['checkpoint']:,} ({inside['median_final_accuracy']:.4f})"
    overlapping = ", ".join(f"{t:,}" for t in best["overlapping"]) or "none"
    return f"{text}. Other T whose best seed reaches the best T's worst seed: {overlapping}."
