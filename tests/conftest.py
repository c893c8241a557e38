"""Shared fixtures: a private weight cache, the real EfficientNet-Lite0 model, bundled photos."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# Keep tests away from the user's cache, and make each run start cold like a fresh machine.
_OWN_CACHE = None if "ATTRVIS_CACHE" in os.environ else tempfile.mkdtemp(prefix="attrvis-test-cache-")
if _OWN_CACHE:
    os.environ["ATTRVIS_CACHE"] = _OWN_CACHE


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
