"""Atomic file output: a crash or Ctrl-C never leaves a half-written result behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe, and the
# sweep writes pictures from a background thread.
_UMASK = _read_umask()


def atomic_write(path: Path, write: Callable) -> None:
    """Call write(binary file) on a temp file beside `path`, fsync, then rename it into place.

    The file gets the permissions `open()` would give it (0666 less the umask), not mkstemp's 0600,
    so results are readable by whoever could read a plainly written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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

    from attrvis_jax.errors import AttrvisError

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
