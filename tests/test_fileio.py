"""Atomic writes: the whole file or nothing, with the permissions a plain open() would give; output
folders that never mix two runs and are never left behind empty."""

import os
import stat

import pytest

from attrvis_jax.errors import AttrvisError
from attrvis_jax.fileio import OutputFolder, atomic_write, write_text
from attrvis_jax.apps.pipeline import run_owns


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


def test_run_owns_its_files_only():
    for name in ("results.json", "report.html", "seed00.png", "seed24_mask.png", "seed100.png", "input.png",
                 "heatmap.png", "contact_sheet.png", "attribution.npz", ".seed03.png.abc123.tmp"):
        assert run_owns(name), name
    for name in ("notes.txt", "seed.png", "myseed01.png", "results.json.bak", "photo.png", "seed01.jpg"):
        assert not run_owns(name), name


def test_output_folder_is_made_late_and_removed_when_nothing_was_written(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError):
        with OutputFolder(out, run_owns) as folder:
            assert not out.exists()  # nothing is created before the results are ready
            folder.replace()
            assert out.is_dir()
            raise RuntimeError("interrupted")
    assert not (tmp_path / "a").exists()  # every folder it made is gone again
    with OutputFolder(out, run_owns) as folder:
        write_text(folder.replace() / "results.json", "{}")
    assert (out / "results.json").is_file()


def test_an_earlier_run_is_refused_or_replaced_never_mixed(tmp_path):
    for name in ("results.json", "seed00.png", "seed01.png", "notes.txt"):
        write_text(tmp_path / name, "old")
    with pytest.raises(AttrvisError, match=r"holds an earlier run \(3 of its files, e.g. results.json\): pass --overwrite"):
        OutputFolder(tmp_path, run_owns)
    with pytest.raises(RuntimeError):  # a failed overwrite keeps the earlier run whole
        with OutputFolder(tmp_path, run_owns, overwrite=True):
            raise RuntimeError("failed before writing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "results.json", "seed00.png", "seed01.png"]
    with OutputFolder(tmp_path, run_owns, overwrite=True) as folder:
        write_text(folder.replace() / "seed00.png", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "seed00.png"]  # seed01 of the old run: gone
    assert (tmp_path / "seed00.png").read_text() == "new" and (tmp_path / "notes.txt").read_text() == "old"
