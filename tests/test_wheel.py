"""A built wheel, installed into a clean venv, works from outside the source tree.

The wheel is built from a copy of the files the build reads (so no build/ or egg-info lands in the
checkout), installed without dependencies into a fresh venv, and that venv borrows the test venv's
third-party packages through a .pth path line. A path line in a .pth adds the folder to sys.path
but does not run the .pth files inside it, so the test venv's editable install of attrvis_jax stays
inactive: the check below that attrvis_jax is imported from the clean venv proves it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("attrvis_jax", "setup.cfg", "pyproject.toml", "README.md")


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.pop("VIRTUAL_ENV", None)
    return env


def _run(cmd, cwd, env, timeout=300):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    return res


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    env = _clean_env()
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--disable-pip-version-check", "-w", tmp / "dist", src], tmp, env)
    (wheel,) = (tmp / "dist").glob("attrvis_jax-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp, env)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
          "--disable-pip-version-check", wheel], tmp, env)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env)
                .stdout.strip())
    borrowed = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "borrowed-test-venv.pth").write_text("".join(f"{p}\n" for p in borrowed))
    return wheel, venv, env


def test_wheel_carries_the_manifest(wheel_venv):
    wheel, _, _ = wheel_venv
    names = zipfile.ZipFile(wheel).namelist()
    assert "attrvis_jax/weights/manifest.json" in names
    assert not any(n.startswith(("tests/", "pretrained/", "benchmarks/")) for n in names)


def test_installed_wheel_classifies_the_bundled_photo(wheel_venv, tmp_path):
    _, venv, env = wheel_venv
    cwd = tmp_path / "elsewhere"  # not the checkout: nothing may be found through the working directory
    cwd.mkdir()
    where = _run([venv / "bin" / "python", "-c", "import attrvis_jax; print(attrvis_jax.__file__)"], cwd, env)
    assert Path(where.stdout.strip()).resolve().is_relative_to(venv.resolve()), where.stdout
    res = _run([venv / "bin" / "attrvis", "classify", "chelsea", "--top", "3"], cwd, env)
    rows = [line for line in res.stdout.splitlines() if "%" in line]
    assert len(rows) == 3 and all(row.endswith(" cat") or "tabby" in row for row in rows), res.stdout
    assert "default (efficientnet-lite0-" in res.stdout  # the manifest's weights, not random ones
