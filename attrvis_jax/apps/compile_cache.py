"""JAX's persistent compilation cache for the drivers (the `attrvis` command, the test suite).

A compiled XLA program is written to disk and a later process with the same program (same shapes,
model, flags, devices, jax version) loads it instead of compiling again.

Where: `ATTRVIS_COMPILE_CACHE` if it names a folder; otherwise `xla/` in the weight cache folder
(`ATTRVIS_CACHE`, or the platform's user cache folder, as in `attrvis_jax.weights.store`).
Off: `ATTRVIS_COMPILE_CACHE=0` (or off, false, no, none), or `attrvis --no-compile-cache`.
Size: every program is written (MIN_COMPILE_TIME_S); above MAX_SIZE_BYTES the least recently used
entries are deleted when a process turns the cache on.

This sets global JAX options, so only drivers call it (the library never does), once, before the
first compilation: JAX opens its cache at the first compile and ignores later changes of folder.
A folder that cannot be written leaves the cache off with one note on stderr; JAX itself turns
errors reading or writing an entry into warnings and compiles instead.

The cache is trusted like code: do not point it at a folder others can write to.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import jax

from attrvis_jax.weights.store import cache_dir

ENV = "ATTRVIS_COMPILE_CACHE"
OFF = frozenset({"0", "off", "false", "no", "none"})

# Programs that compiled faster than this are not written. JAX's default, 1 s, would skip most of
# ours: even those under 0.1 s load ~10x faster than they compile (benchmarks/README.md
# 'Compilation cache'), so every program is written.
MIN_COMPILE_TIME_S = 0.0
# Above this size `enable` deletes the least recently used entries (down to 3/4 of it). Not JAX's
# own cap (jax_compilation_cache_max_size): that one scans the whole folder at every write, which
# measured 45 ms a write at 1,000 entries and 190 ms at 5,000 (benchmarks/README.md).
MAX_SIZE_BYTES = 4 << 30

_ENTRY = "-cache"  # JAX's file names: <program>-<key>-cache (and <program>-<key>-atime)

_noted: set[str] = set()


def folder(environ: Mapping[str, str] | None = None) -> Path | None:
    """The cache folder the environment asks for, or None when the cache is switched off."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    if value:
        return Path(value).expanduser().absolute()  # the same folder for a child in another directory
    return (cache_dir(environ) / "xla").absolute()


def enable(environ: Mapping[str, str] | None = None, *, off: bool = False) -> Path | None:
    """Turn JAX's persistent compilation cache on in the folder of `folder(environ)`, or off
    (`off=True` or the environment's off switch). Returns the folder in use, or None when off.
    Never raises: a cache that cannot be set up is left off, with a note on stderr."""
    path = None if off else _usable(folder(environ))
    try:
        if path is None:
            jax.config.update("jax_enable_compilation_cache", False)
            return None
        jax.config.update("jax_enable_compilation_cache", True)
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
    except Exception as e:  # an older or newer jax without one of these options
        _note(f"the compilation cache is off: {type(e).__name__}: {e}")
        try:
            jax.config.update("jax_enable_compilation_cache", False)
        except Exception:
            pass
        return None
    try:
        prune(path)
    except OSError:  # a folder shared with other processes: what they removed is gone anyway
        pass
    return path


def prune(path: Path, limit: int = MAX_SIZE_BYTES) -> int:
    """Delete the least recently used entries of the cache in `path` while it holds more than
    `limit` bytes, down to 3/4 of `limit`; returns the bytes deleted. "Used" is the file's access
    time where the filesystem keeps one (Linux's relatime: to within a day), else its writing."""
    entries, total = [], 0
    with os.scandir(path) as found:
        for entry in found:
            if entry.name.endswith(_ENTRY) and entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                entries.append((max(st.st_atime, st.st_mtime), st.st_size, entry.name))
                total += st.st_size
    if total <= limit:
        return 0
    deleted = 0
    for _, size, name in sorted(entries):
        if total - deleted <= limit * 3 // 4:
            break
        for file in (name, name[: -len(_ENTRY)] + "-atime"):  # and JAX's own access record, if any
            try:
                (path / file).unlink()
            except FileNotFoundError:
                pass
        deleted += size
    return deleted


def _usable(path: Path | None) -> Path | None:
    """`path` if a file can be created in it (made if missing), else None with a note."""
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as e:
        _note(f"the compilation cache is off: cannot write to {path} ({e.strerror or e}); "
              f"set {ENV} to another folder, or to 0")
        return None
    return path.resolve()


def _note(message: str) -> None:
    if message not in _noted:
        _noted.add(message)
        print(f"attrvis: note: {message}", file=sys.stderr)
