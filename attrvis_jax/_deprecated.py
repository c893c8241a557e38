"""Old spellings of renamed names: each keeps working for one release and warns
(`errors.AttrvisDeprecationWarning`, a DeprecationWarning) with the spelling to use instead."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from typing import Any, Callable

from attrvis_jax.errors import AttrvisDeprecationWarning


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_level() -> int:
    """The stacklevel of the first frame outside this package: the warning names the line of the
    program that used the old spelling (and is shown there: Python shows a DeprecationWarning by
    default only when it points at __main__)."""
    frame, level = sys._getframe(2), 2  # 1 is `warn`
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def warn(old: str, new: str) -> None:
    """Warn that `old` is deprecated in favour of `new`, at the line of the program that used it."""
    warnings.warn(f"{old} is deprecated and will be removed in the next release: use {new}",
                  AttrvisDeprecationWarning, stacklevel=_user_level())


def renamed_keywords(kwargs: dict, renames: dict[str, str], where: str) -> dict:
    """`kwargs` with each old keyword of `renames` (old -> new) moved to its new name, with a
    warning; both spellings at once are a TypeError, as a repeated keyword is."""
    for old, new in renames.items():
        if old in kwargs:
            if new in kwargs:
                raise TypeError(f"{where} got both {new}= and its deprecated spelling {old}=")
            warn(f"{where}({old}=...)", f"{new}=")
            kwargs[new] = kwargs.pop(old)
    return kwargs


def renamed_parameters(**renames: str) -> Callable:
    """Decorator: the function also takes each old keyword (old=new) for one release, with a warning.
    Its signature (`inspect.signature`, the API pages) shows the new names only."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return fn(*args, **renamed_keywords(kwargs, renames, fn.__name__))

        return wrapper

    return decorate


def module_getattr(module: str, aliases: dict[str, tuple[str, Callable[[], Any]]]) -> Callable[[str], Any]:
    """A module-level `__getattr__` that serves old names: aliases maps an old name to (its new
    spelling, a function returning the object)."""

    def __getattr__(name: str):
        if name in aliases:
            new, get = aliases[name]
            warn(f"{module}.{name}", new)
            return get()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


class RenamedKeys(dict):
    """A dict whose old keys (old -> new) still read, with a warning, for one release."""

    renames: dict[str, str] = {}

    def __init__(self, data=(), renames: dict[str, str] | None = None, what: str = "the dict"):
        super().__init__(data)
        self.renames, self.what = dict(renames or {}), what

    def _new(self, key):
        if isinstance(key, str) and key in self.renames and key not in self.keys():
            warn(f"the key {key!r} of {self.what}", repr(self.renames[key]))
            return self.renames[key]
        return key

    def __getitem__(self, key):
        return super().__getitem__(self._new(key))

    def get(self, key, default=None):
        return super().get(self._new(key), default)

    def __contains__(self, key):
        return super().__contains__(self._new(key))
