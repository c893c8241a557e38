"""A sweep's folder: one sweep at a time (a lock), and reading back what an earlier session left.

The lock is `fcntl.flock` on `<folder>/sweep.lock`, held for the whole sweep. The kernel drops it
when its process ends, however it ends (`kill -9` included), so a lock is never stale; the file
says who holds it (pid, host, start time) for the message of the sweep that is refused. The file is
removed, still locked, on release; a sweep that opened it just before checks after locking that the
path still names the file it locked, and starts over if not. On several hosts only process 0 writes
the folder, so only it takes the lock (`devices.agree` tells the others whether it got it).

Every file a sweep reads back from its folder (store.sqlite, sweep.json, attributions/*.npz) is
read inside `reading(path, redo)`: whatever its decoder raises becomes one `AttrvisError` naming the
file, what is wrong with it and what to do (move it away: the sweep redoes what it held).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from attrvis_jax.errors import AttrvisError
from attrvis_jax.fileio import remove_empty

LOCK_NAME = "sweep.lock"


class FolderLock:
    """Held from construction to `release()`; refuses with an AttrvisError naming the holder.

    Creates the folder (and its missing parents) for the lock file; `release(undo=True)` removes
    those again when the sweep wrote nothing else (a refused sweep leaves no folder behind)."""

    def __init__(self, folder, what: str = "sweep"):
        self.folder = Path(folder).expanduser()
        self.path = self.folder / LOCK_NAME
        self.created = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self.fd = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.fd = self._acquire(what)
        except BaseException:
            self._undo()
            raise

    def _acquire(self, what: str) -> int:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise AttrvisError(f"cannot create the lock file {self.path}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(os.pread(fd, 4096, 0))
                os.close(fd)
                raise AttrvisError(
                    f"{self.folder} is in use by another {what} ({holder}; lock file {LOCK_NAME}): wait for it "
                    f"to finish or stop it, then rerun to resume; or use another --out directory") from None
            except OSError as e:  # a filesystem without locks
                os.close(fd)
                raise AttrvisError(f"cannot lock {self.path}: {e.strerror or e}; use a local --out directory "
                                   "or one on a filesystem with file locks") from None
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                break
            os.close(fd)  # the holder released (and removed) it meanwhile: lock the new file
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        return fd

    def release(self, undo: bool = False) -> None:
        """Unlock (removing the lock file first, while still held); undo: also remove the folders
        the lock created, if they hold nothing else."""
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None
        if undo:
            self._undo()

    def _undo(self) -> None:
        remove_empty(self.created)


def _holder(raw: bytes) -> str:
    try:
        record = json.loads(raw.decode())
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(record["started"])))
        return f"pid {int(record['pid'])} on {record['host']}, started {started}"
    except Exception:  # noqa: BLE001 - the holder has not written its name yet
        return "a process that is just starting"


@contextlib.contextmanager
def reading(path, redo: str):
    """Read `path` (a file the sweep wrote) inside this block: any failure is one AttrvisError that
    names the file and says what to do; `redo`: what the sweep does once the file is moved away."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - whatever the decoder raises, the file is not what was written
        reason = str(e) if isinstance(e, AttrvisError) else f"{type(e).__name__}: {e}"
        reason = reason.replace(f"{path}: ", "").replace(str(path), "it")
        raise AttrvisError(f"{path} is damaged or unreadable ({reason}): move it away and rerun; "
                           f"the sweep {redo}") from None
