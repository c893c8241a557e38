"""Atomic file output: a crash, Ctrl-C or a full disk never leaves a half-written result behind.

Every failed write (a full disk, a read-only place, no permission, ...) is one `WriteError` that
names the path and the reason."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from attrvis_jax.errors import AttrvisError, WriteError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, and a file another thread creates
# between the two calls gets umask 0 (the package writes from one thread; a program using it may not).
_UMASK = _read_umask()


def write_error(path, error: OSError) -> WriteError:
    """The one error of a failed write of `path`: "cannot write PATH: REASON", with error's errno."""
    reason = error.strerror or str(error)
    out = WriteError(f"cannot write {path}: {reason}")
    out.errno, out.strerror, out.filename = error.errno, reason, str(path)
    return out


class _Sink:
    """The temp file as `atomic_write`'s callback sees it: a failed write to it is a WriteError of the
    destination, while an OSError of the callback's own source (a download) stays what it was."""

    def __init__(self, f, path: Path):
        self._f, self._path = f, path

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as e:
            raise write_error(self._path, e) from None

    def flush(self):
        try:
            self._f.flush()
        except OSError as e:
            raise write_error(self._path, e) from None

    def __getattr__(self, name):
        return getattr(self._f, name)


def atomic_write(path: Path, write: Callable) -> None:
    """Call write(binary file) on a temp file beside `path`, fsync, then rename it into place; any
    failure of the file itself is one WriteError naming `path`, and the temp file is removed.

    The file gets the permissions `open()` would give it (0666 less the umask), not mkstemp's 0600,
    so results are readable by whoever could read a plainly written file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from None
    source_error = None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o666 & ~_UMASK)
            try:
                write(_Sink(f, path))
            except OSError as e:  # the sink raises WriteError for the file's own: this is the data's source
                source_error = e
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError) and e is not source_error:
            raise write_error(path, e) from None
        raise


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value):
    """numpy/jax scalars and arrays -> plain Python for json."""
    import numpy as np

    if hasattr(value, "tolist"):
        return np.asarray(value).tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_npz(path: Path, meta: dict, arrays: dict) -> Path:
    """Arrays plus a JSON `meta` record in one compressed .npz, written atomically (no pickles)."""
    import numpy as np

    path = Path(path)
    atomic_write(path, lambda f: np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays))
    return path


def read_npz(path: Path, kind: str, version: int) -> tuple[dict, dict]:
    """(meta, arrays) of a `write_npz` file whose meta["format"] is `version`; every failure is one
    AttrvisError naming the file and what it should have been (`kind`, e.g. "attribution")."""
    import numpy as np

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {name: data[name] for name in data.files if name != "meta"}
    except FileNotFoundError:
        raise AttrvisError(f"{kind} file not found: {path}") from None
    except (OSError, ValueError, KeyError) as e:
        article = "an" if kind[:1] in "aeiou" else "a"
        raise AttrvisError(f"{path} is not {article} {kind} file: {e}") from None
    if meta.get("format") != version:
        raise AttrvisError(f"{path}: unsupported {kind} file format {meta.get('format')!r}")
    return meta, arrays


# ---- output folders ------------------------------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_folder(path: Path, owns: Callable[[str], bool], overwrite: bool = False,
                        what: str = "run") -> list[Path]:
    """Refuse, with one AttrvisError, an output folder that cannot hold a `what`'s results; returns
    the files of an earlier `what` in it (those `owns` claims by name) that `overwrite` allows to
    replace. Creates nothing: the writability probe is a temp file that vanishes.

    Refused: a path that is a file (or lies under one), a place nobody can write, and a folder with
    files of an earlier `what` unless `overwrite` (a mix of two runs' files would mislead)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise AttrvisError(f"output folder {path} is an existing file, not a folder")
    base = _nearest_existing(path.absolute())
    if not base.is_dir():
        raise AttrvisError(f"cannot create output folder {path}: {base} is a file")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        raise AttrvisError(f"cannot write output folder {path}: {e.strerror or e} ({base})") from None
    old = sorted(p for p in path.iterdir() if owns(p.name)) if path.is_dir() else []
    if old and not overwrite:
        raise AttrvisError(f"{path} holds an earlier {what} ({len(old)} of its files, e.g. {old[0].name}): "
                           f"pass --overwrite to replace it, or choose another output folder")
    return old


class OutputFolder:
    """An output folder made as late as possible and never left behind empty.

        with OutputFolder(out, owns, overwrite) as folder:   # checks now (check_output_folder)
            ...compute...
            folder.replace()                                  # creates it, drops the earlier run's files
            ...write...

    If the block fails before anything is written, every folder it created is removed again."""

    def __init__(self, path: Path, owns: Callable[[str], bool], overwrite: bool = False, what: str = "run"):
        self.path = Path(path).expanduser()
        self.old = check_output_folder(self.path, owns, overwrite, what)
        self.created = [] if self.path.exists() else [p for p in (self.path, *self.path.parents) if not p.exists()]

    def replace(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        for old in self.old:
            old.unlink(missing_ok=True)
        self.old = []
        return self.path

    def __enter__(self) -> "OutputFolder":
        return self

    def __exit__(self, *exc) -> None:
        for folder in self.created:  # innermost first; stops at the first that holds something
            try:
                folder.rmdir()
            except OSError:
                break
