"""The render's memory floor (memory.py): traced, not compiled; linear in the seeds; refused with
the estimate and the largest seed count that fits."""

from __future__ import annotations

import pytest

from attrvis_jax import load_model
from attrvis_jax.errors import AttrvisError
from attrvis_jax.memory import activation_bytes, available_bytes, check_render_memory, render_bytes


@pytest.fixture(scope="module")
def model():
    return load_model("efficientnet_lite0", weights="random")


def test_floor_counts_the_activations_and_grows_with_seeds_and_depth(model):
    early = activation_bytes(model, "stem", 224)
    assert early == 112 * 112 * 32 * 4  # the stem's one convolution output, float32
    deep = activation_bytes(model, "blocks.14", 224)
    assert deep > 10 * early
    total, per_seed = render_bytes(model, "blocks.14", 3, 224)
    assert per_seed == deep + 3 * 4 * 224 * 224 * 4 and total == 3 * per_seed
    assert activation_bytes(model, "blocks.14", 112) < deep / 3  # a quarter of the pixels


def test_refusal_names_the_estimate_and_what_fits(model):
    _, per_seed = render_bytes(model, "blocks.14", 1, 224)
    check_render_memory(model, "blocks.14", 3, 224, available=3 * per_seed)  # fits exactly: accepted
    with pytest.raises(AttrvisError, match=r"seeds 4: .* need at least .*; lower seeds to at most 3$"):
        check_render_memory(model, "blocks.14", 4, 224, available=3 * per_seed + per_seed // 2)
    with pytest.raises(AttrvisError, match="even one seed does not fit"):
        check_render_memory(model, "blocks.14", 1, 224, available=per_seed // 2)


def test_available_memory_is_known_here():
    free = available_bytes()
    assert free is not None and free > 0
