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


def nchw_to_nhwc(t) -> np.ndarray:
    """A torch activation (N, C, H, W) or logits (N, K) as a numpy array in our layout."""
    a = t.detach().cpu().numpy()
    return np.transpose(a, (0, 2, 3, 1)) if a.ndim == 4 else a
