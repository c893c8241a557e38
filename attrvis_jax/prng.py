"""PRNG keys as the public functions take them: a key, an int seed, or None (seed 0).

    as_key(None)                  # jax.random.key(0)
    as_key(5)                     # jax.random.key(5): a seed in config.SEED_RANGE
    as_key(jax.random.key(5))     # itself; a raw uint32 key (jax.random.PRNGKey(5)) too

Anything else (a float, a bool, a batch of keys where one is meant, a seed past 32 bits, which
JAX would silently alias onto a smaller one) is one `AttrvisError` saying what to pass.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax.config import check_seed
from attrvis_jax.errors import AttrvisError

WHAT = "a PRNG key (jax.random.key(n)) or an int seed"


def as_key(key, name: str = "key", batched: bool | None = False) -> jax.Array:
    """`key` as a typed PRNG key: one key (shape ()), with `batched` one key per row (N,), with
    `batched=None` either."""
    if key is None:
        key = 0
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return jax.random.key(check_seed(int(key), name))
    if isinstance(key, (bool, float, str, bytes)) or not hasattr(key, "dtype"):
        raise AttrvisError(f"{name} must be {WHAT}, got {key!r} ({type(key).__name__})")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        typed = key
    elif np.issubdtype(key.dtype, np.integer) and np.shape(key)[-1:] == (2,):  # raw uint32 key data
        typed = jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
    elif np.issubdtype(key.dtype, np.integer) and np.ndim(key) == 0:  # a numpy / jax integer scalar
        return as_key(int(key), name, batched)
    else:
        raise AttrvisError(f"{name} must be {WHAT}, got an array of {key.dtype} with shape {np.shape(key)}")
    if typed.ndim not in ((0, 1) if batched is None else (int(bool(batched)),)):
        raise AttrvisError(f"{name} must be {'one key per row, shape (N,)' if batched else 'a single key' if batched is not None else 'a key or one key per image'}, "
                           f"got keys of shape {typed.shape}")
    return typed
