"""Errors a user can cause, each with a message that names the problem.

They all derive from `AttrvisError` (a `ValueError`), so the CLI can print one clear line for any of
them and scripts can catch the family with one `except`.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class AttrvisError(ValueError):
    """Base class of every user-facing error of attrvis_jax."""


class UnknownNameError(AttrvisError, KeyError):
    """An unknown model, layer or class name; the message lists the closest valid names."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class AmbiguousNameError(UnknownNameError):
    """A name that several things share (a class name of several classes); the message lists them."""


class ImageError(AttrvisError):
    """An image that cannot be read or converted."""


class WeightsError(AttrvisError):
    """A weight file that is missing, unsafe, corrupt, or does not fit the model."""


class WriteError(AttrvisError, OSError):
    """A file or folder that cannot be written (disk full, read-only, no permission, ...); the message
    names the path and the reason. Also an `OSError` with the original errno, strerror and filename,
    so code that already handles a failed write (`except OSError`) keeps working."""

    def __str__(self) -> str:  # OSError would otherwise show "[Errno 28] ..." once errno is set
        return str(self.args[0]) if self.args else ""


class AttrvisDeprecationWarning(DeprecationWarning):
    """An old spelling of a renamed name (a function, keyword, config field or result field). It
    keeps working for one release; the warning names the new spelling. Turn them into errors to find
    every old spelling in a program: `warnings.simplefilter("error", AttrvisDeprecationWarning)`."""


def closest(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """The valid names closest to `name` (case-insensitive), best first."""
    choices = list(choices)
    key = name.strip().lower()
    if not key:
        return []
    # Names that hold it as a word come first ("cat": "tabby cat", "tiger cat"), shortest first: edit
    # distance alone ranks "crate" and "coast" above them; then the closest by edit distance.
    words = sorted((c for c in choices if key in c.lower().replace("-", " ").split()), key=len)
    lowered = {c.lower(): c for c in choices}
    hits = [lowered[h] for h in difflib.get_close_matches(key, list(lowered), n=n, cutoff=0.5)]
    return list(dict.fromkeys(words + hits))[:n]


def unknown(kind: str, name: object, choices: Iterable[str], listing: bool = False) -> UnknownNameError:
    """Build the error for an unknown `kind` (model, layer, class) with suggestions."""
    choices = list(choices)
    msg = f"unknown {kind} {name!r}"
    near = closest(str(name), choices)
    if near:
        msg += "; closest: " + ", ".join(repr(c) for c in near)
    if listing:
        msg += "; valid: " + ", ".join(choices)
    return UnknownNameError(msg)
