"""Shared fixtures: a private weight cache, the real EfficientNet-Lite0 model, bundled photos."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from attrvis_jax.apps import compile_cache

# JAX's compilation cache is the one thing kept across runs: in the user's cache folder (not the
# private one below), on in this process (every xdist worker imports this file) before anything
# compiles, and named in the environment so that the tests' CLI subprocesses share it (or, when it
# is off, stay off). ATTRVIS_COMPILE_CACHE=0 runs the suite without it; a new machine starts empty.
os.environ[compile_cache.ENV] = str(compile_cache.enable() or "0")

# Keep tests away from the user's weight cache, and make each run start cold like a fresh machine.
_OWN_CACHE = None if "ATTRVIS_CACHE" in os.environ else tempfile.mkdtemp(prefix="attrvis-test-cache-")
if _OWN_CACHE:
    os.environ["ATTRVIS_CACHE"] = _OWN_CACHE


def pytest_addoption(parser):
    parser.addoption("--extended", action="store_true",
                     help="also run the tests marked `extended` (further variants of default tests)")


# The files that take longest on a cold run (compiling), longest first: run-tests hands files to its
# workers in collection order (--dist loadfile --no-loadscope-reorder), so these start first and the
# many short files fill the gaps at the end. xdist's own reorder (most tests first) left the
# one-test device benchmark to start last: a cold run then ended on one worker alone for ~300 s.
LONGEST_FIRST = (
    "test_figures.py", "test_device_benchmark.py", "test_sweep.py", "test_external.py", "test_optimize.py",
    "test_groups.py", "test_compile_cache.py", "test_pipeline.py", "test_canonical_conv.py",
    "test_efficientnet_lite.py", "test_render_real.py",
)


def _file_rank(item) -> int:
    name = os.path.basename(str(item.fspath))
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    """Longest files first (a stable sort: the order within and among the others stays). Then
    `extended` tests, which repeat a default test on another layer or model, are skipped unless
    asked for, to keep the default run (CI) short."""
    items.sort(key=_file_rank)
    if config.getoption("--extended") or os.environ.get("ATTRVIS_EXTENDED"):
        return
    skip = pytest.mark.skip(reason="extended variant: run with --extended")
    for item in items:
        if "extended" in item.keywords:
            item.add_marker(skip)


def pytest_unconfigure(config):
    if _OWN_CACHE:  # converted test weights can be 100 MB: do not leave them behind
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def lite0():
    """EfficientNet-Lite0 with its real ImageNet weights (from the registry package)."""
    from attrvis_jax import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def chelsea():
    from attrvis_jax.data import sample_image

    return sample_image("chelsea")
