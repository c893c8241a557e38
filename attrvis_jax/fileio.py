"""Atomic file output: a crash, Ctrl-C or a full disk never leaves a half-written result behind.

Every failed write (a full disk, a read-only place, no permission, ...) is one `WriteError` that
names the path and the reason. `OutputFolder` writes a whole folder of results at once: into a hidden
folder first, moved into place only when complete."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

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


def input_file(path, what: str, error: type | None = None) -> Path:
    """`path` checked as a regular file to read `what` from: missing, a folder, or anything else
    that is not a regular file (a FIFO or a terminal would block the read forever, /dev/zero never
    ends) is one `error` (default AttrvisError) naming it. Symbolic links to regular files are fine."""
    import stat

    from attrvis_jax.errors import AttrvisError

    error = error or AttrvisError
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{path} is a directory, not {_article(what)} {what}")
    if not stat.S_ISREG(mode):
        raise error(f"{path} is not a regular file (a pipe, device or socket), so it cannot be {_article(what)} {what}")
    return path


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


def read_npz(path: Path, kind: str, version: int) -> tuple[dict, dict]:
    """(meta, arrays) of a `write_npz` file whose meta["format"] is `version`; every failure is one
    AttrvisError naming the file and what it should have been (`kind`, e.g. "attribution")."""
    import numpy as np

    from attrvis_jax.errors import AttrvisError

    path = input_file(path, f"{kind} file")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {name: data[name] for name in data.files if name != "meta"}
    except Exception as e:  # noqa: BLE001 - any failure to decode (BadZipFile, a bad CRC, zlib, EOF) is the file's
        reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise AttrvisError(f"{path} is not {_article(kind)} {kind} file, or it is damaged ({reason})") from None
    if not isinstance(meta, dict):
        raise AttrvisError(f"{path} is not {_article(kind)} {kind} file (its meta record is not a JSON object)")
    if meta.get("format") != version:
        raise AttrvisError(f"{path}: unsupported {kind} file format {meta.get('format')!r}")
    return meta, arrays


# ---- output places -------------------------------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _given_path(path, label: str) -> Path:
    """`path` as a Path; an empty or blank one (an unset variable in a script) is refused, never
    taken for the current folder."""
    if not str(path).strip():
        raise AttrvisError(f"an empty {label} path (an unset variable?)")
    return Path(path).expanduser()


def _check_place(path: Path, label: str) -> None:
    """Refuse (one AttrvisError about `label`) a `path` to create that lies under a file or where
    nothing can be written. Creates nothing: the probe is a temp file that vanishes."""
    base = _nearest_existing(path.absolute())
    if not base.is_dir():
        raise AttrvisError(f"cannot create {label}: {base} is a file")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        raise AttrvisError(f"cannot write {label}: {e.strerror or e} ({base})") from None


def _usable_folder(path) -> Path:
    """The output folder `path` as a Path, refused (one AttrvisError) if it is empty, a file, a
    broken link, lies under a file or cannot be written."""
    path = _given_path(path, "output folder")
    if path.exists() and not path.is_dir():
        raise AttrvisError(f"output folder {path} is an existing file, not a folder")
    if path.is_symlink() and not path.exists():
        raise AttrvisError(f"output folder {path} is a broken link")
    _check_place(path, f"output folder {path}")
    return path


def check_output_file(path) -> Path:
    """The output file `path` as a Path, refused (one AttrvisError) before any work if it is empty,
    an existing folder, lies under a file or its folder cannot be written."""
    path = _given_path(path, "output file")
    if path.is_dir():
        raise AttrvisError(f"output file {path} is an existing folder: name the file to write")
    _check_place(path.parent, f"output file {path}")
    return path


def check_output_folder(path) -> Path:
    """The output folder `path`, refused with one AttrvisError before any work if it is empty, a
    file, a broken link, lies under a file or cannot be written. Creates nothing. For folders
    written file by file (sweeps, catalogs, figures); a folder written whole, whose earlier
    contents are known by what they recorded, is an `OutputFolder`."""
    return _usable_folder(path)


# The hidden folder an OutputFolder is written into: ".attrvis-partial.HOST.PID.RANDOM".
STAGING = ".attrvis-partial"
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_STAGING_NAME = re.compile(re.escape(STAGING) + r"\.([A-Za-z0-9-]+)\.(\d{1,9})\.[a-z0-9_]{8}")


def _is_stale(name: str) -> bool:
    """Whether `name` is the staging folder of a process of this host that is gone (killed before it
    could clean up): only those are ever removed, never anything else."""
    m = _STAGING_NAME.fullmatch(name)
    if not m or m[1] != _HOST or int(m[2]) in (0, os.getpid()):
        return False
    try:
        os.kill(int(m[2]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def _remove_stale(folder: Path) -> None:
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        if _is_stale(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def remove_empty(folders: Iterable[Path]) -> None:
    """Remove folders that a failed or refused run created (innermost first), up to the first that
    holds something."""
    for folder in folders:  # innermost first; stops at the first that holds something
        try:
            folder.rmdir()
        except OSError:
            break


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done (in the main thread, where Python handles
    them): a commit of a few renames is never cut in half."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught, saved = [], {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler is not None:  # None: set outside Python, cannot be restored
            saved[sig] = handler
            signal.signal(sig, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for number in caught:
            signal.raise_signal(number)


def _is_file(path: Path) -> bool:
    return path.is_symlink() or path.is_file()


class OutputFolder:
    """A folder of results, checked once where its path enters, and written whole:

        folder = OutputFolder(out, earlier, overwrite)  # refuses an unusable folder now
        folder.expect(names)                            # refuses now to replace a file of the user's
        ...compute...
        with folder.writing() as tmp:                   # a hidden folder (STAGING) beside `out`, or
            ...write every file into tmp...             # inside it if it exists
        # complete: moved into place, then the earlier output's files not written again are removed;
        # failed, interrupted or disk full: tmp removed, `out` as it was (and not created)

    `earlier(folder)` lists the files an earlier output recorded in `folder` as its own (None: it
    holds none); they are replaced only with `overwrite`. Every other file is the user's: left alone,
    and never replaced (such an output is refused, even with `overwrite`). `record`, the file that
    lists the others, is moved in last. A staging folder left by a killed process of this host is
    removed when the next one starts beside it. Ctrl-C waits for the moves; only a kill -9 or a
    failing rename in those milliseconds can leave new files beside the earlier record (nothing is
    lost: the next run refuses the files it does not know). `how`: what the refusal of an earlier
    output tells the user to pass (the CLI's flag, or the API's keyword)."""

    def __init__(self, path, earlier: Callable[[Path], Iterable[str] | None] | None = None,
                 overwrite: bool = False, what: str = "run", record: str | None = None, how: str = "--overwrite"):
        self.path = _usable_folder(path)
        self.what, self.overwrite, self.record, self.how = what, overwrite, record, how
        self._earlier = earlier or (lambda folder: None)
        self._check(())

    def _check(self, names: Iterable[str]) -> list[str]:
        """The earlier output's files in the folder now; refuses (one AttrvisError) a folder holding
        one unless `overwrite`, and any of `names` that exists but is not the earlier output's."""
        listed = self._earlier(self.path) if self.path.is_dir() else None
        old = sorted({name for name in listed or () if _is_file(self.path / name)})
        if old and not self.overwrite:
            raise AttrvisError(f"{self.path} holds an earlier {self.what} ({len(old)} of its files, e.g. "
                               f"{old[0]}): pass {self.how} to replace it, or choose another output folder")
        mine = [name for name in names if os.path.lexists(self.path / name) and name not in old]
        if mine:
            more = f" (and {len(mine) - 1} more)" if len(mine) > 1 else ""
            raise AttrvisError(f"{self.path / mine[0]} is not an earlier {self.what}'s file and the {self.what} "
                               f"would replace it{more}: move it away or choose another output folder")
        return old

    def expect(self, names: Iterable[str]) -> None:
        """Refuse now, before any work, an output of these file names that would replace a user's file."""
        self._check(names)

    @contextlib.contextmanager
    def writing(self) -> Iterator[Path]:
        home = self.path if self.path.is_dir() else self.path.parent
        created = [p for p in (home, *home.parents) if not p.exists()]
        try:
            home.mkdir(parents=True, exist_ok=True)
            _remove_stale(home)
            tmp = Path(tempfile.mkdtemp(prefix=f"{STAGING}.{_HOST}.{os.getpid()}.", dir=home))
            os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp's 0700 would become the output folder's
        except OSError as e:
            remove_empty(created)
            raise write_error(self.path, e) from None
        try:
            yield tmp
            with _signals_held():
                self._commit(tmp)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            remove_empty(created)
            inside = isinstance(e, WriteError) and e.filename and Path(e.filename).is_relative_to(tmp)
            if inside:  # name the file the user asked for, not its hidden draft
                raise write_error(self.path / Path(e.filename).relative_to(tmp), e) from None
            raise

    def _commit(self, tmp: Path) -> None:
        names = sorted(p.name for p in tmp.iterdir())
        old = self._check(names)
        if not self.path.exists():
            try:
                os.rename(tmp, self.path)
            except OSError as e:
                raise write_error(self.path, e) from None
            _fsync_dir(self.path.parent)
            return
        last = [self.record] if self.record in names else []
        for name in [n for n in names if n not in last]:
            self._move(tmp / name, self.path / name)
        for name in old:
            if name not in names:
                (self.path / name).unlink(missing_ok=True)
        for name in last:
            self._move(tmp / name, self.path / name)
        tmp.rmdir()
        _fsync_dir(self.path)

    @staticmethod
    def _move(source: Path, dest: Path) -> None:
        try:
            os.replace(source, dest)
        except OSError as e:
            raise write_error(dest, e) from None
