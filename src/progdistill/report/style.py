"""One look for every figure: a colour-blind-safe colour, a dash pattern and a marker per method, fixed
for a run; 8 pt text at paper column widths; PNG for the report and PDF beside it.

Colours are Okabe & Ito's palette (the base methods), then Paul Tol's "muted" (further variants of a
method), both designed to stay distinct under the common colour-vision deficiencies; the dashes and
markers keep overlapping curves apart in print and in grey scale.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from ..io import write_file  # noqa: E402

COLUMN, PAGE = 3.5, 7.0  # figure widths in inches: one column, the whole page
TEACHER = "#000000"
PHASE = "#F0E442"  # the teacher's sharp drop, shaded (Okabe–Ito yellow: no method uses it)
TARGET = "#777777"
BASE_COLOURS = {"ce": "#5F5F5F", "one-shot": "#E69F00", "progressive": "#0072B2", "two-shot": "#D55E00",
                "adaptive": "#CC79A7", "auto": "#009E73"}
EXTRA_COLOURS = ["#56B4E9", "#882255", "#44AA99", "#999933", "#332288", "#AA4499", "#117733", "#DDCC77"]
DASHES = ["-", (0, (5, 2)), (0, (1, 1.5)), (0, (6, 2, 1.5, 2)), (0, (3, 1.5)), (0, (8, 2, 1.5, 2, 1.5, 2)),
          (0, (2, 2)), (0, (10, 3))]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
SERIES = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#882255", "#999933"]
RC = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8,
      "legend.fontsize": 8, "figure.titlesize": 9, "axes.spines.top": False, "axes.spines.right": False,
      "axes.linewidth": 0.6, "lines.linewidth": 1.3, "lines.markersize": 3.5, "legend.frameon": False,
      "savefig.dpi": 200, "figure.dpi": 100, "pdf.fonttype": 42, "axes.formatter.use_mathtext": True,
      "legend.handlelength": 3.0}


@dataclass(frozen=True)
class Look:
    """How one method is drawn in every figure of a run."""

    colour: str
    dashes: Any
    marker: str
    width: float = 1.3

    def line(self) -> dict[str, Any]:
        return {"color": self.colour, "linestyle": self.dashes, "marker": self.marker, "linewidth": self.width}


def method_looks(methods: list[tuple[str, str]]) -> dict[str, Look]:
    """label -> Look for the methods of a run, given as (label, method name) in recipe order: the first
    label of each method name takes that method's colour (CE grey, one-shot orange, progressive blue,
    two-shot vermillion, adaptive purple, auto green), further labels the next free extra colour. CE is a
    thick plain line drawn under the others, so a method that coincides with it leaves it visible."""
    looks, used, extra = {}, set(), iter(EXTRA_COLOURS * 4)
    for i, (label, name) in enumerate(methods):
        colour = BASE_COLOURS.get(name)
        if colour is None or colour in used:
            colour = next(c for c in extra if c not in used)
        used.add(colour)
        if name == "ce" and label == "ce":
            looks[label] = Look(colour, "-", "", 2.6)
        else:
            looks[label] = Look(colour, DASHES[i % len(DASHES)], MARKERS[i % len(MARKERS)])
    return looks


@contextmanager
def paper_style() -> Iterator[None]:
    """The rc settings of every report figure (8 pt text, thin spines, no legend frame)."""
    with plt.rc_context(RC):
        yield


def figure(width: float = PAGE, height: float = 2.6, ncols: int = 1, nrows: int = 1, **kwargs):
    """A figure with a constrained layout (room for legends outside the axes), axes as a 2-D array."""
    return plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, layout="constrained", **kwargs)


def legend_below(fig, axes, ncol: int | None = None, handles=None, labels=None):
    """One legend for the figure, below every axes (outside the data area); None if nothing to show."""
    if handles is None:
        handles, labels = [], []
        for ax in axes:
            for h, label in zip(*ax.get_legend_handles_labels()):
                if label not in labels and not label.startswith("_"):
                    handles.append(h)
                    labels.append(label)
    if not handles:
        return None
    width = fig.get_size_inches()[0]
    ncol = min(ncol or max(1, int(width // 1.6)), len(handles))
    while True:  # as many columns as fit in the figure's width
        legend = fig.legend(handles, labels, loc="outside lower center", ncol=ncol, columnspacing=1.2)
        renderer = fig.canvas.get_renderer()
        if ncol == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width:
            return legend
        legend.remove()
        ncol -= 1


def legend_right(fig, ax):
    """The legend of one axes, to the right of the figure (outside the data area)."""
    if not ax.get_legend_handles_labels()[0]:
        return None
    return fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper")


def shade_drop(ax, phases: dict[str, Any] | None, scale: float = 1.0, label: bool = True) -> None:
    """Shade the teacher's detected sharp drop; x in teacher steps × `scale`."""
    if phases:
        ax.axvspan(phases["drop_start"] * scale, phases["drop_end"] * scale, color=PHASE, alpha=0.45, lw=0,
                   zorder=0, label="teacher's sharp drop" if label else "_drop")


def target_line(ax, target: float) -> None:
    """The target accuracy as a dotted line, labelled at the right edge outside the axes."""
    ax.axhline(target, color=TARGET, ls=":", lw=1, zorder=1)
    ax.annotate(f"target\n{target:g}", xy=(1.0, target), xycoords=("axes fraction", "data"), xytext=(3, 0),
                textcoords="offset points", va="center", ha="left", fontsize=8, color=TARGET,
                annotation_clip=False)


def thousands(ax, axis: str = "x") -> None:
    """Tick labels like 120k / 1.5M instead of offsets and exponents."""
    def fmt(v, _pos):
        a = abs(v)
        return (f"{v / 1e6:g}M" if a >= 1e6 else f"{v / 1e3:g}k" if a >= 1e3 else f"{v:g}")

    getattr(ax, f"{axis}axis").set_major_formatter(FuncFormatter(fmt))


def log_y(ax) -> None:
    """A log y axis labelled with plain numbers (0.2, 0.5, 1) over less than two decades, powers of ten
    over more, and no minor labels."""
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    decades = math.log10(high / low) if low > 0 else 10

    def fmt(v, _pos):
        if v <= 0:
            return ""
        exponent = math.floor(math.log10(v) + 1e-9)
        if -3 <= exponent <= 3:
            return f"{v:g}"
        mantissa = v / 10**exponent
        return f"$10^{{{exponent}}}$" if abs(mantissa - 1) < 1e-6 else f"${mantissa:g}\\times 10^{{{exponent}}}$"

    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades < 2 else (1.0,)))
    ax.yaxis.set_major_formatter(FuncFormatter(fmt))
    ax.yaxis.set_minor_formatter(NullFormatter())


def save(fig, path: Path) -> list[Path]:
    """Write path (PNG, for the report) and the same figure as PDF beside it (for papers), each atomically
    and without a creation date (the same figure gives the same bytes); close it."""
    pdf = path.with_suffix(".pdf")
    write_file(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.03))
    fig.set_layout_engine("none")  # the PNG's layout is kept: the PDF does not solve it again (~1/3 of a save)
    write_file(pdf, lambda tmp: fig.savefig(tmp, format="pdf", bbox_inches="tight", pad_inches=0.03,
                                            metadata={"CreationDate": None}))
    plt.close(fig)
    return [path, pdf]
