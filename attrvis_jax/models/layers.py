"""Building blocks shared by the architectures: convolutions with explicit padding conventions,
inference-mode batch norm, max pools in TF-SAME and torch ceil-mode flavours, TF's LRN.

Padding is spelled out because parity depends on it: TF "SAME" pads the extra pixel at the end
(bottom/right), torch pads symmetrically, and torch's ceil-mode pools add a partial last window.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Padding = str | Sequence[tuple[int, int]]


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding for one spatial dim: the odd pixel goes at the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv(
    features: int,
    kernel: int,
    stride: int = 1,
    padding: Padding | int = "SAME",
    groups: int = 1,
    use_bias: bool = True,
    name: str | None = None,
) -> nn.Conv:
    """A Flax conv, NHWC, kernel HWIO (torch OIHW weights are transposed on import).

    padding: "SAME" (TF: the odd pixel at the end), "VALID", or an int p for torch's symmetric p.
    """
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    return nn.Conv(
        features, (kernel, kernel), strides=(stride, stride), padding=padding,
        feature_group_count=groups, use_bias=use_bias, name=name,
    )


class DepthwiseConv(nn.Module):
    """Depthwise k×k convolution with TF "SAME" padding, as a sum of k² shifted, scaled copies.

    Same parameter as a grouped `nn.Conv` (kernel (k, k, 1, C), so weights load unchanged), but XLA:CPU
    runs grouped convolutions slowly: at 8×112×112×96, 3×3/2 the forward took 112 ms as a grouped
    conv and 36 ms as shifted sums, the input gradient 1.6 s vs 80 ms (benchmarks/README.md). The
    sum of shifted slices fuses into one elementwise loop and its gradient is just as simple.
    """

    kernel_size: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        k, s = self.kernel_size, self.stride
        channels = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, channels), jnp.float32)
        (top, bottom), (left, right) = (tf_same_pads(n, k, s) for n in x.shape[1:3])
        out_h, out_w = -(-x.shape[1] // s), -(-x.shape[2] // s)
        xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        out = None
        for i in range(k):
            for j in range(k):
                tap = xp[:, i : i + s * (out_h - 1) + 1 : s, j : j + s * (out_w - 1) + 1 : s, :] * kernel[i, j, 0]
                out = tap if out is None else out + tap
        return out


def batch_norm(epsilon: float = 1e-5, name: str | None = None) -> nn.BatchNorm:
    """Inference-mode batch norm (running statistics live in the "batch_stats" collection)."""
    return nn.BatchNorm(use_running_average=True, epsilon=epsilon, name=name)


def max_pool(x, kernel: int, stride: int, padding: Padding | int = "VALID", ceil_mode: bool = False):
    """Max pool, NHWC; every model's pools go through here (one place to optimize).

    padding: "SAME" (TF), "VALID", explicit ((top, bottom), (left, right)) pairs, or an int p for
    torch's symmetric padding. Padding is -inf, so it never wins. ceil_mode adds torch's partial
    last window (never one that starts in the right padding).
    """
    if isinstance(padding, str):
        pads = [tf_same_pads(n, kernel, stride) if padding == "SAME" else (0, 0) for n in x.shape[1:3]]
        if padding == "VALID" and ceil_mode:
            padding = 0
    if isinstance(padding, int) or ceil_mode:
        p = int(padding)
        pads = []
        for size in x.shape[1:3]:
            if ceil_mode:
                out = math.ceil((size + 2 * p - kernel) / stride) + 1
                if (out - 1) * stride >= size + p:  # last window would start in the padding
                    out -= 1
            else:
                out = (size + 2 * p - kernel) // stride + 1
            pads.append((p, max((out - 1) * stride + kernel - size - p, 0)))
    elif not isinstance(padding, str):
        pads = [tuple(pair) for pair in padding]
    return _max_pool_taps(x, kernel, stride, tuple(tuple(int(v) for v in pair) for pair in pads))


def _pool_out(size: int, pad: tuple[int, int], kernel: int, stride: int) -> int:
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def _taps(xp, kernel: int, stride: int, oh: int, ow: int):
    return [xp[:, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride, :]
            for i in range(kernel) for j in range(kernel)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_taps(x, kernel: int, stride: int, pads):
    """Max over the k² strided slices of the -inf-padded input.

    Why not `reduce_window`: XLA:CPU differentiates it with select-and-scatter, which took 105 ms
    for a 3×3/2 pool on 8×112×112×64 where this took 12 ms (PERF-NOTES), with the same gradient:
    each window's gradient goes to its first maximal tap in row-major order, as select-and-scatter does.
    """
    return _max_pool_fwd(x, kernel, stride, pads)[0]


def _max_pool_fwd(x, kernel, stride, pads):
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
    oh, ow = (_pool_out(n, p, kernel, stride) for n, p in zip(x.shape[1:3], pads))
    taps = _taps(xp, kernel, stride, oh, ow)
    out = functools.reduce(jnp.maximum, taps)
    # Index of the first tap that attains the max (int8: at most 7×7 = 49 taps in these models).
    winner = jnp.full(out.shape, len(taps) - 1, jnp.int8)
    for t in range(len(taps) - 2, -1, -1):
        winner = jnp.where(taps[t] == out, jnp.int8(t), winner)
    return out, (winner, x.shape)


def _max_pool_bwd(kernel, stride, pads, residuals, g):
    winner, shape = residuals
    oh, ow = g.shape[1:3]
    padded = (shape[0], shape[1] + pads[0][0] + pads[0][1], shape[2] + pads[1][0] + pads[1][1], shape[3])
    # Each tap's share, spread back to its strided positions by interior padding (a pure
    # elementwise pattern that fuses; strided scatter-adds were several times slower on CPU).
    dxp = None
    zero = jnp.zeros((), g.dtype)
    for t in range(kernel * kernel):
        i, j = divmod(t, kernel)
        share = jnp.where(winner == t, g, zero)
        spread = jax.lax.pad(share, zero, (
            (0, 0, 0),
            (i, padded[1] - i - stride * (oh - 1) - 1, stride - 1),
            (j, padded[2] - j - stride * (ow - 1) - 1, stride - 1),
            (0, 0, 0),
        ))
        dxp = spread if dxp is None else dxp + spread
    return (dxp[:, pads[0][0] : pads[0][0] + shape[1], pads[1][0] : pads[1][0] + shape[2], :],)


_max_pool_taps.defvjp(_max_pool_fwd, _max_pool_bwd)


def local_response_norm(x, depth_radius: int, bias: float, alpha: float, beta: float):
    """tf.nn.local_response_normalization over the channel axis (NHWC).

    out = x / (bias + alpha * sum_{|d| <= depth_radius} x[..., c + d]^2) ** beta
    (TF's alpha multiplies the plain sum, unlike torch's LocalResponseNorm which divides by size.)
    """
    sq = jnp.square(x)
    window = 2 * depth_radius + 1
    summed = jax.lax.reduce_window(
        sq, 0.0, jax.lax.add, (1, 1, 1, window), (1, 1, 1, 1),
        ((0, 0), (0, 0), (0, 0), (depth_radius, depth_radius)),
    )
    return x / jnp.power(bias + alpha * summed, beta)


def relu6(x):
    return jnp.clip(x, 0.0, 6.0)


def global_avg_pool(x):
    return jnp.mean(x, axis=(1, 2))
