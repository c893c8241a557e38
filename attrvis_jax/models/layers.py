"""Building blocks shared by the architectures: convolutions with explicit padding conventions
(and an input gradient XLA:CPU keeps fast inside loops), inference-mode batch norm, max pools in
TF-SAME and torch ceil-mode flavours, TF's LRN.

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


# ---- which kernels: the XLA:CPU rewrites or plain lax, per backend --------------------------------
# Three layers have two implementations with the same values: the plain `lax` op, and a rewrite
# chosen because XLA:CPU runs the plain op (or its gradient) slowly:
#   conv_gradient  convolutions whose input/kernel gradients stay canonical inside loops (below)
#   depthwise      depthwise convolutions as a sum of k² shifted, scaled copies (DepthwiseConv)
#   max_pool       max pools as the max of strided slices (rows, then columns), with a scatter-free gradient
# A network's `kernels` field names which to use: "auto" (what AUTO_REWRITES lists for the backend
# jax traces for, read at trace time), "lax" (none), "all", or names joined by "+"
# ("depthwise+max_pool"). Being a field, the choice is part of the network's hash, so compiled
# programs and caches keyed on the network keep the variants apart.
REWRITES = ("conv_gradient", "depthwise", "max_pool")
# Measured per backend in benchmarks/README.md, "Kernels per backend". A backend not listed (GPU,
# TPU: no accelerator has measured them yet; benchmarks/device.py does) gets plain lax, the ops
# those compilers are built around.
AUTO_REWRITES: dict[str, frozenset[str]] = {"cpu": frozenset(REWRITES)}


def check_kernels(kernels: str) -> str:
    """`kernels` if it names a valid choice, else a ValueError that lists the choices."""
    if kernels in ("auto", "lax", "all"):
        return kernels
    names = kernels.split("+") if isinstance(kernels, str) else [None]
    if not all(name in REWRITES for name in names):
        raise ValueError(f"kernels must be 'auto', 'lax', 'all' or rewrites joined by '+' from "
                         f"{', '.join(REWRITES)}; got {kernels!r}")
    return kernels


def rewrites(kernels: str = "auto", backend: str | None = None) -> frozenset[str]:
    """The rewrites `kernels` selects; "auto" looks up `backend` (default: `jax.default_backend()`)."""
    kernels = check_kernels(kernels)
    if kernels == "auto":
        return AUTO_REWRITES.get(backend or jax.default_backend(), frozenset())
    if kernels == "lax":
        return frozenset()
    return frozenset(REWRITES) if kernels == "all" else frozenset(kernels.split("+"))


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
    kernels: str = "auto",
) -> nn.Conv:
    """A Flax conv, NHWC, kernel HWIO (torch OIHW weights are transposed on import).

    padding: "SAME" (TF: the odd pixel at the end), "VALID", or an int p for torch's symmetric p.
    kernels: with the `conv_gradient` rewrite (see `rewrites`; on CPU by default) the convolution
    is `conv_general_dilated` below (same values, an input gradient that stays fast inside XLA:CPU
    loops); without it `jax.lax.conv_general_dilated` and JAX's own gradient. Call it where the
    network is traced (a Flax `setup` or compact method), so "auto" sees the backend in use.
    """
    canonical_gradient = "conv_gradient" in rewrites(kernels)
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    return nn.Conv(
        features, (kernel, kernel), strides=(stride, stride), padding=padding,
        feature_group_count=groups, use_bias=use_bias, name=name,
        conv_general_dilated_cls=_conv_function if canonical_gradient else None,
    )


# ---- convolution with a canonical input gradient ------------------------------------------------
# JAX writes a convolution's input gradient as a convolution whose kernel keeps its HWIO layout with
# in/out swapped in the dimension numbers (HLO dim_labels `01oi`). XLA:CPU transposes such a kernel
# to its canonical layout only in the entry computation: inside a `scan`/`while` body or a `cond`
# branch the convolution stays `01oi`, YNNPACK does not take it, and it runs several times slower,
# which made the scan render engine slower than a Python loop of steps (measured in
# benchmarks/archive/README.md, scan_vs_loop.py).
# Below, the input gradient flips and transposes the kernel explicitly instead, so it is an ordinary
# NHWC/HWIO convolution wherever it is traced (the kernel gradient likewise). Same arithmetic.

_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
    """`jax.lax.conv_general_dilated` with canonical input and kernel gradients for 2-D NHWC/HWIO
    convolutions (strides, SAME/VALID/explicit padding, kernel dilation, feature groups); other
    cases (input dilation, batch groups, other layouts) are passed to lax unchanged."""
    ndim = jnp.ndim(lhs)
    strides = tuple(int(s) for s in window_strides)
    dilation = tuple(int(d) for d in (rhs_dilation or (1,) * (ndim - 2)))
    if not (ndim == 4 and dimension_numbers is not None
            and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
            == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
            and all(d == 1 for d in (lhs_dilation or (1, 1))) and batch_group_count == 1
            and preferred_element_type is None):
        return jax.lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)
    if isinstance(padding, str):
        dilated = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], dilation)]
        padding = jax.lax.padtype_to_pads(lhs.shape[1:3], dilated, strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv_nhwc(lhs, rhs, strides, pads, dilation, int(feature_group_count), precision)


def _conv_lax(x, w, strides, pads, dilation, groups, precision):
    return jax.lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dilation, dimension_numbers=_NHWC,
                                        feature_group_count=groups, precision=precision)


_conv_nhwc = jax.custom_vjp(_conv_lax, nondiff_argnums=(2, 3, 4, 5, 6))


def _conv_nhwc_fwd(x, w, strides, pads, dilation, groups, precision):
    return _conv_lax(x, w, strides, pads, dilation, groups, precision), (x, w)


def _conv_nhwc_bwd(strides, pads, dilation, groups, precision, residuals, g):
    x, w = residuals
    kh, kw, cin_per_group, cout = w.shape
    # Per spatial dim: input size, kernel span (dilated), stride, forward low pad, output size.
    dims = [(n, (k - 1) * d + 1, s, lo, m)
            for n, k, d, s, (lo, _), m in zip(x.shape[1:3], (kh, kw), dilation, strides, pads, g.shape[1:3])]
    # Input gradient: the cotangent, dilated by the stride and padded so the result has the input's
    # size, convolved with the kernel flipped and with in/out swapped within each feature group.
    w_t = jnp.flip(w, (0, 1)).reshape(kh, kw, cin_per_group, groups, cout // groups)
    w_t = w_t.transpose(0, 1, 4, 3, 2).reshape(kh, kw, cout // groups, groups * cin_per_group)
    pads_x = [(span - 1 - lo, n - (m - 1) * s - 1 + lo) for n, span, s, lo, m in dims]
    dx = jax.lax.conv_general_dilated(g, w_t, (1, 1), pads_x, lhs_dilation=strides, rhs_dilation=dilation,
                                      dimension_numbers=_NHWC, feature_group_count=groups, precision=precision)
    # Kernel gradient (JAX's rule is non-canonical inside loops too, `f01b_i01o`): the input with
    # batch and channels swapped, (C, H, W, N), convolved with the cotangent as an HWIO kernel
    # (oh, ow, N, C_out) dilated by the stride; feature groups become batch groups.
    pads_w = [(lo, span + (m - 1) * s - n - lo) for n, span, s, lo, m in dims]
    dw = jax.lax.conv_general_dilated(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), dilation, pads_w,
                                      rhs_dilation=strides, dimension_numbers=_NHWC, batch_group_count=groups,
                                      precision=precision)
    return dx, dw.transpose(1, 2, 0, 3)


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def _conv_function():
    """nn.Conv's `conv_general_dilated_cls` hook: called without arguments, returns the convolution."""
    return conv_general_dilated


