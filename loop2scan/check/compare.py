"""Tolerances and the comparison of two arrays, shared by the ``--check``
backends (NumPy only: a backend brings its values to the host first)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

# (rtol, atol) per floating dtype; integers and booleans must be equal.
DEFAULT_TOLERANCES = {
    "float64": (1e-9, 1e-12),
    "float32": (1e-4, 1e-5),
    "float16": (1e-2, 1e-2),
    "bfloat16": (2e-2, 2e-2),
    "complex64": (1e-4, 1e-5),
    "complex128": (1e-9, 1e-12),
}
GRADIENT_FACTOR = 10.0  # gradients accumulate more rounding than outputs


@dataclass
class Tolerances:
    rtol: Optional[float] = None
    atol: Optional[float] = None
    factor: float = 1.0

    def for_dtype(self, dtype) -> tuple[float, float]:
        rtol, atol = DEFAULT_TOLERANCES.get(str(dtype), (1e-4, 1e-5))
        rtol = self.rtol if self.rtol is not None else rtol * self.factor
        atol = self.atol if self.atol is not None else atol * self.factor
        return rtol, atol

    def gradients(self) -> "Tolerances":
        return Tolerances(self.rtol, self.atol, GRADIENT_FACTOR)


def compare_arrays(name: str, x: np.ndarray, y: np.ndarray, tol: Tolerances, stats: dict,
                   differences: list[str], dtype: Optional[str] = None) -> None:
    """Compare two host arrays: shape and dtype, integers and booleans exactly,
    floating values within the tolerances of their dtype.  ``dtype`` names the
    dtype the values had on the device when the host array is wider (bfloat16
    brought back as float32).  Updates ``stats`` (``max_abs``, ``max_rel``) and
    appends to ``differences``."""
    dtype = dtype or str(x.dtype)
    if not np.issubdtype(x.dtype, np.inexact):
        if not np.array_equal(x, y):
            differences.append(f"{name}: values differ ({int(np.sum(x != y))} of {x.size} elements)")
        return
    x64 = x.astype(np.float64) if x.dtype != np.complex128 else x
    y64 = y.astype(np.float64) if y.dtype != np.complex128 else y
    if x.size == 0:
        return
    err = np.abs(x64 - y64)
    finite = np.isfinite(x64) & np.isfinite(y64)
    if not np.array_equal(np.isfinite(x64), np.isfinite(y64)) or not np.array_equal(np.isnan(x64), np.isnan(y64)):
        differences.append(f"{name}: non-finite values differ")
        return
    err = np.where(finite, err, 0.0)
    rel = err / np.maximum(np.abs(x64), np.finfo(np.float64).tiny)
    stats["max_abs"] = max(stats["max_abs"], float(err.max()))
    stats["max_rel"] = max(stats["max_rel"], float(np.where(np.abs(x64) > 0, rel, 0).max()))
    rtol, atol = tol.for_dtype(dtype)
    bad = err > atol + rtol * np.abs(x64)
    if bad.any():
        i = np.unravel_index(int(np.argmax(np.where(bad, err, -1))), x.shape) if x.ndim else ()
        differences.append(f"{name}: max abs error {float(err.max()):.3g} exceeds rtol={rtol:g}, "
                           f"atol={atol:g} (at index {tuple(int(j) for j in i)}: {x64[i]!r} before, "
                           f"{y64[i]!r} after)")


def aval(shape, dtype) -> str:
    """``float32[3,4]``."""
    return f"{dtype}[{','.join(str(d) for d in shape)}]"
