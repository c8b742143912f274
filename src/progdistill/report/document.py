"""The report as structured content (headings, paragraphs, tables, figures), rendered to Markdown here
and to HTML by `report.html`, so both files say the same thing.

Text may use three inline marks, as in Markdown: `code`, **bold** and *emphasis*.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Heading:
    """A section heading (level 2 = a section, 3 = a subsection)."""
    text: str
    level: int = 2


@dataclass
class Paragraph:
    """A paragraph of text with inline marks."""
    text: str


@dataclass
class Bullets:
    """A list of short items."""
    items: list[str]


@dataclass
class Table:
    """A table of strings: a header row, body rows, and an optional caption above it."""
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    """A PNG under the run folder (`path` relative to it), with a caption saying what to look at."""

    path: str
    caption: str
    alt: str = ""


Block = Heading | Paragraph | Bullets | Table | Figure


@dataclass
class Document:
    """A title and the blocks below it, in order."""
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> "Document":
        self.blocks.extend(blocks)
        return self


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document) -> str:
    """GitHub-flavoured Markdown of the document (figures as images with their caption below)."""
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Paragraph):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            if b.caption:
                out += [b.caption, ""]
            out += ["| " + " | ".join(map(_cell, b.header)) + " |", "|" + " --- |" * len(b.header)]
            out += ["| " + " | ".join(map(_cell, row)) + " |" for row in b.rows] + [""]
        elif isinstance(b, Figure):
            out += [f"![{b.alt or b.caption}]({b.path})", "", f"*{b.caption}*", ""]
    return "\n".join(out).rstrip() + "\n"
