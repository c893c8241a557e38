"""How much memory a render needs, estimated before anything is compiled, and how much there is.

`render_bytes` is a floor, not a forecast: it traces the network up to the layer for one image
(`jax.make_jaxpr`, nothing compiled or run, well under a second) and adds up the outputs of its
convolutions and matrix products — the activations reverse mode has to keep for each seed — plus
each seed's image parameters and their two Adam moments (RGBA, float32). All seeds of a render are
one batch, so the floor grows linearly with them. XLA needs more than this (its temporaries, the
perturbation pyramid, the compiled code), so a render refused here could never have run, and one
that passes can still run short on a machine that is nearly full.
"""

from __future__ import annotations

import os

import numpy as np

from attrvis_jax.errors import AttrvisError

_KEPT = ("conv_general_dilated", "dot_general")


def _kept_bytes(jaxpr, live_only: bool = True) -> int:
    """Bytes of the convolution / matmul outputs; at the top level only of equations an output
    needs (what XLA keeps once it drops dead code: a wrapped network's features trace the whole
    forward pass, models/external.py)."""
    from attrvis_jax.jaxprs import liveness

    live = liveness(jaxpr)[0] if live_only else [True] * len(jaxpr.eqns)
    total = 0
    for eqn, alive in zip(jaxpr.eqns, live):
        if not alive:
            continue
        if eqn.primitive.name in _KEPT:
            aval = eqn.outvars[0].aval
            total += int(np.prod(aval.shape)) * aval.dtype.itemsize
        for param in eqn.params.values():  # sub-computations (pjit, remat, scan bodies)
            inner = getattr(param, "jaxpr", None)
            if inner is not None:
                total += _kept_bytes(getattr(inner, "jaxpr", inner), live_only=False)
    return total


def activation_bytes(model, layer: str, size: int) -> int:
    """Bytes of the convolution / matmul outputs of one `size`×`size` image up to `layer`."""
    import jax
    import jax.numpy as jnp

    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    closed = jax.make_jaxpr(lambda v, x: model.apply_features(v, x, layer))(model.variables, x)
    return _kept_bytes(closed.jaxpr)


def render_bytes(model, layer: str, seeds: int, size: int) -> tuple[int, int]:
    """(total, per seed): the floor of a `seeds`-seed render's memory (module docstring)."""
    per_seed = activation_bytes(model, layer, size) + 3 * 4 * size * size * 4
    return seeds * per_seed, per_seed


def available_bytes() -> int | None:
    """Free memory of the default device: an accelerator's own (when it reports it), else the host's
    MemAvailable (/proc/meminfo), else its physical pages; None if nothing tells."""
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        try:
            stats = device.memory_stats() or {}
        except Exception:  # noqa: BLE001 - a backend without statistics
            stats = {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return host_available_bytes()


def host_available_bytes() -> int | None:
    """Free memory of the host: MemAvailable (/proc/meminfo), else its physical pages; None if
    nothing tells."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def check_render_memory(model, layer: str, seeds: int, size: int, available: int | None = None,
                        what: str = "seeds") -> None:
    """Refuse a render of `seeds` images at once whose memory floor exceeds what is free, naming the
    estimate and what to lower (`what`: the setting that sets the batch, seeds or a sweep's batch)."""
    available = available_bytes() if available is None else available
    if available is None:
        return
    total, per_seed = render_bytes(model, layer, seeds, size)
    if total <= available:
        return
    fits = available // per_seed
    lower = (f"lower {what} to at most {fits}" if fits >= 1 else
             "even one seed does not fit: choose an earlier layer or a smaller image")
    raise AttrvisError(f"{what} {seeds}: {seeds} renders of {model.name}:{layer} at {size}x{size} at once need "
                       f"at least {_gb(total)} ({_gb(per_seed)} each), more than the {_gb(available)} available; "
                       f"{lower}")
