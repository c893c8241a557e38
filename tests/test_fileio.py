"""Atomic writes: the whole file or nothing, with the permissions a plain open() would give."""

import os
import stat

import pytest

from attrvis_jax.fileio import atomic_write, write_text


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
