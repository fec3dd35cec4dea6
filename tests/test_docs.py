"""The pages' tables are generated, not typed: experiments/docs_tables.py on a temporary README/docs tree
(replaced, idempotent, a missing file noted, a lone marker a clear error), and every generated block of the
real README.md and docs/*.md equal to the file it names. The pages name only files that exist, and they and
the notebooks (sources and stored outputs) speak of the project, not of the machines it was built on."""

from __future__ import annotations

import json
import re
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


# ------------------------------------------------------ the pages name files that exist, and only the project
#: Where a repository path starts: the top-level files and folders a page names.
TOP = ("README.md", "Makefile", "requirements.txt", "pyproject.toml", "hubconf.py")
TOP_DIRS = ("docs", "experiments", "resnet", "results", "figures", "notebooks", "tests", "benchmarks")
#: A path as a page writes it, repository-relative: not the tail of a longer path, an URL or `commit:path`.
REPO_PATH = re.compile(r"(?<![\w./:~$-])(?:" + "|".join(map(re.escape, TOP)) + r"|(?:"
                       + "|".join(TOP_DIRS) + r")/[^\s`'\"()\[\],;|]*)")
#: Markdown links and HTML images: relative to the page.
LINK = re.compile(r"\]\(([^)\s]+)\)|\bsrc=\"([^\"]+)\"")
PLACEHOLDER = re.compile(r"[<>*{}$]")  # figures/confusion_<run>.png, results/runs/*/log.csv: a pattern
#: Words of the machines and tools a project was built with, not of the project: none belongs on a page.
MACHINE_WORDS = [
    (re.compile(r"\blent\b", re.IGNORECASE), "the word 'lent'"),
    (re.compile(r"15-minute", re.IGNORECASE), "'15-minute'"),
    (re.compile(r"(?<![\w.])\.c[123](?!\w)"), "a carried folder .c1/.c2/.c3"),
    (re.compile(r"\$OUT\b"), "$OUT"),
    (re.compile(r"(?<![\w.~/-])/(?:work|tmp|root|home|Users|mnt|scratch|private|var/folders)/"),
     "an absolute path of a machine"),
    (re.compile(r"\b[A-Za-z]:\\(?:Users|Windows)\\"), "an absolute path of a machine"),
]


def named_paths(text: str) -> list[tuple[int, str, bool]]:
    """(line, path, relative to the page) for every file a page names: repository paths in its text and code,
    and the targets of its links; patterns (<run>, *, $VAR) and URLs left out."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in REPO_PATH.finditer(line):
            path = match.group(0).split("#")[0].rstrip(".:")
            if not PLACEHOLDER.search(path):
                found.append((number, path, False))
        for match in LINK.finditer(line):
            target = (match.group(1) or match.group(2)).split("#")[0]
            if target and not re.match(r"[a-z][a-z0-9+.-]*:", target) and not PLACEHOLDER.search(target):
                found.append((number, target, True))
    return found


def missing_paths(repo: Path, page: Path) -> list[str]:
    where = page.relative_to(repo)
    return [f"{where}:{number}: {path}" for number, path, relative in named_paths(page.read_text())
            if not ((page.parent if relative else repo) / path).exists()]


def machine_words(text: str) -> list[str]:
    return [f"{what}: {match.group(0)!r}"
            for pattern, what in MACHINE_WORDS for match in pattern.finditer(text)]


def notebook_texts(path: Path) -> list[tuple[str, str]]:
    """(where, text) for each cell's source and each of its stored text outputs (images left out), read as
    the JSON the file is (nbformat's schema validation would cost more than the check)."""
    def joined(value: str | list[str]) -> str:
        return value if isinstance(value, str) else "".join(value)

    texts = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        texts.append((f"{path.name} cell {i}", joined(cell["source"])))
        for output in cell.get("outputs", []):
            pieces = [joined(output.get("text", "")), output.get("ename", ""), output.get("evalue", ""),
                      *output.get("traceback", [])]
            pieces += [joined(v) if k.startswith("text/") else json.dumps(v)
                       for k, v in output.get("data", {}).items()
                       if k.startswith("text/") or k.endswith("json")]
            texts.append((f"{path.name} cell {i} output", "\n".join(pieces)))
    return texts


def pages(repo: Path = REPO) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def test_every_file_a_page_names_exists():
    """README.md and docs/*.md name files that a clone has: a renamed or never-made file fails here."""
    named = [p for page in pages() for p in named_paths(page.read_text())]
    assert len(named) > 50  # the check sees the pages' paths
    missing = [line for page in pages() for line in missing_paths(REPO, page)]
    assert not missing, "pages name files that do not exist:\n" + "\n".join(missing)


def test_no_page_or_notebook_speaks_of_the_machines_it_was_built_on():
    """The README, docs/ and the notebooks (their sources and stored outputs) speak of the project and a
    user's machines, never of the ones it was built on: no 'lent', no '15-minute', no carried .c1/.c2/.c3,
    no $OUT, no absolute path of a machine."""
    texts = [(str(page.relative_to(REPO)), page.read_text()) for page in pages()]
    texts += [t for nb in sorted((REPO / "notebooks").glob("*.ipynb")) for t in notebook_texts(nb)]
    assert len(texts) > 6
    found = [f"{where}: {word}" for where, text in texts for word in machine_words(text)]
    assert not found, "\n".join(found)


def test_the_path_check_names_a_missing_file_and_leaves_patterns_alone(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "fig.png").write_bytes(b"")
    page = tmp_path / "docs" / "page.md"
    page.write_text("Drawn in `figures/fig.png` and [here](../figures/fig.png#top); "
                    "`figures/confusion_<run>.png`,\n`results/runs/*/log.csv`, "
                    "`git show 3b59e7e:figures/old.png`, "
                    "https://x.org/figures/a.png,\n`cifar-10-batches-py/` under `--data-dir data`, "
                    "`packs/shard-${K}.tar`.\nBut `figures/gone.png` and ![lost](../figures/lost.png) and "
                    "<img src=\"../figures/no.png\">.\n")
    assert missing_paths(tmp_path, page) == ["docs/page.md:4: figures/gone.png",
                                             "docs/page.md:4: ../figures/lost.png",
                                             "docs/page.md:4: ../figures/no.png"]


@pytest.mark.parametrize("text, word", [
    ("On a lent GPU", "the word 'lent'"), ("in a 15-minute slice", "'15-minute'"),
    ("carry .c2: the data", "a carried folder .c1/.c2/.c3"), ("come back in `.c3/*.tar`", "a carried folder"),
    ("`$OUT/speed.json`", "$OUT"), ("root='/work/main/data/cifar-10-batches-py'", "an absolute path"),
    ("default `/tmp/r`", "an absolute path"), ("/root/.cache/torch", "an absolute path"),
])
def test_the_word_check_finds_each_word(text, word):
    assert any(found.startswith(word) for found in machine_words(text)), machine_words(text)


def test_the_word_check_leaves_a_users_text_alone():
    text = ("An excellent, equivalent, silent run: `--data-dir data`, "
            "`export CIFAR10_ROOT=/path/to/cifar`,\n`results/short/runs/`, "
            "https://github.com/akamaster/pytorch_resnet_cifar10, `OUT=back bash x.sh`,\n"
            "`$RESULTS`, `${SLURM_ARRAY_TASK_ID}`, 0.c1 at fig.c2, a 15 minute wait is not the word.")
    assert machine_words(text) == []
