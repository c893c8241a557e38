"""The metric pieces against direct numpy references (the batched forward pass is covered by the
sweep and pipeline tests)."""

import jax.numpy as jnp
import numpy as np

from attrvis_jax.metrics import pearson, pearson_rows, target_rank


def test_pearson_matches_numpy_and_is_zero_for_constants():
    rng = np.random.default_rng(0)
    a, r = rng.normal(size=(3, 4, 4, 2)), rng.normal(size=(4, 4, 2))
    expected = [np.corrcoef(x.ravel(), r.ravel())[0, 1] for x in a]
    np.testing.assert_allclose(pearson_rows(a, r), expected, atol=1e-12)
    np.testing.assert_allclose([float(pearson(jnp.asarray(x), jnp.asarray(r))) for x in a], expected, atol=1e-5)
    assert pearson_rows(np.ones((1, 3)), np.arange(3.0)).tolist() == [0.0]
    assert float(pearson(jnp.ones(3), jnp.arange(3.0))) == 0.0


def test_target_rank_counts_only_named_classes():
    logits = np.array([[0.0, 5.0, 1.0, 9.0, 2.0],   # target 2 (logit 1): beaten by 5, 9, 2; among the first 3 only by 5
                       [3.0, 1.0, 2.0, 0.0, 0.5]])  # target 0 is the top class either way
    targets = np.array([2, 0])
    assert target_rank(logits, targets).tolist() == [3, 0]
    assert target_rank(logits, targets, classes=3).tolist() == [1, 0]
    assert target_rank(logits, 2, classes=3).tolist() == [1, 1]  # one int target for every row
    # the traced (jax) path gives the same ranks
    assert np.asarray(target_rank(jnp.asarray(logits), jnp.asarray(targets), 3)).tolist() == [1, 0]
