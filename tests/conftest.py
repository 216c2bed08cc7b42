"""Shared fixtures for the npconv test suite.

* ``torch``: PyTorch as a test oracle (the test is skipped when it is absent),
  with float64 as its default dtype during the test, so every comparison is
  made in float64 unless a test asks for float32 explicitly. Function-scoped:
  hypothesis tests using it suppress ``HealthCheck.function_scoped_fixture``
  (the fixture holds no per-example state).
* ``numerical_grad``: central finite differences of a scalar function.
* ``assert_close``: float64 comparison relative to the scale of the expected
  array (an element can cancel to ~0 while its rounding error is set by the
  size of the terms summed, so a purely elementwise rtol would be wrong).
* ``rng``: a seeded generator, fresh per test, so every test is reproducible.
"""
from __future__ import annotations

import numpy as np
import pytest

# torch_twins.py is a helper module that imports torch: not a test module, and not
# importable (for --doctest-modules) where torch is absent.
collect_ignore = ["torch_twins.py"]


@pytest.fixture
def torch():
    """PyTorch with float64 as default dtype for this test only (restored afterwards, so
    tests that import torch themselves see its usual float32 default in any order)."""
    torch = pytest.importorskip("torch")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(previous)


def _numerical_grad(f, x: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Central differences (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) for every element i.

    ``f`` maps a float64 array of ``x``'s shape to a float; ``x`` is not modified.
    For the (bi)linear maps tested here the central difference has no
    truncation error, only rounding error ~ eps_machine * |f| / eps. The loop is
    ``npconv.testing``'s (the one behind ``gradcheck``), on a private copy of ``x``.
    """
    from npconv.testing import _numerical

    x = np.array(x, dtype=np.float64)  # private copy we may perturb
    return _numerical(lambda: f(x), x, eps)


@pytest.fixture(scope="session")
def numerical_grad():
    return _numerical_grad


def _assert_close(actual, expected, rtol: float = 1e-12, scale: float | None = None,
                  err_msg: str = ""):
    """Shapes equal and |actual - expected| <= rtol * scale elementwise.

    ``scale`` defaults to max(|expected|) (at least 1e-300 so all-zero results
    must match exactly up to denormals).
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape} {err_msg}"
    if scale is None:
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * max(scale, 1e-300),
                               err_msg=err_msg)


@pytest.fixture(scope="session")
def assert_close():
    return _assert_close


@pytest.fixture
def rng(request):
    # Seed from the test id so parametrised cases differ but every run repeats.
    seed = sum(ord(ch) * (i + 1) for i, ch in enumerate(request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)


def _kernel_matches_torch(torch, x, w, algorithm: str, *, stride=1, padding=0, dilation=1,
                          groups=1, mode="zeros", limit=None, dx_only=False):
    """``conv`` and ``conv_grad`` with ``algorithm`` (under workspace ``limit``, if given)
    against torch autograd in float64, within 1e-12 of each result's scale. ``padding``
    is one int for every side or one ``(lo, hi)`` pair per dim (torch pads with ``F.pad``
    in ``mode``)."""
    import npconv
    from npconv import _args, convolution

    d = x.ndim - 2
    F = torch.nn.functional
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    pairs = ((padding, padding),) * d if isinstance(padding, int) else padding
    torch_pads = tuple(p for pair in reversed(pairs) for p in pair)     # F.pad: last dim first
    xp = F.pad(xt, torch_pads, mode="constant" if mode == "zeros" else mode)
    yt = getattr(F, f"conv{d}d")(xp, wt, stride=stride, dilation=dilation, groups=groups)
    dy = np.random.default_rng(0).standard_normal(tuple(yt.shape))
    (yt * torch.tensor(dy)).sum().backward()
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  padding_mode=mode, algorithm=algorithm)
    with npconv.workspace_limit(limit or npconv.get_workspace_limit()):
        y = npconv.conv(x, w, **kwargs)
        dx, dw, _ = npconv.conv_grad(dy, x, w, **kwargs)
        # each gradient alone too: conv_grad may compute both in one sweep (``shifted_backward``)
        call = _args.conv_call(x, w, None, stride, padding, dilation, groups, mode)
        dx_alone = convolution._conv_input_grad(dy, w, call.geom, call.padding_mode, algorithm)
        dw_alone = (None if dx_only else
                    convolution._conv_weight_grad(x, dy, call.geom, call.padding_mode, algorithm))
    for got in (dx, dx_alone):
        _assert_close(got, xt.grad.numpy())
    if not dx_only:
        _assert_close(y, yt.detach().numpy())
        for got in (dw, dw_alone):
            _assert_close(got, wt.grad.numpy())


@pytest.fixture
def kernel_matches_torch(torch):
    """``kernel_matches_torch(x, w, algorithm, **conv_args)``: see ``_kernel_matches_torch``."""
    return lambda *args, **kwargs: _kernel_matches_torch(torch, *args, **kwargs)


def _gemm_kernels(groups: int) -> tuple:
    """The GEMM kernels that compute a convolution with ``groups`` (im2row: groups=1 only)."""
    return ("im2col", "shifted") + (("im2row",) if groups == 1 else ())


@pytest.fixture(scope="session")
def gemm_kernels():
    """``gemm_kernels(groups)``: every ``algorithm=`` GEMM kernel that applies."""
    return _gemm_kernels
