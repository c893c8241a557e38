"""Atomic writes: the whole file or nothing, with the permissions a plain open() would give, and
every failed write one WriteError naming the file; output folders written whole (moved into place
when complete), that never mix two runs, never replace a user's file and are never left behind
empty or half-written."""

import errno
import json
import os
import signal
import stat
import subprocess
import sys

import pytest

from attrvis_jax import fileio
from attrvis_jax.errors import AttrvisError, WriteError
from attrvis_jax.fileio import STAGING, OutputFolder, atomic_write, write_text
from attrvis_jax.apps.pipeline import earlier_run, run_files, run_folder, run_owns


class _Full:
    """A file on a full disk: every write raises ENOSPC, as the kernel would."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)


def disk_full_after(monkeypatch, n: int, error=None) -> list:
    """Every atomic write after the first `n` fails as on a full disk (or raises `error`, e.g. a
    KeyboardInterrupt, when the write starts); returns the list of the files whose write began."""
    started, init = [], fileio._Sink.__init__

    def sink(self, f, path):
        started.append(path)
        if len(started) > n and error is not None:
            raise error
        init(self, _Full(f) if len(started) > n else f, path)

    monkeypatch.setattr(fileio._Sink, "__init__", sink)
    return started


def snapshot(folder):
    """Every file under `folder` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_run(folder, seeds=(0, 1), files=True, **extra):
    """A fake earlier run: every file it lists (its bytes its name), and its results.json."""
    folder.mkdir(parents=True, exist_ok=True)
    names = run_files(seeds)
    for name in names:
        (folder / name).write_text(name)
    record = {"model": "m", "layer": "l", "target_index": 1, "seeds": list(seeds), **extra}
    if files:
        record["files"] = names
    (folder / "results.json").write_text(json.dumps(record))
    return names


