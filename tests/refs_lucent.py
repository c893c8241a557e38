"""Test-only access to lucent's InceptionV1 (PyPI `torch-lucent`) without its heavy imports.

`import lucent.modelzoo.inceptionv1` would run `lucent/modelzoo/__init__.py`, which does
`from torchvision.models import *`; torchvision (and kornia / IPython, which other lucent modules
import) cannot be imported beside the CPU torch used here. The model itself needs only torch:
`lucent/modelzoo/inceptionv1/InceptionV1.py` and its sibling `helper_layers.py`.

The stand-in: while the two files load, `sys.modules` holds empty placeholder packages for
`lucent`, `lucent.modelzoo` and `lucent.modelzoo.inceptionv1` whose `__path__` points at the
installed directories, so Python finds the two real submodules without running any `__init__.py`.
Afterwards `sys.modules` is restored to what it was, so nothing else sees the placeholders.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from pathlib import Path

_PACKAGES = ("lucent", "lucent.modelzoo", "lucent.modelzoo.inceptionv1")
_MODULES = ("lucent.modelzoo.inceptionv1.helper_layers", "lucent.modelzoo.inceptionv1.InceptionV1")
_cache: dict[str, type] = {}


@contextlib.contextmanager
def modules_replaced(modules: dict, also_restore=()):
    """Put `modules` (name -> module) into sys.modules for the block, then restore what was there,
    for those names and for `also_restore` (modules the block itself imports)."""
    saved = {name: sys.modules.get(name) for name in (*modules, *also_restore)}
    try:
        sys.modules.update(modules)
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def lucent_root() -> Path | None:
    """The installed `lucent` package directory (found without importing it), or None."""
    spec = importlib.util.find_spec("lucent")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def inception_v1_class() -> type:
    """lucent's `InceptionV1` torch module class (raises ImportError if lucent/torch are missing)."""
    if "InceptionV1" in _cache:
        return _cache["InceptionV1"]
    loaded = sys.modules.get("lucent.modelzoo.inceptionv1.InceptionV1")
    if loaded is None:
        root = lucent_root()
        if root is None:
            raise ImportError("torch-lucent is not installed")
        packages = {}
        for name in _PACKAGES:
            package = types.ModuleType(name)
            package.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
            packages[name] = package
        with modules_replaced(packages, also_restore=_MODULES):
            loaded = importlib.import_module("lucent.modelzoo.inceptionv1.InceptionV1")
    _cache["InceptionV1"] = loaded.InceptionV1
    return loaded.InceptionV1
