"""Report: report.md with result tables and PNG plots, written from a run folder's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .config import Recipe  # noqa: E402
from .io import read_json, write_text  # noqa: E402
from .experiment import samples_to_target_text, student_folder  # noqa: E402
from .probes.monomials import monomial_series, transition_window  # noqa: E402
from .report_text import corpus_section, paper_section  # noqa: E402


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _shade_phases(ax, phases: dict[str, Any] | None) -> None:
    if phases:
        ax.axvspan(phases["drop_start"], phases["drop_end"], color="orange", alpha=0.15, label="sharp drop")
        ax.axvline(phases["middle"], color="orange", ls="--", lw=1, label="middle of drop")


def plot_teacher(summary: dict[str, Any], path: Path) -> None:
    teacher = summary["teacher"]
    curve = teacher["curve"]
    steps = [p["step"] for p in curve]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.plot(steps, [p["accuracy"] for p in curve], color="k")
    ax2.plot(steps, [p["loss"] for p in curve], color="k")
    if summary.get("oracle"):
        for ax, key in ((ax1, "accuracy"), (ax2, "loss")):
            ax.axhline(summary["oracle"]["eval"][key], color="grey", ls=":", label="Bayes-optimal")
    for ax, name in ((ax1, "held-out accuracy"), (ax2, "held-out loss")):
        _shade_phases(ax, teacher["phases"])
        for ref, step in (teacher["auto_checkpoint"] or {}).items():
            ax.axvline(step, color={"before": "tab:blue", "middle": "tab:red", "after": "tab:green"}[ref],
                       lw=1, alpha=0.8, label=f"checkpoint '{ref}' ({step})")
        ax.set_xlabel("teacher step")
        ax.set_ylabel(name)
    if summary.get("corpus"):
        ax2.axhline(summary["corpus"]["unigram_loss"], color="grey", ls=":", label="unigram loss")
    ax2.set_yscale("log")
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=7)
    fig.suptitle("Teacher trajectory")
    _save(fig, path)


def plot_monomials(rows: list[dict[str, Any]], phases: dict[str, Any] | None, path: Path) -> None:
    """Correlations over the whole trajectory and, if phases are known, zoomed on the transition."""
    series = monomial_series(rows)
    window = transition_window(phases)
    fig, axes = plt.subplots(1, 2 if window else 1, figsize=(13 if window else 7, 4), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(series["in"])))
    for ax, zoom in zip(axes[0], (None, window)):
        keep = [i for i, s in enumerate(series["steps"]) if zoom is None or
                zoom[0] - (zoom[1] - zoom[0]) // 2 <= s <= zoom[1] + (zoom[1] - zoom[0]) // 2]
        steps = [series["steps"][i] for i in keep]
        for c, j in zip(colors, series["in"]):
            ax.plot(steps, [series["in"][j][i] for i in keep], color=c, marker=".", label=f"degree {j}, in support")
            ax.plot(steps, [series["off"][j][i] for i in keep], color=c, ls=":", label=f"degree {j}, off support")
        _shade_phases(ax, phases)
        ax.set_xlabel("teacher step")
        ax.set_ylabel("mean |corr(chi_A, p1)|")
        acc = ax.twinx()
        acc.plot(steps, [series["accuracy"][i] for i in keep], color="k", alpha=0.5, lw=2)
        acc.set_ylabel("teacher held-out accuracy (grey)")
        ax.set_title("whole trajectory" if zoom is None else "around the transition", fontsize=9)
    axes[0][0].legend(fontsize=7, loc="upper right")
    fig.suptitle("Implicit curriculum: monomial correlations over the teacher trajectory")
    _save(fig, path)


def plot_students(recipe: Recipe, out: Path, summary: dict[str, Any], path: Path) -> None:
    budgets = sorted({int(b) for entry in summary["methods"].values() for b in entry["budgets"]})
    fig, axes = plt.subplots(1, len(budgets), figsize=(6 * len(budgets), 4), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        for label, entry in summary["methods"].items():
            if str(budget) not in entry["budgets"]:
                continue
            seeds = entry["budgets"][str(budget)]["seeds"]
            curves = [read_json(student_folder(out, label, budget, int(seed)) / "curve.json") for seed in seeds]
            samples = np.array([p["samples"] for p in curves[0]])
            accs = np.array([[p["accuracy"] for p in c] for c in curves])
            line, = ax.plot(samples, accs.mean(0), label=f"{label} ({len(seeds)} seeds)")
            ax.fill_between(samples, accs.min(0), accs.max(0), color=line.get_color(), alpha=0.15)
        ax.axhline(recipe.report.target, color="gray", ls=":", lw=1)
        ax.set_xlabel("training samples seen")
        ax.set_ylabel("held-out accuracy")
        ax.set_title(f"Students, budget {budget} steps (mean, band = min..max over seeds)", fontsize=9)
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_ngram(rows: list[dict[str, Any]], phases: dict[str, Any] | None, path: Path,
               oracle: dict[str, Any] | None = None) -> None:
    """Medians and quartiles over the trajectory; the Bayes-optimal predictor's medians dashed."""
    steps = [r["step"] for r in rows]
    windows = sorted(rows[0]["result"]["windows"], key=int)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.cm.plasma(np.linspace(0, 0.8, len(windows)))
    for c, w in zip(colors, windows):
        for ax, kind in ((ax1, "robust"), (ax2, "close")):
            stats = [r["result"]["windows"][w][kind] for r in rows]
            ax.plot(steps, [x["median"] for x in stats], color=c, marker=".", label=f"{w}-token window")
            ax.fill_between(steps, [x["q25"] for x in stats], [x["q75"] for x in stats], color=c, alpha=0.15)
            if oracle is not None:
                ax.axhline(oracle["windows"][w][kind]["median"], color=c, ls=":", lw=1.2,
                           label=f"{w}: Bayes-optimal")
    for ax, kind in ((ax1, "M_robust (mask the window: large = relies on it)"),
                     (ax2, "M_close (mask all but the window: small = it suffices)")):
        _shade_phases(ax, phases)
        ax.set_yscale("log")
        ax.set_xlabel("teacher step")
        ax.set_ylabel("total variation, median and quartiles")
        ax.set_title(kind, fontsize=9)
    ax1.legend(fontsize=7)
    _save(fig, path)


