"""Depthwise convolution on XLA:CPU: grouped `conv_general_dilated` vs `layers.DepthwiseConv`
(a sum of k² shifted, scaled slices). Forward and input gradient, batch 8, EfficientNet-Lite shapes.

    python benchmarks/archive/depthwise.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax.models.layers import DepthwiseConv

SHAPES = [(112, 96, 3, 2), (56, 144, 3, 1), (28, 240, 5, 1), (14, 480, 3, 1), (14, 672, 5, 1)]


def median_ms(fn, *args, repeats: int) -> float:
    fn = jax.jit(fn)
    fn(*args).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    print(f"# {jax.devices()[0].device_kind}, jax {jax.__version__}, batch {args.batch}, medians of {args.repeats}")
    print("| H×W×C, k/s | grouped fwd ms | shifted fwd ms | grouped grad ms | shifted grad ms |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for h, c, k, s in SHAPES:
        x = jnp.asarray(rng.random((args.batch, h, h, c)), jnp.float32)
        layer = DepthwiseConv(k, s)
        params = layer.init(jax.random.PRNGKey(0), x)
        w = params["params"]["kernel"]

        def grouped(x, w=w, s=s, c=c):
            return jax.lax.conv_general_dilated(x, w, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                feature_group_count=c)

        def shifted(x):
            return layer.apply(params, x)

        grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) ** 2))  # noqa: E731
        row = [median_ms(f, x, repeats=args.repeats) for f in (grouped, shifted, grad(grouped), grad(shifted))]
        print(f"| {h}×{h}×{c}, {k}/{s} | " + " | ".join(f"{v:.1f}" for v in row) + " |", flush=True)


if __name__ == "__main__":
    main()