class DepthwiseConv(nn.Module):
    """Depthwise k×k convolution with TF "SAME" padding; with the `depthwise` rewrite (on CPU by
    default, see `rewrites`) as a sum of k² shifted, scaled copies, else a grouped convolution.

    Same parameter as a grouped `nn.Conv` (kernel (k, k, 1, C), so weights load unchanged), but XLA:CPU
    runs grouped convolutions slowly, and their input gradient far more slowly (measured in
    benchmarks/archive/README.md, depthwise.py). The sum of shifted slices
    fuses into one elementwise loop and its gradient is just as simple.
    """

    kernel_size: int
    stride: int = 1
    kernels: str = "auto"  # without the `depthwise` rewrite: a grouped convolution (layers.conv's)

    @nn.compact
    def __call__(self, x):
        k, s = self.kernel_size, self.stride
        channels = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, channels), jnp.float32)
        (top, bottom), (left, right) = (tf_same_pads(n, k, s) for n in x.shape[1:3])
        chosen = rewrites(self.kernels)
        if "depthwise" not in chosen:
            convolve = conv_general_dilated if "conv_gradient" in chosen else jax.lax.conv_general_dilated
            return convolve(x, kernel, (s, s), ((top, bottom), (left, right)), dimension_numbers=_NHWC,
                            feature_group_count=channels)
        out_h, out_w = -(-x.shape[1] // s), -(-x.shape[2] // s)
        xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        out = None
        for i in range(k):
            for j in range(k):
                tap = xp[:, i : i + s * (out_h - 1) + 1 : s, j : j + s * (out_w - 1) + 1 : s, :] * kernel[i, j, 0]
                out = tap if out is None else out + tap
        return _cotangent_once(out, kernel)


@jax.custom_vjp
def _cotangent_once(x, anchor):
    """x itself; in the backward pass, x's cotangent is computed once and stored before the
    depthwise layer's backward reads it at k² shifted positions.

    Without this XLA:CPU fuses that cotangent (the next batch norm's scale × ReLU6's derivative ×
    the next convolution's input gradient) into the k² shifted reads, and with it the depthwise
    forward that ReLU6's derivative needs: k⁴ work per element, in the costliest fusions of
    EfficientNet-Lite's render step (the step 1.6× slower; benchmarks/README.md, "Seeds"). A
    while loop whose trip count XLA cannot know (1, from a weight of `anchor` divided by itself; 0
    for a zero or non-finite weight, when the loop does nothing) passes the cotangent through
    unchanged (times exactly 1), and a loop's input is always stored."""
    return x


def _cotangent_once_fwd(x, anchor):
    return x, anchor


def _cotangent_once_bwd(anchor, g):
    weight = anchor.reshape(-1)[0]
    one = weight / weight
    trips = (one == 1.0).astype(jnp.int32)
    return jax.lax.fori_loop(0, trips, lambda i, v: v * one, g), jnp.zeros_like(anchor)


_cotangent_once.defvjp(_cotangent_once_fwd, _cotangent_once_bwd)


def batch_norm(epsilon: float = 1e-5, name: str | None = None) -> nn.BatchNorm:
    """Inference-mode batch norm (running statistics live in the "batch_stats" collection)."""
    return nn.BatchNorm(use_running_average=True, epsilon=epsilon, name=name)


def max_pool(x, kernel: int, stride: int, padding: Padding | int = "VALID", ceil_mode: bool = False,
             kernels: str = "auto"):
    """Max pool, NHWC; every model's pools go through here (one place to optimize).

    padding: "SAME" (TF), "VALID", explicit ((top, bottom), (left, right)) pairs, or an int p for
    torch's symmetric padding. Padding is -inf, so it never wins. ceil_mode adds torch's partial
    last window (never one that starts in the right padding). kernels: with the `max_pool` rewrite
    (on CPU by default) the max of strided taps, else `lax.reduce_window` (see `rewrites`).
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
    pads = tuple(tuple(int(v) for v in pair) for pair in pads)
    if "max_pool" not in rewrites(kernels):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, kernel, kernel, 1), (1, stride, stride, 1),
                                     ((0, 0), *pads, (0, 0)))
    return _max_pool_taps(x, kernel, stride, pads)


def _pool_out(size: int, pad: tuple[int, int], kernel: int, stride: int) -> int:
    return (size + pad[0] + pad[1] - kernel) // stride + 1


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_taps(x, kernel: int, stride: int, pads):
    """Max over the k×k windows of the -inf-padded input, as two one-dimensional pools: the max of k
    strided slices along W, then of k along H (a k×k max is the max of its rows' maxes).

    Why not `reduce_window`: XLA:CPU differentiates it with select-and-scatter, which is several
    times slower (benchmarks/README.md, "Kernels per backend"), for the same gradient: each
    window's gradient goes to its first maximal tap in row-major order, as select-and-scatter does
    (the first row holding the window's max, and in it the first column holding its row's max).
    Why one dimension at a time: the gradient then spreads back from k taps twice instead of k²
    taps once, which XLA:CPU fuses into loops k/2 times cheaper per element; for the 3×3 stride-1
    pools of InceptionV1's mixed blocks the two-dimensional form was 15× slower.
    """
    return _max_pool_fwd(x, kernel, stride, pads)[0]


def _pool_1d(x, kernel: int, stride: int, pad: tuple[int, int], axis: int):
    """(max over k strided slices along `axis` of the -inf-padded x, index of the first maximal
    slice as int8)."""
    widths = [(0, 0)] * x.ndim
    widths[axis] = pad
    xp = jnp.pad(x, widths, constant_values=-jnp.inf)
    n = _pool_out(x.shape[axis], pad, kernel, stride)
    taps = [jax.lax.slice_in_dim(xp, i, i + stride * (n - 1) + 1, stride, axis) for i in range(kernel)]
    out = functools.reduce(jnp.maximum, taps)
    winner = jnp.full(out.shape, kernel - 1, jnp.int8)  # at most 7 taps in these models
    for t in range(kernel - 2, -1, -1):
        winner = jnp.where(taps[t] == out, jnp.int8(t), winner)
    return out, winner


def _spread_1d(g, winner, kernel: int, stride: int, pad: tuple[int, int], size: int, axis: int):
    """The gradient of `_pool_1d`: each output's cotangent back to its winning slice, spread to the
    slice's strided positions by interior padding (an elementwise pattern that fuses; strided
    scatter-adds were several times slower on CPU), the padding cut off."""
    n, padded = g.shape[axis], size + pad[0] + pad[1]
    zero = jnp.zeros((), g.dtype)
    total = None
    for t in range(kernel):
        widths = [(0, 0, 0)] * g.ndim
        widths[axis] = (t, padded - t - stride * (n - 1) - 1, stride - 1)
        spread = jax.lax.pad(jnp.where(winner == t, g, zero), zero, widths)
        total = spread if total is None else total + spread
    return jax.lax.slice_in_dim(total, pad[0], pad[0] + size, 1, axis)


def _max_pool_fwd(x, kernel, stride, pads):
    rows, across = _pool_1d(x, kernel, stride, pads[1], axis=2)  # each row's max over the window's columns
    out, down = _pool_1d(rows, kernel, stride, pads[0], axis=1)  # then the max of those over its rows
    return out, (across, down, x.shape)


def _max_pool_bwd(kernel, stride, pads, residuals, g):
    across, down, shape = residuals
    d_rows = _spread_1d(g, down, kernel, stride, pads[0], shape[1], axis=1)
    return (_spread_1d(d_rows, across, kernel, stride, pads[1], shape[2], axis=2),)


_max_pool_taps.defvjp(_max_pool_fwd, _max_pool_bwd)


def local_response_norm(x, depth_radius: int, bias: float, alpha: float, beta: float):
    """tf.nn.local_response_normalization over the channel axis (NHWC).

    out = x / (bias + alpha * sum_{|d| <= depth_radius} x[..., c + d]^2) ** beta
    (TF's alpha multiplies the plain sum, unlike torch's LocalResponseNorm which divides by size.)
    β = 0.5 (InceptionV1's) is computed as x · rsqrt(·): XLA does not rewrite `pow(·, 0.5)`, and on
    XLA:CPU the power and its derivative (another power) were InceptionV1's largest elementwise ops
    in the render step (benchmarks/archive/README.md, small_ops.py); the values agree to an ulp.
    """
    sq = jnp.square(x)
    window = 2 * depth_radius + 1
    summed = jax.lax.reduce_window(
        sq, 0.0, jax.lax.add, (1, 1, 1, window), (1, 1, 1, 1),
        ((0, 0), (0, 0), (0, 0), (depth_radius, depth_radius)),
    )
    scale = bias + alpha * summed
    if beta == 0.5:
        return x * jax.lax.rsqrt(scale)
    return x / jnp.power(scale, beta)


@jax.custom_jvp
def relu6(x):
    """min(max(x, 0), 6), with torch's derivative: 1 strictly inside (0, 6), else 0.

    `jnp.clip`'s own derivative splits ties at the bounds (½ where x is exactly 0 or 6: compares,
    selects and a divide per element); XLA:CPU recomputes that inside the depthwise layers' backward
    fusions once per tap, where it was the costliest elementwise work of Lite0's head
    (benchmarks/archive/README.md, small_ops.py).
    """
    return jnp.clip(x, 0.0, 6.0)


@relu6.defjvp
def _relu6_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return jnp.clip(x, 0.0, 6.0), jnp.where((x > 0.0) & (x < 6.0), t, jnp.zeros_like(t))


def global_avg_pool(x):
    return jnp.mean(x, axis=(1, 2))
