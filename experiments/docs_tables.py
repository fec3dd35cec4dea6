"""The tables that README.md and docs/*.md show, kept in step with the files `make figures` writes.

A table in the README or a docs page is never typed: it is a generated block, the content of a file that
the records produced, between two HTML comments, each on a line of its own:

    <!-- generated: figures/table6.md -->
    (the content of figures/table6.md, path relative to the repository root)
    <!-- end generated -->

:func:`refresh` (run by experiments/make_figures.py after it draws the figures) replaces the text between
each pair with the current content of the file named; a file that is missing leaves its block as it is,
with a one-line note. A marker without its partner is an error naming the page and line. Markers inside
fenced code blocks are text, not markers. :func:`weights_table` writes figures/weights.md, the published
weights' table, from results/weights/MANIFEST.json.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["END", "MarkerError", "Block", "blocks", "render", "doc_pages", "refresh", "weights_table"]

START = re.compile(r"<!-- generated: (\S+) -->")
END = "<!-- end generated -->"
FENCES = ("```", "~~~")


class MarkerError(ValueError):
    """A generated-block marker without its partner, or naming a file outside the repository."""


@dataclass(frozen=True)
class Block:
    """One generated block: the file it names, and the line numbers (0-based) of its two markers."""

    source: str
    start: int
    end: int

    def inner(self, lines: list[str]) -> str:
        """The block's text between its markers, without the blank lines around it."""
        return "\n".join(lines[self.start + 1:self.end]).strip("\n")


def blocks(text: str, *, where: str = "text") -> list[Block]:
    """Every generated block of ``text`` in order; ``where`` names the page in errors."""
    found, start, source, fenced = [], None, "", False
    for number, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if stripped.startswith(FENCES):
            fenced = not fenced
        if fenced:
            continue
        opening = START.fullmatch(stripped)
        if opening:
            if start is not None:
                raise MarkerError(f"{where}:{number + 1}: a generated block opens inside the block opened at "
                                  f"line {start + 1} ({source}), which has no '{END}'")
            start, source = number, opening.group(1)
        elif stripped == END:
            if start is None:
                raise MarkerError(f"{where}:{number + 1}: '{END}' without a '<!-- generated: FILE -->' "
                                  f"before it")
            found.append(Block(source, start, number))
            start = None
    if start is not None:
        raise MarkerError(f"{where}:{start + 1}: the generated block of {source} has no '{END}'")
    return found


def _source_path(repo: Path, source: str, where: str) -> Path:
    path = (repo / source).resolve()
    if Path(source).is_absolute() or not path.is_relative_to(repo.resolve()):
        raise MarkerError(f"{where}: a generated block names {source}, which is not a file of the repository "
                          f"(give a path relative to its root)")
    return path


def render(text: str, repo: Path, *, where: str = "text") -> tuple[str, list[str]]:
    """``text`` with every generated block holding the current content of the file it names, and a note
    per block left as it was because its file is missing."""
    lines = text.splitlines()
    notes, out, done = [], [], 0
    for block in blocks(text, where=where):
        path = _source_path(repo, block.source, where)
        out += lines[done:block.start + 1]
        if path.is_file():
            out += ["", *path.read_text().strip("\n").splitlines(), ""]
        else:
            out += lines[block.start + 1:block.end]
            notes.append(f"{where}:{block.start + 1}: {block.source} is missing; its block is left as it is")
        done = block.end
    out += lines[done:]
    return "\n".join(out) + ("\n" if text.endswith("\n") else ""), notes


def doc_pages(repo: Path) -> list[Path]:
    """The pages whose generated blocks are kept in step: README.md and docs/*.md (those that exist)."""
    readme = repo / "README.md"
    return ([readme] if readme.is_file() else []) + sorted((repo / "docs").glob("*.md"))


def refresh(repo: Path) -> list[str]:
    """Rewrite every page of :func:`doc_pages` whose generated blocks are out of step; one line per page
    changed and per block left as it was. Every page is checked before any is written."""
    repo = Path(repo)
    rendered = {}
    for page in doc_pages(repo):
        where = str(page.relative_to(repo))
        text = page.read_text()
        rendered[page] = (where, text, *render(text, repo, where=where))
    messages = []
    for page, (where, text, new, notes) in rendered.items():
        if new != text:
            page.write_text(new)
            messages.append(f"docs: {where}: generated tables brought up to date")
        messages += [f"docs: {note}" for note in notes]
    return messages


def weights_table(manifest: Path, out: Path) -> Path | None:
    """``out`` (Markdown): one row per published weights file of ``manifest`` (results/weights/MANIFEST.json)
    with its size and the final test error its run recorded; None, writing nothing, without a manifest."""
    if not manifest.is_file():
        return None
    entries = sorted(json.loads(manifest.read_text()).items(), key=lambda item: item[1]["run"])
    rows = ["| run | file | size | its run's final test error |", "| --- | --- | --- | --- |"]
    for file, entry in entries:
        error = entry.get("final_test_error")
        shown = "–" if error is None else f"{100 * error:.2f}%"
        rows.append(f"| {entry['run']} | `{file}` | {entry['bytes'] / 1e6:.2f} MB | {shown} |")
    title = (f"**Published weights** (`{'/'.join(manifest.parts[-3:])}`): half precision, "
             f"their SHA-256 checked on loading; the error is the one their run's summary records.")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(title + "\n\n" + "\n".join(rows) + "\n")
    return out
