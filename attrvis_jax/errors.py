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


def closest(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """The valid names closest to `name` (case-insensitive), best first."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    found = [lowered[h] for h in hits]
    # Substring matches catch what edit distance misses ("cat" in "tabby cat").
    for c in choices:
        if len(found) >= n:
            break
        if name.lower() in c.lower() and c not in found:
            found.append(c)
    return found


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
