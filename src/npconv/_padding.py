"""Padding of the convolution input and its adjoint.

Every padding mode is "pad, then run a valid convolution" (as PyTorch's
``_ConvNd`` does). The pad is a linear map ``xp = P x`` that copies each
input element to one or more padded positions; its adjoint ``Pᵀ`` sums the
gradient of every padded position back onto the input element it was read
from. That is how reflect/replicate/circular pads receive gradient.

Padded position ``j`` along one axis of size ``S`` with ``lo`` elements of
padding in front reads input index ``i = j - lo`` mapped into range:

* zeros:     outside ``[0, S)`` reads nothing (the value is 0),
* reflect:   ``-i`` below 0, ``2(S-1) - i`` above ``S-1`` (edge not repeated),
* replicate: ``clip(i, 0, S-1)``,
* circular:  ``i mod S``.
"""
from __future__ import annotations

import numpy as np

# np.pad's names for PyTorch's padding modes (same index maps as above).
_NUMPY_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad(x: np.ndarray, pads, mode: str = "zeros") -> np.ndarray:
    """Pad the spatial dims of ``x (N, C, *S)`` to ``(N, C, *(S + lo + hi))``.

    Returns ``x`` itself (no copy) when every pad is 0.
    """
    if not any(lo or hi for lo, hi in pads):
        return x
    width = ((0, 0), (0, 0)) + tuple(pads)
    if mode == "zeros":
        padded = np.zeros(x.shape[:2] + tuple(s + lo + hi for s, (lo, hi) in zip(x.shape[2:], pads)),
                          dtype=x.dtype)
        padded[_interior(pads, x.shape[2:])] = x
        return padded
    return np.pad(x, width, mode=_NUMPY_MODE[mode])


def pad_adjoint(dxp: np.ndarray, pads, mode: str, in_size) -> np.ndarray:
    """Adjoint of ``pad``: ``(N, C, *P) -> (N, C, *S)``, pad gradients summed back."""
    if not any(lo or hi for lo, hi in pads):
        return dxp
    dx = dxp
    if mode != "zeros":
        # The per-axis index maps act on different axes, so they commute and the
        # adjoint of the whole pad is the product of the per-axis adjoints.
        for axis, ((lo, hi), size) in enumerate(zip(pads, in_size), start=2):
            dx = _axis_adjoint(dx, axis, lo, hi, size, mode)
        return dx
    return np.ascontiguousarray(dx[_interior(pads, in_size)])


def _interior(pads, in_size):
    return (slice(None), slice(None)) + tuple(slice(lo, lo + s) for (lo, _), s in zip(pads, in_size))


def _source_index(positions: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Input index read by unpadded positions ``i`` (may be < 0 or >= size)."""
    if mode == "reflect":
        return np.where(positions < 0, -positions, np.where(positions >= size, 2 * (size - 1) - positions, positions))
    if mode == "replicate":
        return np.clip(positions, 0, size - 1)
    return np.mod(positions, size)  # circular


def _axis_adjoint(dxp: np.ndarray, axis: int, lo: int, hi: int, size: int, mode: str) -> np.ndarray:
    """Sum the ``lo`` and ``hi`` pad regions of one axis back onto the interior."""
    moved = np.moveaxis(dxp, axis, 0)                      # (P_axis, ...)
    grad = moved[lo:lo + size].copy()                      # (S_axis, ...)
    for region, positions in ((moved[:lo], np.arange(-lo, 0)),
                              (moved[lo + size:], np.arange(size, size + hi))):
        if len(positions):
            # add.at, because replicate maps a whole region onto one index.
            np.add.at(grad, _source_index(positions, size, mode), region)
    return np.moveaxis(grad, 0, axis)
