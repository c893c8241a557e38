# Sphinx configuration of the attrvis-jax site. Build it with ../build-docs (from the repository
# root: `./build-docs`), which runs sphinx-build with warnings as errors.
#
# Pages are MyST Markdown; notebooks are read by MyST-NB. A notebook is kept as a pair by jupytext
# (jupytext.toml beside this file: `.ipynb` + a `.md` in MyST's notebook format); the site is built
# from the `.md` twin, which MyST-NB executes at build time (cached in _build/.jupyter_cache), so the
# `.ipynb` files are only for people who open them in Jupyter and are excluded below.

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))  # the package, also when it is not installed

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # autodoc imports jax: no accelerator probing

import attrvis_jax  # noqa: E402

project = "attrvis-jax"
author = "the attrvis-jax authors"
copyright = "the attrvis-jax authors, Apache-2.0"
release = attrvis_jax.__version__
version = release

extensions = [
    "myst_nb",  # MyST Markdown pages and notebooks (it brings myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into the site (no CDN: the equations render offline)
    "sphinx.ext.viewcode",
    "attrvis_docs",  # docs/_ext: the generated parts (CLI, errors, API face, weights) and docstrings
]

exclude_patterns = ["_build", "_generated", "**/*.ipynb", "**/.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# A broken reference of any kind (a page, a heading, a Python object) is a warning, and the build
# runs with -W: it fails.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3
myst_dmath_double_inline = True
suppress_warnings: list[str] = []

# Notebooks (MyST-NB): executed when their source changes, cached between builds; a cell that
# raises fails the build.
nb_execution_mode = "cache"
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_execution_timeout = 240
nb_execution_raise_on_error = True
nb_merge_streams = True

# autodoc: signatures from the code, docstrings rewritten from plain prose (attrvis_docs).
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True}
add_module_names = False
python_display_short_literal_types = True

html_theme = "sphinx_book_theme"
html_title = f"attrvis-jax {release}"
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "use_download_button": False,
    "use_fullscreen_button": False,
}
html_static_path = ["_static"]
html_css_files = ["custom.css"]  # smaller type in the wide tables
html_last_updated_fmt = None