def test_atomic_write_has_plain_file_permissions(tmp_path):
    write_text(tmp_path / "a.txt", "x")
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)
    assert mode(tmp_path / "a.txt") == mode(tmp_path / "plain.txt")


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    write_text(tmp_path / "a.txt", "old")

    def explode(f):
        f.write(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a.txt", explode)
    assert (tmp_path / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_full_disk_is_one_write_error_naming_the_file(tmp_path, monkeypatch):
    write_text(tmp_path / "a.txt", "old")
    disk_full_after(monkeypatch, 0)
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'a.txt'}: No space left on device") as e:
        write_text(tmp_path / "a.txt", "new")
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC  # `except OSError` still catches it
    assert (tmp_path / "a.txt").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_failures_outside_the_callback_name_the_file_too(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(WriteError, match="cannot write .*folder: Is a directory"):
        write_text(tmp_path / "folder", "x")
    write_text(tmp_path / "afile", "x")
    with pytest.raises(WriteError, match="cannot write .*afile/x.txt: File exists"):  # its folder is a file
        write_text(tmp_path / "afile" / "x.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"]


def test_an_oserror_of_the_data_source_is_not_called_a_write_error(tmp_path):
    def download(f):
        raise TimeoutError("timed out")  # what a stalled network read raises

    with pytest.raises(TimeoutError) as e:
        atomic_write(tmp_path / "a.bin", download)
    assert not isinstance(e.value, WriteError) and list(tmp_path.iterdir()) == []


def test_check_output_file(tmp_path):
    assert fileio.check_output_file(str(tmp_path / "new" / "w.npz")) == tmp_path / "new" / "w.npz"
    assert not (tmp_path / "new").exists()  # nothing made
    for bad, message in ((tmp_path, "is an existing folder: name the file"), (" ", "an empty output file path"),
                         ("/proc/attrvis-test.npz", "cannot write output file /proc/attrvis-test.npz")):
        with pytest.raises(AttrvisError, match=message):
            fileio.check_output_file(bad)


def test_run_owns_its_files_only():
    for name in ("results.json", "report.html", "seed00.png", "seed24_mask.png", "seed100.png", "input.png",
                 "heatmap.png", "contact_sheet.png", "attribution.npz", "render.npz"):
        assert run_owns(name), name
    for name in ("notes.txt", "seed.png", "myseed01.png", "results.json.bak", "photo.png", "seed01.jpg",
                 ".seed03.png.abc123.tmp", "../results.json", "sub/seed00.png"):
        assert not run_owns(name), name


def test_an_earlier_run_is_known_by_its_record_not_by_file_names(tmp_path):
    names = write_run(tmp_path / "new")
    assert earlier_run(tmp_path / "new") == names
    write_run(tmp_path / "old", seeds=(0, 1, 2), files=False)  # before results.json listed its files
    # (those versions wrote no render.npz either)
    assert earlier_run(tmp_path / "old") == [name for name in run_files((0, 1, 2)) if name != "render.npz"]
    (tmp_path / "photos").mkdir()  # the user's own files of those names: no run
    for name in ("input.png", "seed03.png", "results.json"):
        (tmp_path / "photos" / name).write_text("mine")
    assert earlier_run(tmp_path / "photos") is None
    (tmp_path / "photos" / "results.json").write_text(json.dumps({"items": [], "summary": []}))  # a sweep's
    assert earlier_run(tmp_path / "photos") is None
    # a record claims only a run's file names: never the user's notes, never a path elsewhere
    write_run(tmp_path / "forged")
    record = json.loads((tmp_path / "forged" / "results.json").read_text())
    record["files"] = ["notes.txt", "../x/results.json", "/etc/passwd", 3, "seed00.png"]
    (tmp_path / "forged" / "results.json").write_text(json.dumps(record))
    assert earlier_run(tmp_path / "forged") == ["seed00.png"]


def test_a_folder_is_written_whole_and_made_only_when_complete(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    folder = run_folder(out)
    with pytest.raises(RuntimeError):
        with folder.writing() as tmp:
            assert tmp.parent == out.parent and tmp.name.startswith(STAGING + ".") and not out.exists()
            write_text(tmp / "input.png", "x")
            raise RuntimeError("interrupted")
    assert not (tmp_path / "a").exists()  # the draft and every folder made for it are gone
    with folder.writing() as tmp:
        write_text(tmp / "results.json", "{}")
    assert [p.name for p in out.iterdir()] == ["results.json"] and [p.name for p in out.parent.iterdir()] == ["out"]
    (tmp_path / "plain").mkdir()
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)
    assert mode(out) == mode(tmp_path / "plain")  # not mkdtemp's 0700


def test_an_earlier_run_is_refused_or_replaced_whole_never_mixed(tmp_path):
    out = tmp_path / "out"
    old = write_run(out, seeds=(0, 1))
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    with pytest.raises(AttrvisError, match=r"holds an earlier run \(11 of its files, e.g. attribution.npz\): pass --overwrite"):
        run_folder(out)
    folder = run_folder(out, overwrite=True)
    with pytest.raises(RuntimeError):  # a failed overwrite keeps the earlier run whole
        with folder.writing() as tmp:
            write_text(tmp / "seed00.png", "new")
            raise RuntimeError("failed while writing")
    assert snapshot(out) == before
    new = run_files((0,))
    with folder.writing() as tmp:
        for name in new:
            write_text(tmp / name, "new")
    assert sorted(p.name for p in out.iterdir()) == sorted(new + ["notes.txt"])  # seed01 of the old run: gone
    assert all((out / name).read_text() == "new" for name in new) and (out / "notes.txt").read_text() == "mine"
    assert set(old) - set(new) == {"seed01.png", "seed01_mask.png"}


def test_a_users_file_is_never_replaced_even_with_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("input.png", "seed3.png", "notes.txt"):
        (out / name).write_text("mine")
    before = snapshot(out)
    for overwrite in (False, True):
        folder = run_folder(out, overwrite=overwrite)  # no earlier run here: not refused yet
        with pytest.raises(AttrvisError, match=f"{out / 'input.png'} is not an earlier run's file and the run would "
                                               "replace it: move it away or choose another output folder"):
            folder.expect(run_files((0,)))
        with pytest.raises(AttrvisError, match="input.png is not an earlier run's file"):  # checked again at the end
            with folder.writing() as tmp:
                write_text(tmp / "input.png", "new")
        assert snapshot(out) == before
    folder = run_folder(out)  # files of other names stay beside a run
    folder.expect(["results.json"])
    with folder.writing() as tmp:
        write_text(tmp / "results.json", "{}")
    assert sorted(p.name for p in out.iterdir()) == ["input.png", "notes.txt", "results.json", "seed3.png"]
    # beside an earlier run too: a file the earlier run did not write is the user's
    write_run(tmp_path / "run", seeds=(0,))
    (tmp_path / "run" / "seed01.png").write_text("mine")
    (tmp_path / "run" / "seed01_mask.png").write_text("mine")
    with pytest.raises(AttrvisError, match=r"run/seed01.png is not an earlier run's file .* \(and 1 more\)"):
        run_folder(tmp_path / "run", overwrite=True).expect(run_files((0, 1)))


def test_empty_and_broken_output_paths_are_refused(tmp_path):
    for bad, message in (("", "an empty output folder path"), ("  ", "an empty output folder path")):
        with pytest.raises(AttrvisError, match=message):
            run_folder(bad)
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(AttrvisError, match="is a broken link"):
        run_folder(tmp_path / "link")
    assert (tmp_path / "link").is_symlink()


def test_drafts_of_killed_runs_are_removed_and_nothing_else(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{STAGING}.{fileio._HOST}.{dead.pid}.abcdefgh"
    alive = tmp_path / f"{STAGING}.{fileio._HOST}.{os.getppid()}.abcdefgh"  # a run still going on
    other_host = tmp_path / f"{STAGING}.elsewhere.{dead.pid}.abcdefgh"
    lookalike = tmp_path / f"{STAGING}-mine"
    for folder in (stale, alive, other_host, lookalike):
        folder.mkdir()
        (folder / "seed00.png").write_text("x")
    folder = run_folder(tmp_path / "out")
    with folder.writing() as tmp:
        write_text(tmp / "results.json", "{}")
    assert not stale.exists() and all(p.is_dir() for p in (alive, other_host, lookalike))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (alive, other_host, lookalike)) + ["out"]


def test_ctrl_c_waits_for_the_moves():
    """As in a terminal: SIGINT raises KeyboardInterrupt (set here: a test worker may run with it
    ignored, which the held block then keeps)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with fileio._signals_held():
                os.kill(os.getpid(), signal.SIGINT)
                done = True  # reached: the signal waited
        assert done and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
