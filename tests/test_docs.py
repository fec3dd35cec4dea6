"""The pages' tables are generated, not typed: experiments/docs_tables.py on a temporary README/docs tree
(replaced, idempotent, a missing file noted, a lone marker a clear error), and every generated block of the
real README.md and docs/*.md equal to the file it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import docs_tables
from experiments.docs_tables import END, MarkerError

REPO = Path(__file__).resolve().parent.parent
TABLE = "**A table**: from the records.\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n"


def block(source: str, inner: str = "a stale table") -> str:
    return f"<!-- generated: {source} -->\n{inner}\n{END}\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A repository in miniature: two tables, a README and a docs page showing them."""
    (tmp_path / "figures" / "short").mkdir(parents=True)
    (tmp_path / "figures" / "table.md").write_text(TABLE)
    (tmp_path / "figures" / "short" / "other.md").write_text("| x |\n| --- |\n| 3 |\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# Title\n\nBefore.\n\n" + block("figures/table.md") + "\nAfter.\n")
    (tmp_path / "docs" / "results.md").write_text(
        "# Results\n\n" + block("figures/short/other.md", "old\n\nlines") + "\n" + block("figures/table.md"))
    return tmp_path


def shown(page: Path) -> list[tuple[str, str]]:
    lines = page.read_text().splitlines()
    return [(b.source, b.inner(lines)) for b in docs_tables.blocks(page.read_text())]


def test_refresh_puts_each_named_file_between_its_markers(tree):
    messages = docs_tables.refresh(tree)
    assert messages == ["docs: README.md: generated tables brought up to date",
                        "docs: docs/results.md: generated tables brought up to date"]
    readme = (tree / "README.md").read_text()
    assert readme.startswith("# Title\n\nBefore.\n\n<!-- generated: figures/table.md -->\n\n**A table**")
    assert readme.endswith(f"| 1 | 2 |\n\n{END}\n\nAfter.\n") and "stale" not in readme
    assert shown(tree / "docs" / "results.md") == [("figures/short/other.md", "| x |\n| --- |\n| 3 |"),
                                                  ("figures/table.md", TABLE.strip())]


def test_refresh_is_idempotent(tree):
    docs_tables.refresh(tree)
    first = {p: p.read_text() for p in docs_tables.doc_pages(tree)}
    assert docs_tables.refresh(tree) == []
    assert {p: p.read_text() for p in docs_tables.doc_pages(tree)} == first


def test_a_changed_file_changes_only_its_blocks(tree):
    docs_tables.refresh(tree)
    (tree / "figures" / "table.md").write_text(TABLE.replace("| 1 | 2 |", "| 5 | 6 |"))
    assert docs_tables.refresh(tree) == ["docs: README.md: generated tables brought up to date",
                                         "docs: docs/results.md: generated tables brought up to date"]
    assert "| 5 | 6 |" in (tree / "README.md").read_text()
    assert shown(tree / "docs" / "results.md")[0] == ("figures/short/other.md", "| x |\n| --- |\n| 3 |")


def test_a_missing_file_leaves_its_block_with_a_note(tree):
    (tree / "figures" / "short" / "other.md").unlink()
    messages = docs_tables.refresh(tree)
    note = "docs: docs/results.md:3: figures/short/other.md is missing; its block is left as it is"
    assert note in messages
    results = (tree / "docs" / "results.md").read_text()
    assert "old\n\nlines" in results and "| 1 | 2 |" in results  # the other block is still refreshed


@pytest.mark.parametrize("text, needle", [
    ("intro\n<!-- generated: figures/table.md -->\n| a |\n",
     "results.md:2: the generated block of figures/table.md has no '<!-- end generated -->'"),
    (f"intro\n\n{END}\n", "results.md:3: '<!-- end generated -->' without a '<!-- generated: FILE -->'"),
    ("<!-- generated: figures/table.md -->\n<!-- generated: figures/table.md -->\n" + END + "\n",
     "results.md:2: a generated block opens inside the block opened at line 1"),
    (block("../outside.md"), "names ../outside.md, which is not a file of the repository"),
])
def test_an_unmatched_marker_is_a_clear_error_and_nothing_is_written(tree, text, needle):
    (tree / "docs" / "results.md").write_text(text)
    readme = (tree / "README.md").read_text()
    with pytest.raises(MarkerError) as error:
        docs_tables.refresh(tree)
    assert needle in str(error.value) and str(error.value).startswith("docs/results.md")
    assert (tree / "README.md").read_text() == readme  # checked before anything is written


def test_markers_in_a_fenced_code_block_are_text(tree):
    page = tree / "docs" / "format.md"
    text = "The format:\n\n```\n<!-- generated: figures/missing.md -->\n```\n\n" + block("figures/table.md")
    page.write_text(text)
    docs_tables.refresh(tree)
    assert page.read_text().startswith("The format:\n\n```\n<!-- generated: figures/missing.md -->\n```\n")
    assert shown(page) == [("figures/table.md", TABLE.strip())]


def test_a_tree_without_pages_has_nothing_to_refresh(tmp_path):
    assert docs_tables.doc_pages(tmp_path) == [] and docs_tables.refresh(tmp_path) == []


def test_weights_table_from_a_manifest(tmp_path):
    manifest = tmp_path / "results" / "weights" / "MANIFEST.json"
    assert docs_tables.weights_table(manifest, tmp_path / "weights.md") is None  # no manifest: nothing
    assert not (tmp_path / "weights.md").exists()
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({
        "resnet20-A-paper-s0-aaaaaaaa.pt": {"run": "resnet20-A-paper-s0", "sha256": "a" * 64, "bytes": 589907,
                                            "final_test_error": 0.0837},
        "plain20-paper-s0-bbbbbbbb.pt": {"run": "plain20-paper-s0", "sha256": "b" * 64, "bytes": 1824099,
                                         "final_test_error": None}}))
    path = docs_tables.weights_table(manifest, tmp_path / "figures" / "weights.md")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("**Published weights** (`results/weights/MANIFEST.json`)")
    assert lines[-2:] == ["| plain20-paper-s0 | `plain20-paper-s0-bbbbbbbb.pt` | 1.82 MB | – |",
                          "| resnet20-A-paper-s0 | `resnet20-A-paper-s0-aaaaaaaa.pt` | 0.59 MB | 8.37% |"]


def test_every_generated_block_of_the_pages_equals_its_file():
    """A table in README.md or docs/*.md is the file it names, as `make figures` last wrote it: a table
    typed by hand, or left behind by new records, fails here (run `make figures` and commit the pages)."""
    pages = docs_tables.doc_pages(REPO)
    assert REPO / "README.md" in pages and len(pages) > 1
    seen = []
    for page in pages:
        where = str(page.relative_to(REPO))
        for source, inner in shown(page):
            path = REPO / source
            assert path.is_file(), f"{where}: its generated block names {source}, which does not exist"
            assert inner == path.read_text().strip("\n"), (
                f"{where}: the generated block of {source} differs from the file: run `make figures`")
            seen.append(source)
    assert "figures/table6.md" in seen
