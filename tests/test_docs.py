"""The documentation site's promises that a test can keep without building it (CI builds it with
warnings as errors: ./build-docs):

- no file of the repository cites a document that is not in it (the design and algorithm notes
  the code once cited lived outside the repository; their content is the site's now);
- every reference of the form docs/<page>.md, '<heading>' in the repository names a page and a
  heading that exist;
- the generated parts list everything they are generated from: every bad input of the tests'
  tables on the errors page, every subcommand on the CLI page.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Spelled in pieces so that this file does not name them itself.
GONE = ("ALGORITHM" + ".md", "ALGORITHM" + " §", "DESIGN" + ".md", "DESIGN" + " §", "PERF" + "-NOTES")
SKIP_DIRS = {".git", ".venv", "_build", "_generated", "__pycache__", "node_modules"}


def _repository_files() -> list[Path]:
    """The tracked files (all files but the ignored ones when this is not a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        paths = [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in ROOT.rglob("*") if p.is_file() and not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    return [p for p in paths if p.is_file() and "_build" not in p.relative_to(ROOT).parts]


def _texts():
    for path in _repository_files():
        data = path.read_bytes()
        if b"\0" not in data[:8192]:  # text files only
            yield path, data.decode("utf-8", errors="replace")


def test_no_file_cites_a_document_outside_the_repository():
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for path, text in _texts() for n, line in enumerate(text.splitlines(), 1)
             if any(name in line for name in GONE)]
    assert not found, "cite the site's page instead (docs/*.md):\n" + "\n".join(found)


def _headings(page: Path) -> set[str]:
    """The Markdown headings of a page, outside fenced code blocks."""
    out, fence = set(), None
    for line in page.read_text(encoding="utf-8").splitlines():
        marker = re.match(r"\s*(`{3,}|~{3,})", line)
        if marker:
            fence = None if fence and marker.group(1).startswith(fence) else fence or marker.group(1)
            continue
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading and not fence:
            out.add(heading.group(1).replace("`", ""))
    return out


REFERENCE = re.compile(r"docs/([\w./-]+?\.md)(?:, '([^']+)'(?: (?:to|and) '([^']+)')?)?")


def test_references_to_the_site_name_pages_and_headings_that_exist():
    checked, broken = 0, []
    for path, text in _texts():
        if path.is_relative_to(DOCS):
            continue
        for match in REFERENCE.finditer(text):
            page = DOCS / match.group(1)
            wanted = [" ".join(h.split()) for h in match.groups()[1:] if h]  # a heading may wrap
            where = f"{path.relative_to(ROOT)}: {match.group(0)}"
            if not page.is_file():
                broken.append(f"{where} (no such page)")
                continue
            missing = [h for h in wanted if h not in _headings(page)]
            if missing:
                broken.append(f"{where} (no heading {missing} on the page)")
            checked += 1
    assert not broken, "\n".join(broken)
    assert checked >= 40  # the code's references to the method page and the others


@pytest.fixture(scope="module")
def generators():
    """docs/_ext/attrvis_docs.py: plain functions of the repository, no Sphinx needed."""
    spec = importlib.util.spec_from_file_location("attrvis_docs", DOCS / "_ext" / "attrvis_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_errors_page_lists_every_bad_input_of_the_tests(generators):
    import test_bad_inputs
    import test_bad_inputs_api

    page = generators.errors_markdown()
    ids = [case[0] for case in test_bad_inputs.CASES]
    for table in (test_bad_inputs_api.IMAGE_CASES, test_bad_inputs_api.CALL_CASES, test_bad_inputs_api.FILE_CASES):
        ids += [case[0] for case in table]
    missing = [i for i in ids if f"`{i}`" not in page]
    assert not missing, missing
    for case in test_bad_inputs.CASES:  # each CLI row with its exit code and message
        assert generators._placeholder(case[3]) in page, case[0]


def test_the_cli_page_shows_every_command(generators):
    from attrvis_jax.apps.cli import build_parser

    page = generators.cli_markdown()
    names = [name for name, _, _ in generators._subcommands(build_parser())]
    assert len(names) >= 9
    for name in names:
        assert f"## `attrvis {name}`" in page, name
        assert f"usage: attrvis {name}" in page, name


def test_every_name_of_the_face_has_a_docstring():
    """autodoc documents what has a docstring: a face name without one would be an unlinked entry
    of the API page's table."""
    import attrvis_jax

    bare = [name for name in attrvis_jax.__all__ if not (getattr(attrvis_jax, name).__doc__ or "").strip()]
    assert not bare, bare


def test_docstrings_become_restructured_text(generators):
    convert = generators.docstring_to_rst
    got = convert(["Read a `save`d file: *any* |x| ok.", "", "    y = a·x  (a formula)", "",
                   "model: the network", "    and more of it.", "key: a key"])
    assert got == ["Read a ``save``\\ d file: \\*any\\* \\|x\\| ok.", "", "::", "", "    y = a·x  (a formula)", "",
                   "**model**: the network", "and more of it.", "", "**key**: a key"]


# ---- the tutorials: jupytext pairs, listed in the table of contents ---------------------------------
TUTORIALS = DOCS / "tutorials"
CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```$", re.S | re.M)


def _myst_cells(page: Path) -> tuple[list[str], list[str]]:
    """(markdown cells, code cells) of a MyST notebook (jupytext's `md:myst`), without jupytext."""
    body = re.sub(r"\A---\n.*?\n---\n", "", page.read_text(encoding="utf-8"), flags=re.S)  # the front matter
    parts = CODE_CELL.split(body)
    return [p.strip() for p in parts[0::2] if p.strip()], [p.rstrip("\n") for p in parts[1::2]]


def _ipynb_cells(path: Path) -> tuple[list[str], list[str], list]:
    """(markdown cells, code cells, outputs of the code cells) of an .ipynb."""
    import json

    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    text = lambda kind: ["".join(c["source"]) for c in cells if c["cell_type"] == kind]  # noqa: E731
    return text("markdown"), text("code"), [c.get("outputs") for c in cells if c["cell_type"] == "code"]


def test_each_tutorial_is_a_notebook_pair_in_sync_and_without_outputs():
    """The site runs the .md; people open the .ipynb in Jupyter: they must hold the same cells
    (`jupytext --sync` on either after editing it), and the .ipynb no outputs (the
    site's build makes them; stale ones would disagree with the code)."""
    pages = sorted(TUTORIALS.glob("*.md"))
    assert len(pages) >= 3
    for page in pages:
        twin = page.with_suffix(".ipynb")
        assert twin.is_file(), f"no {twin.name}: run jupytext --sync docs/tutorials/{page.name}"
        markdown, code, outputs = _ipynb_cells(twin)
        assert (markdown, code) == _myst_cells(page), f"{page.name} and {twin.name} differ: jupytext --sync"
        assert code and not any(outputs), f"{twin.name} carries outputs"
    orphans = [p for p in DOCS.rglob("*.ipynb") if "_build" not in p.parts and not p.with_suffix(".md").is_file()]
    assert not orphans, orphans  # conf.py builds the .md only: a lone .ipynb would never be shown


def test_each_tutorial_is_in_the_table_of_contents_and_the_contents_list():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    entries = {line.strip() for tree in re.findall(r"```\{toctree\}\n(.*?)```", index, re.S)
               for line in tree.splitlines() if line.strip() and not line.startswith(":")}
    for page in sorted(TUTORIALS.glob("*.md")):
        assert f"tutorials/{page.stem}" in entries, page.name
        assert f"(tutorials/{page.name})" in index, page.name  # the "Contents" list links it
