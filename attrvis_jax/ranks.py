"""A class's rank among a network's logits: the classification consistency of the paper's §4.2
(docs/method.md, 'Metrics'), shared by the network's own metrics and a second network's verdict."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def target_rank(logits, targets, classes: int | None = None):
    """How many classes score above each row's target (0 = top-1; < 5 = a top-5 hit).

    logits (N, C); targets (N,) or one int. Only the first `classes` logits compete: InceptionV1 has
    1008 logits for 1000 named classes, and an unnamed one must not push the target out of the top 5.
    Works on numpy (host) and jax (traced) arrays alike."""
    xp = jnp if isinstance(logits, jax.Array) else np
    logits = logits[:, :classes] if classes else logits
    targets = xp.broadcast_to(xp.asarray(targets), (logits.shape[0],)).astype(xp.int32)
    own = xp.take_along_axis(logits, targets[:, None], axis=-1)
    return xp.sum(logits > own, axis=-1)