def ngram_table(rows: list[dict[str, Any]], oracle: dict[str, Any] | None = None) -> str:
    windows = sorted(rows[0]["result"]["windows"], key=int)
    head = " | ".join(f"M_robust {w}" for w in windows) + " | " + " | ".join(f"M_close {w}" for w in windows)
    lines = [f"| teacher step | loss | {head} |", "|" + " --- |" * (2 + 2 * len(windows))]
    named = [(str(r["step"]), r.get("loss", float("nan")), r["result"]) for r in rows]
    if oracle is not None:
        named.append(("Bayes-optimal", oracle["eval"]["loss"], oracle["ngram"]))
    for name, loss, result in named:
        ws = result["windows"]
        cells = [f"{ws[w]['robust']['median']:.3g}" for w in windows] + [f"{ws[w]['close']['median']:.3g}"
                                                                         for w in windows]
        lines.append(f"| {name} | {loss:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_nonterminal(rows: list[dict[str, Any]], phases: dict[str, Any] | None, path: Path) -> None:
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for level, first in enumerate(rows[0]["result"]["levels"]):
        line, = ax.plot(steps, [r["result"]["levels"][level]["accuracy"] for r in rows], marker=".",
                        label=f"level {level + 1}")
        if first.get("position_baseline") is not None:
            ax.axhline(first["position_baseline"], color=line.get_color(), linestyle=":", linewidth=1,
                       label=f"level {level + 1}, position alone")
    _shade_phases(ax, phases)
    ax.set_xlabel("teacher step")
    ax.set_ylabel("probe accuracy (held-out)")
    ax.set_title("Non-terminal probe on frozen hidden states")
    ax.legend(fontsize=7)
    _save(fig, path)


def nonterminal_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    levels = len(rows[0]["result"]["levels"])
    lines = ["| model | " + " | ".join(f"level {i + 1}" for i in range(levels)) + " | mean |",
             "|" + " --- |" * (levels + 2)]

    def row(name: str, results: list[dict[str, Any]]) -> str:
        per_level = [np.mean([r["levels"][i]["accuracy"] for r in results]) for i in range(levels)]
        return f"| {name} | " + " | ".join(f"{a:.3f}" for a in per_level) + \
            f" | {np.mean([r['mean_accuracy'] for r in results]):.3f} |"

    baseline = [lv.get("position_baseline") for lv in rows[0]["result"]["levels"]]
    if None not in baseline:  # a property of the probe's sentences, the same for every model
        lines.append("| position alone (baseline) | " + " | ".join(f"{a:.3f}" for a in baseline) +
                     f" | {np.mean(baseline):.3f} |")
    for r in rows:
        lines.append(row(f"teacher step {r['step']}", [r["result"]]))
    for label, entry in summary["methods"].items():
        for budget, b in entry["budgets"].items():
            results = [s["probes"]["nonterminal"] for s in b["seeds"].values() if "nonterminal" in s.get("probes", {})]
            if results:
                lines.append(row(f"student {label}, budget {budget} (mean of {len(results)} seeds)", results))
    return "\n".join(lines)


def plot_sweep(summary: dict[str, Any], path: Path) -> None:
    sweep = summary["sweep"]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [e["checkpoint"] for e in sweep]
    for x, e in zip(xs, sweep):
        ax.scatter([x] * len(e["final_accuracies"]), e["final_accuracies"], color="gray", s=8)
    ax.plot(xs, [e["median_final_accuracy"] for e in sweep], color="k", marker="o", label="median over seeds")
    teacher = summary["teacher"]
    _shade_phases(ax, teacher["phases"])
    if teacher["auto_checkpoint"]:
        ax.axvline(teacher["auto_checkpoint"]["middle"], color="tab:red", lw=1, label="auto's choice")
    ax.set_xlabel("intermediate teacher checkpoint T")
    ax.set_ylabel("student final accuracy")
    ax.set_title(f"(2, T)-progressive sweep: checkpoint T for {sweep[0]['switch']} steps, then the final teacher",
                 fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)


def sweep_table(summary: dict[str, Any]) -> str:
    lines = ["| checkpoint T | teacher accuracy at T | student final accuracy, median [min–max] | mean ± s.e. |",
             "| --- | --- | --- | --- |"]
    curve = summary["teacher"]["curve"]
    for e in summary["sweep"]:
        acc = min(curve, key=lambda p: abs(p["step"] - e["checkpoint"]))["accuracy"]
        a = e["final_accuracies"]
        error = f" ± {np.std(a, ddof=1) / np.sqrt(len(a)):.4f}" if len(a) > 1 else ""
        lines.append(f"| {e['checkpoint']} | {acc:.3f} | {e['median_final_accuracy']:.4f} [{min(a):.4f}–{max(a):.4f}] "
                     f"| {np.mean(a):.4f}{error} |")
    best = summary["sweep_best"]
    text = f"Best T: {best['checkpoint']}"
    if best.get("seeds_compared", 0) > 1:
        text += f" (the best T on {best['best_on_seeds']} of {best['seeds_compared']} seeds)"
    if "phase" in best:
        p = summary["teacher"]["phases"]
        text += f", {best['phase']} ({p['drop_start']}–{p['drop_end']})"
    if "auto" in best:
        text += f"; `auto` chose {best['auto']}, {best['checkpoints_from_auto']} saved checkpoint(s) from it"
    inside = best.get("best_inside_drop")
    if inside and inside["checkpoint"] != best["checkpoint"]:
        text += f"; the best T inside the drop is {inside['checkpoint']} ({inside['median_final_accuracy']:.4f})"
    overlapping = ", ".join(map(str, best["overlapping"])) or "none"
    lines += ["", f"{text}. Other T whose best seed reaches the best T's worst seed: {overlapping}."]
    return "\n".join(lines)


def results_table(recipe: Recipe, summary: dict[str, Any]) -> str:
    lines = ["| budget | method | final accuracy, median [min–max] | samples to target, median | reached |",
             "| --- | --- | --- | --- | --- |"]
    for label, entry in summary["methods"].items():
        for budget, b in entry["budgets"].items():
            accs = [r["final_accuracy"] for r in b["seeds"].values()]
            lines.append(f"| {budget} | {label} | {b['median_final_accuracy']:.3f} [{min(accs):.3f}–{max(accs):.3f}] "
                         f"| {samples_to_target_text(b)} | {b['reached_target']}/{len(accs)} |")
    return "\n".join(lines)


def monomial_table(rows: list[dict[str, Any]]) -> str:
    series = monomial_series(rows)
    lines = ["| teacher step | accuracy | degree-1 in-support | degree-1 off-support | ratio |",
             "| --- | --- | --- | --- | --- |"]
    for i, step in enumerate(series["steps"]):
        a, b = series["in"]["1"][i], series["off"]["1"][i]
        lines.append(f"| {step} | {series['accuracy'][i]:.3f} | {a:.4f} | {b:.4f} | {a / b if b else float('nan'):.1f} |")
    return "\n".join(lines)


def _spikes(spikes: list[dict[str, Any]]) -> str:
    worst = max(spikes, key=lambda x: x["loss"])
    first = min(x["step"] for x in spikes)
    return (f"{len(spikes)} evaluation(s) from step {first} (highest {worst['loss']:.3g}, after a best of "
            f"{worst['best_before']:.3g})")


def teacher_spike_warning(summary: dict[str, Any]) -> list[str]:
    """A report line if the teacher's held-out loss spiked (see `trajectory.loss_spikes`)."""
    spikes = summary["teacher"].get("loss_spikes")
    return [f"**Warning:** the teacher's held-out loss spiked above twice its best so far at {_spikes(spikes)}; its "
            "checkpoints after that may not be a smooth trajectory (lower `teacher.optim.lr`)."] if spikes else []


def student_spike_warning(summary: dict[str, Any]) -> list[str]:
    """A report line naming, per method and budget, the students whose held-out loss spiked."""
    runs = []
    for label, entry in summary["methods"].items():
        for budget, b in entry["budgets"].items():
            hit = [r["loss_spikes"] for r in b["seeds"].values() if r.get("loss_spikes")]
            if hit:
                runs.append(f"{label} budget {budget}: {len(hit)} of {len(b['seeds'])} seed(s), "
                            f"{_spikes([x for spikes in hit for x in spikes])}")
    return [("**Warning:** held-out loss spiked above twice its best so far for " + "; ".join(runs) +
             ". Too high a `students.optim.lr` does this, and so does imitating a teacher checkpoint that is "
             "confidently wrong.")] if runs else []


def write_report(recipe: Recipe, out: Path, summary: dict[str, Any]) -> Path:
    """Write out/report.md and out/plots/*.png from a finished run."""
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    teacher = summary["teacher"]
    plot_teacher(summary, plots / "teacher.png")
    final = teacher["curve"][-1]
    parts = [
        f"# {recipe.name}", "", recipe.description.strip(), "",
        f"Target accuracy for samples-to-target: {recipe.report.target}. "
        f"Seeds: {recipe.students.seeds}. Resolved config: `config.yaml`; environment: `run.json`.", "",
        "## Teacher", "",
        f"Final held-out accuracy {final['accuracy']:.3f}, loss {final['loss']:.4f} after {final['step']} steps; "
        f"{len(teacher['checkpoints'])} checkpoints saved.",
    ]
    if teacher["phases"]:
        p = teacher["phases"]
        parts.append(f"Detected phase transition ({p['metric']}): sharp drop from step {p['drop_start']} to "
                     f"{p['drop_end']}, middle at {p['middle']}; checkpoints before / middle / after: "
                     f"{teacher['auto_checkpoint']}.")
    elif teacher.get("phases_error"):
        parts.append(f"**No phase transition detected** ({teacher['phases_error']}): methods that start from it "
                     "(`progressive` from a phase, `two-shot` at a phase, `auto`) cannot use this teacher.")
    parts += teacher_spike_warning(summary)
    oracle = summary.get("oracle")
    if oracle:
        parts.append(f"The grammar's Bayes-optimal predictor (exact inside-outside, same held-out masks): "
                     f"accuracy {oracle['eval']['accuracy']:.3f}, loss {oracle['eval']['loss']:.4f}.")
    parts += ["", "![teacher](plots/teacher.png)", ""]
    if summary.get("corpus"):
        parts += corpus_section(summary["corpus"])
    probe_file = out / "probes" / "teacher_monomials.json"
    if probe_file.is_file():
        rows = read_json(probe_file)
        plot_monomials(rows, teacher["phases"], plots / "monomials.png")
        peak = teacher["monomial_peak"]["transition"]
        whole = teacher["monomial_peak"]["whole_trajectory"]
        parts += ["## Curriculum probe: monomial correlations", "",
                  "Mean |E[chi_A(x) p1(x)]| over in-support sets and off-support sets of degree 1 "
                  "(all degrees in the plot and in `probes/teacher_monomials.json`).", "",
                  f"Peak of the degree-1 in-support mean around the transition (steps {peak['window']}): "
                  f"{peak['in_mean']:.4f} at teacher step {peak['step']} (accuracy {peak['accuracy']:.3f}); "
                  f"off-support mean there {peak['off_mean']:.4f}; ratio {peak['ratio']:.1f}. Over the whole "
                  f"trajectory: {whole['in_mean']:.4f} at step {whole['step']} (off-support {whole['off_mean']:.4f}).",
                  "",
                  monomial_table(rows), "", "![monomials](plots/monomials.png)", ""]
    probe_file = out / "probes" / "teacher_ngram.json"
    if probe_file.is_file():
        rows = read_json(probe_file)
        plot_ngram(rows, teacher["phases"], plots / "ngram.png", (oracle or {}).get("ngram"))
        parts += ["## Curriculum probe: n-gram reliance", "",
                  "Total variation between the prediction at a masked position and the prediction when the "
                  "window around it is masked too (M_robust) or when everything outside it is masked "
                  "(M_close); windows named by their size in tokens. Medians:", "",
                  ngram_table(rows, oracle if oracle and "ngram" in oracle else None), "",
                  "![ngram](plots/ngram.png)", ""]
    probe_file = out / "probes" / "teacher_nonterminal.json"
    if probe_file.is_file():
        rows = read_json(probe_file)
        plot_nonterminal(rows, teacher["phases"], plots / "nonterminal.png")
        parts += ["## Non-terminal probe", "", "Linear probe accuracy for each token's ancestor non-terminal at "
                  "each level of the parse tree (held-out sentences, padding excluded); the baseline predicts "
                  "it from the token's position alone.", "",
                  nonterminal_table(rows, summary), "", "![nonterminal](plots/nonterminal.png)", ""]
    if summary["methods"]:
        plot_students(recipe, out, summary, plots / "students.png")
        parts += ["## Students", "", results_table(recipe, summary), ""]
        parts += [line for warning in student_spike_warning(summary) for line in (warning, "")]
        parts += ["![students](plots/students.png)", ""]
    else:
        parts += ["## Students", "", "No student has finished yet (`progdistill distill` or `run` trains them).", ""]
    if summary.get("corpus"):
        parts += paper_section(summary)
    if summary["sweep"]:
        plot_sweep(summary, plots / "sweep.png")
        parts += ["## (2, T)-progressive sweep", "", sweep_table(summary), "", "![sweep](plots/sweep.png)", ""]
    write_text(out / "report.md", "\n".join(parts))
    return out / "report.md"
