"""Devices: a 1-D mesh over every device, host arrays placed on it, results gathered back.

The render kernel (`render.visualize_rows`) splits its rows over `device_mesh()`'s "batch" axis and
replicates the network's variables; on several hosts every process passes the same full arrays
and keeps its own shards (`jax.make_array_from_callback`), so `shard` is also the multi-host input
path, and `gather` the way back.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"


# What jax.distributed.initialize reads the coordinator, process count and id from (or its kwargs).
CLUSTERS = ("SLURM (srun)", "Open MPI (mpirun)", "Kubernetes", "a Cloud TPU pod",
            "JAX_COORDINATOR_ADDRESS with num_processes and process_id")


def init_distributed(**kwargs) -> None:
    """Join a multi-host run (coordinator, process count and id from the cluster environment or
    `kwargs`); call before anything else touches JAX. A single process needs nothing. No cluster,
    or one that cannot be joined, is one AttrvisError."""
    from attrvis_jax.errors import AttrvisError

    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, TypeError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        lead = "no cluster found" if isinstance(e, ValueError) else "cannot join the cluster"
        raise AttrvisError(f"--distributed: {lead} (jax.distributed.initialize: {reason}); it looks for "
                           f"{', '.join(CLUSTERS[:-1])}, or {CLUSTERS[-1]}; on one host, leave --distributed out"
                           ) from None


def agree(ok: bool) -> bool:
    """Process 0's `ok`, on every process: when process 0 refuses (it alone writes files), the
    others stop too instead of waiting for it. One process: `ok`."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


def device_mesh(devices: Sequence | None = None) -> Mesh:
    """A 1-D mesh over every device (of every host), axis name "batch"."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), (AXIS,))


def shard(tree, mesh: Mesh, batched: bool = True):
    """Put host arrays on the mesh: split along axis 0 (batched) or replicated. Every process passes
    the same full arrays and keeps only its own shards, so this is also the multi-host input path.
    Arrays already placed this way pass through unchanged."""
    sharding = NamedSharding(mesh, PartitionSpec(AXIS) if batched else PartitionSpec())

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        arr = np.asarray(x)
        return jax.make_array_from_callback(arr.shape, sharding, lambda index: arr[index])

    return jax.tree_util.tree_map(put, tree)


def gather(x) -> np.ndarray:
    """A (possibly sharded, possibly multi-host) array as one host numpy array."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def batch_width(batch: int, rows: int, mesh: Mesh) -> int:
    """Rows per compiled batch: `batch`, but no wider than the `rows` there are to run, rounded up
    to a multiple of the mesh's devices (every batch has this one shape: one compilation)."""
    return -(-min(batch, max(1, rows)) // mesh.size) * mesh.size


def rows_per_memory(width: int, mesh: Mesh) -> int:
    """How many of a batch's rows one memory holds at once: all of them where the devices are the
    host's CPUs (one memory), one device's shard on accelerators."""
    return width if mesh.devices.flat[0].platform == "cpu" else width // mesh.size


def fixed_batches(fn, *arrays, width: int):
    """fn over batches of exactly `width` rows of `arrays` (each zero-padded at the end), its
    outputs (an array or a tuple of arrays) concatenated with the padding dropped: one compile of a
    jitted fn, whatever the row count."""
    n = len(arrays[0])
    parts = []
    for start in range(0, n, width):
        chunks = [np.asarray(a[start : start + width]) for a in arrays]
        real = len(chunks[0])
        chunks = [np.concatenate([c, np.zeros((width - real, *c.shape[1:]), c.dtype)]) for c in chunks]
        out = fn(*(jax.numpy.asarray(c) for c in chunks))
        parts.append([np.asarray(o)[:real] for o in (out if isinstance(out, tuple) else (out,))])
    joined = tuple(np.concatenate(column) for column in zip(*parts))
    return joined[0] if len(joined) == 1 else joined


def padded(items: Sequence, width: int):
    """(the real items, the batch padded to `width` with copies of the last) for each batch of `items`."""
    for start in range(0, len(items), width):
        real = list(items[start : start + width])
        yield real, real + [real[-1]] * (width - len(real))
