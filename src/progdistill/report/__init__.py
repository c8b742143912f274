"""Report of a run folder: report.md and a self-contained report.html with the same content, and
plots/*.png (with a PDF of each beside it), all computed from summary.json and the run's files.

The content is built once as a `Document` by the sections of `sections` (answer, run health, setup
and methods, results, teacher, curriculum probes, sweep, files); tasks plug in their own sections with
`register_section`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Recipe
from ..io import write_text
from .curves import student_curves
from .document import Document, to_markdown
from .html import to_html
from .sections import SECTIONS, Context, register_section
from .style import method_looks, paper_style

__all__ = ["write_report", "build_report", "register_section", "Context"]


def build_report(recipe: Recipe, out: Path, summary: dict[str, Any]) -> Document:
    """The report's content; writes its figures under out/plots (PNG and PDF)."""
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    labels = [(m.display, m.name) for m in recipe.students.methods]
    labels += [(k, e["method"]["name"]) for k, e in summary["methods"].items() if k not in dict(labels)]
    ctx = Context(recipe, out, summary, student_curves(out, summary), method_looks(labels))
    doc = Document(recipe.name)
    with paper_style():
        for _, section in SECTIONS:
            doc.add(*section(ctx))
    return doc


def write_report(recipe: Recipe, out: Path, summary: dict[str, Any]) -> Path:
    """Write out/report.md, out/report.html and out/plots/ from a run's summary; returns report.md's path."""
    out = Path(out)
    doc = build_report(recipe, out, summary)
    write_text(out / "report.md", to_markdown(doc))
    write_text(out / "report.html", to_html(doc, out))
    return out / "report.md"
