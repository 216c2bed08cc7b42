"""Finite-difference gradient checking for npconv layers, functions and users' own layers.

``gradcheck`` compares an analytic gradient with central differences in
float64. For a map ``x -> y`` and a fixed random ``dy`` it checks the gradient
of the scalar ``f(x) = sum(y * dy)``, which is exactly what every
``backward(dy)`` / ``*_grad(dy, ...)`` in npconv returns::

    df/dx_i ≈ (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)

The error of a central difference is ``O(eps^2 f''')`` (truncation) plus
``~ 1e-16 |f| / eps`` (rounding); with ``eps = 1e-6`` both are far below the
default tolerances. Kinks (ReLU at 0, ties in a max pool) are not
differentiable; random inputs hit them with probability ~0.

Cost: two forward calls per checked element, so keep the inputs small
(tens to a few hundred elements).
"""
from __future__ import annotations

import copy

import numpy as np

__all__ = ["gradcheck"]


def _as_tuple(values):
    return tuple(values) if isinstance(values, (tuple, list)) else (values,)


def _numerical(f, array: np.ndarray, eps: float) -> np.ndarray:
    """Central differences of the scalar ``f()`` w.r.t. every element of ``array`` (perturbed in place)."""
    grad = np.zeros(array.shape, dtype=np.float64)
    flat, flat_grad = array.reshape(-1), grad.reshape(-1)
    if not np.shares_memory(flat, array):
        raise ValueError("gradcheck: arrays must be contiguous to be perturbed in place")
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + eps
        f_plus = f()
        flat[i] = original - eps
        f_minus = f()
        flat[i] = original
        flat_grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def _compare(results, atol, rtol):
    """Raise AssertionError naming the worst entry if any |analytic - numeric| > atol + rtol |numeric|."""
    worst = None
    for name, analytic, numeric in results:
        if analytic is None:
            analytic = np.zeros_like(numeric)
        analytic = np.asarray(analytic, dtype=np.float64)
        if analytic.shape != numeric.shape:
            raise AssertionError(f"gradcheck: {name}: analytic gradient has shape "
                                 f"{analytic.shape}, expected {numeric.shape}")
        if not numeric.size:
            continue
        error = np.abs(analytic - numeric)
        excess = error - (atol + rtol * np.abs(numeric))
        index = np.unravel_index(int(np.argmax(excess)), numeric.shape)
        if excess[index] > 0 and (worst is None or excess[index] > worst[0]):
            worst = (excess[index], name, index, analytic[index], numeric[index], error[index],
                     int((excess > 0).sum()), numeric.size)
    if worst is not None:
        _, name, index, analytic, numeric, error, count, size = worst
        raise AssertionError(
            f"gradcheck: gradient mismatch, worst in {name} at index {tuple(int(i) for i in index)}: "
            f"analytic {analytic:.10g}, numerical {numeric:.10g}, |error| {error:.3g} > "
            f"atol {atol:g} + rtol {rtol:g} * |numerical| ({count} of {size} elements of {name} fail)"
        )
    return True


def gradcheck(module_or_fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              grad_fn=None, dy=None, seed: int = 0, check_params: bool = True) -> bool:
    """Check analytic gradients against central finite differences in float64.

    Parameters
    ----------
    module_or_fn : Module or callable
        * a ``npconv.nn.Module`` (or any object with ``forward``/``backward`` and,
          optionally, ``named_parameters``): checked on a deep copy cast to float64
          (``.to(np.float64)`` when it has one), in its current train/eval mode.
          ``backward(dy)`` must return the input gradient (a tuple of them for
          several inputs) and accumulate parameter gradients into ``p.grad``.
          Stochastic layers (Dropout in training) must be made deterministic first.
        * a function ``fn(*inputs) -> y``: then ``grad_fn(dy, *inputs)`` must
          return the gradient of ``sum(fn(*inputs) * dy)`` w.r.t. each input (a
          tuple with one entry per input; None skips that input, a single array
          is accepted for one input).
    inputs : ndarray or tuple of ndarrays
        Converted to float64 copies; the caller's arrays are not modified.
    eps : float
        Finite-difference step.
    atol, rtol : float
        Element passes if ``|analytic - numerical| <= atol + rtol * |numerical|``.
    grad_fn : callable, only for functions.
    dy : ndarray, optional
        The output weighting; default standard normal draws from ``seed``.
    seed : int
    check_params : bool
        For modules: also check every parameter gradient (default True).

    Returns
    -------
    True

    Raises
    ------
    AssertionError
        Naming the worst input (``input 0``) or parameter (``parameter 'block.0.weight'``),
        the element index, both values and the error.
    TypeError
        A function without ``grad_fn``.

    Examples
    --------
    >>> import numpy as np
    >>> from npconv import nn
    >>> gradcheck(nn.Linear(3, 2, rng=0), np.ones((4, 3)))
    True
    >>> gradcheck(np.sin, np.linspace(0, 1, 5), grad_fn=lambda dy, x: dy * np.cos(x))
    True
    """
    inputs = tuple(np.array(x, dtype=np.float64, copy=True) for x in _as_tuple(inputs))
    rng = np.random.default_rng(seed)
    is_module = hasattr(module_or_fn, "forward") and hasattr(module_or_fn, "backward")

    if is_module:
        module = copy.deepcopy(module_or_fn)
        if hasattr(module, "to"):
            module.to(np.float64)

        def run():
            return np.asarray(module.forward(*inputs), dtype=np.float64)
    else:
        if grad_fn is None:
            raise TypeError("gradcheck: a function needs 'grad_fn(dy, *inputs)' returning its "
                            "input gradients")

        def run():
            return np.asarray(module_or_fn(*inputs), dtype=np.float64)

    y = run()
    dy = rng.standard_normal(y.shape) if dy is None else np.asarray(dy, dtype=np.float64)
    if dy.shape != y.shape:
        raise ValueError(f"gradcheck: 'dy' must have the output's shape {y.shape}, got {dy.shape}")

    def objective():
        return float(np.sum(run() * dy))

    results = []
    if is_module:
        params = [(name, p) for name, p in module.named_parameters()
                  if getattr(p, "requires_grad", True)] if (
            check_params and hasattr(module, "named_parameters")) else []
        for _, param in params:
            param.grad = None
        run()                                   # fresh cache for exactly these inputs
        input_grads = _as_tuple(module.backward(dy))
        analytic_params = [(name, None if p.grad is None else np.array(p.grad))
                           for name, p in params]
    else:
        input_grads = grad_fn(dy, *inputs)
        input_grads = (input_grads,) if len(inputs) == 1 and not isinstance(
            input_grads, (tuple, list)) else tuple(input_grads)
        params, analytic_params = [], []
    if len(input_grads) != len(inputs):
        raise AssertionError(f"gradcheck: got {len(input_grads)} input gradient(s) for "
                             f"{len(inputs)} input(s)")
    for i, (x, analytic) in enumerate(zip(inputs, input_grads)):
        if analytic is None and not is_module:
            continue
        results.append((f"input {i}", analytic, _numerical(objective, x, eps)))
    for (name, param), (_, analytic) in zip(params, analytic_params):
        if param.data.dtype != np.float64:
            raise TypeError(f"gradcheck: parameter '{name}' has dtype {param.data.dtype}; "
                            "give the module a float64 .to() or float64 parameters")
        if not param.data.flags.c_contiguous:
            param.data = np.ascontiguousarray(param.data)
        results.append((f"parameter '{name}'", analytic, _numerical(objective, param.data, eps)))
    return _compare(results, atol, rtol)
