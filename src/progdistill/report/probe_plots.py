"""Figures of the curriculum probes over the teacher's trajectory (one figure per claim)."""

from __future__ import annotations

from typing import Any

from ..probes.monomials import monomial_series, transition_window
from .style import PAGE, SERIES, TEACHER, figure, legend_below, log_y, shade_drop, thousands

IN_SUPPORT = {"color": "#0072B2", "marker": "o", "linestyle": "-"}
OFF_SUPPORT = {"color": "#5F5F5F", "marker": "s", "linestyle": (0, (4, 1.5)), "markerfacecolor": "white"}
CORR = r"mean $|\mathbb{E}[\chi_A(x)\,p_1(x)]|$"


def _zoom(steps: list[int], window: tuple[int, int] | None) -> list[int]:
    if window is None:
        return list(range(len(steps)))
    pad = (window[1] - window[0]) // 2
    return [i for i, s in enumerate(steps) if window[0] - pad <= s <= window[1] + pad]


def monomials_figure(rows: list[dict[str, Any]], phases: dict[str, Any] | None):
    """The degree-1 claim: in-support vs off-support mean correlation over the whole trajectory and
    around the transition, with the teacher's accuracy in a strip above (no twin axis)."""
    s = monomial_series(rows)
    window = transition_window(phases)
    views = [("whole trajectory", _zoom(s["steps"], None))] + ([("around the transition", _zoom(s["steps"], window))]
                                                               if window else [])
    fig, axes = figure(PAGE, 3.4, ncols=len(views), nrows=2, sharex="col",
                       gridspec_kw={"height_ratios": [1, 2.4]})
    for col, (title, keep) in enumerate(views):
        steps = [s["steps"][i] for i in keep]
        top, ax = axes[0, col], axes[1, col]
        top.plot(steps, [s["accuracy"][i] for i in keep], color=TEACHER, lw=1.2, label="teacher accuracy")
        top.set_title(title)
        top.set_ylabel("teacher\naccuracy")
        ax.plot(steps, [s["in"]["1"][i] for i in keep], label=r"in-support $\chi_{\{i\}}$, $i \in S$", **IN_SUPPORT)
        ax.plot(steps, [s["off"]["1"][i] for i in keep], label=r"off-support $\chi_{\{i\}}$, $i \notin S$",
                **OFF_SUPPORT)
        for a in (top, ax):
            shade_drop(a, phases, label=a is ax)
        ax.set_xlabel("teacher step")
        ax.set_ylim(bottom=0)
        thousands(ax)
    axes[1, 0].set_ylabel(CORR + "\n(degree 1)")
    legend_below(fig, axes.flat, ncol=4)
    return fig


def monomial_degrees_figure(rows: list[dict[str, Any]], phases: dict[str, Any] | None):
    """Every probed degree in its own panel: in-support vs off-support mean correlation."""
    s = monomial_series(rows)
    degrees = sorted(s["in"], key=int)
    ncols = len(degrees) if len(degrees) <= 3 else 2
    nrows = -(-len(degrees) // ncols)
    fig, axes = figure(PAGE, 2.1 * nrows + 0.4, ncols=ncols, nrows=nrows, sharex=True)
    for ax in axes.flat[len(degrees):]:
        ax.set_visible(False)
    for ax, j in zip(axes.flat, degrees):
        ax.plot(s["steps"], s["in"][j], label="in-support sets", **IN_SUPPORT)
        ax.plot(s["steps"], s["off"][j], label="off-support sets", **OFF_SUPPORT)
        shade_drop(ax, phases)
        whole = len(rows[0]["result"]["degrees"][j]["in_sets"]) == 1  # the one in-support set of degree k: S
        ax.set_title(f"degree {j}" + (" (the parity itself)" if whole else ""))
        ax.set_ylim(bottom=0)
        thousands(ax)
    for ax in axes[-1]:
        ax.set_xlabel("teacher step")
    for ax in axes[:, 0]:
        ax.set_ylabel(CORR)
    legend_below(fig, axes.flat, ncol=4)
    return fig


NGRAM_KINDS = (("robust", r"$M_{\mathrm{robust}}$: window masked too (large = relies on it)"),
               ("close", r"$M_{\mathrm{close}}$: all but the window masked (small = it suffices)"))


def ngram_figure(rows: list[dict[str, Any]], phases: dict[str, Any] | None, oracle: dict[str, Any] | None = None):
    """Median (line) and quartiles (band) of the n-gram probes per window size over the trajectory; the
    grammar's Bayes-optimal predictor dotted."""
    steps = [r["step"] for r in rows]
    windows = sorted(rows[0]["result"]["windows"], key=int)
    fig, axes = figure(PAGE, 2.8, ncols=2)
    for ax, (kind, title) in zip(axes[0], NGRAM_KINDS):
        for i, w in enumerate(windows):
            colour = SERIES[i % len(SERIES)]
            stats = [r["result"]["windows"][w][kind] for r in rows]
            ax.plot(steps, [x["median"] for x in stats], color=colour, marker="os^D"[i % 4],
                    label=f"{w}-token window: median, quartiles")
            ax.fill_between(steps, [x["q25"] for x in stats], [x["q75"] for x in stats], color=colour, alpha=0.15,
                            lw=0)
            if oracle is not None:
                ax.axhline(oracle["windows"][w][kind]["median"], color=colour, ls=":", lw=1.2,
                           label=f"{w}-token window: Bayes-optimal median")
        shade_drop(ax, phases)
        log_y(ax)
        ax.set_xlabel("teacher step")
        ax.set_ylabel("total variation distance")
        ax.set_title(title)
    legend_below(fig, axes.flat, ncol=3)
    return fig


def nonterminal_figure(rows: list[dict[str, Any]], phases: dict[str, Any] | None):
    """Linear-probe accuracy of each level's ancestor non-terminal on the teacher's hidden states; the
    accuracy of guessing from the position alone dotted."""
    steps = [r["step"] for r in rows]
    fig, axes = figure(PAGE / 1.4, 2.8)
    ax = axes[0, 0]
    for level, first in enumerate(rows[0]["result"]["levels"]):
        colour = SERIES[level % len(SERIES)]
        ax.plot(steps, [r["result"]["levels"][level]["accuracy"] for r in rows], color=colour,
                marker="os^D"[level % 4], label=f"level {level + 1}")
        if first.get("position_baseline") is not None:
            ax.axhline(first["position_baseline"], color=colour, ls=":", lw=1,
                       label=f"level {level + 1}, from position alone")
    shade_drop(ax, phases)
    ax.set_xlabel("teacher step")
    ax.set_ylabel("probe accuracy (held-out)")
    legend_below(fig, [ax], ncol=3)
    return fig
