"""Shared helpers of the parity tests (ours vs the source framework on the same weights)."""

from __future__ import annotations

import numpy as np

# float32 tolerance the issue asks for: max |ours - ref| relative to the reference's max |value|.
RTOL = 1e-4


def rel_error(ours, ref) -> tuple[float, float]:
    """(max abs error, max abs error / max |ref|) of two arrays of the same shape."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"shape {ours.shape} != reference {ref.shape}"
    abs_err = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return abs_err, abs_err / max(scale, 1e-12)


def assert_close(name: str, ours, ref, rtol: float = RTOL) -> tuple[float, float]:
    abs_err, rel = rel_error(ours, ref)
    assert rel <= rtol, f"{name}: max abs error {abs_err:.3g}, relative {rel:.3g} > {rtol:g}"
    return abs_err, rel


def assert_close_up_to_ties(name: str, ours, ref, rtol: float = RTOL, max_fraction: float = 0.01,
                            l2_rtol: float = 5e-3) -> tuple[float, float]:
    """A gradient through max pools, where float32 near-ties can route an element's gradient to
    another input than the reference does (which way a tie falls depends on the CPU's arithmetic:
    AVX2 and AVX-512 differ in the last bits). Passes when the two agree to `rtol` everywhere, or,
    failing that, when at most `max_fraction` of the elements differ by more than rtol·max|ref| and
    the whole arrays agree to `l2_rtol` in relative L2 norm: a re-routed tie moves a few elements,
    while a wrong gradient (LRN, a convolution, a pool) moves all of them. Returns (max abs error,
    relative L2 error)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    abs_err, rel = rel_error(ours, ref)
    err = np.abs(ours - ref)
    l2 = float(np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-300))
    if rel <= rtol:
        return abs_err, l2
    off = float(np.mean(err > rtol * np.max(np.abs(ref))))
    assert off <= max_fraction and l2 <= l2_rtol, (
        f"{name}: {off:.2%} of the elements differ by more than {rtol:g}·max|ref| (at most {max_fraction:.0%} "
        f"may, through re-routed near-ties), relative L2 error {l2:.3g} (at most {l2_rtol:g})")
    return abs_err, l2


def nchw_to_nhwc(t) -> np.ndarray:
    """A torch activation (N, C, H, W) or logits (N, K) as a numpy array in our layout."""
    a = t.detach().cpu().numpy()
    return np.transpose(a, (0, 2, 3, 1)) if a.ndim == 4 else a
