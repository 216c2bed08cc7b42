"""``summary(model, input_shape)``: a table of layers, output shapes and parameter counts.

The output shapes come from running one forward pass on zeros of
``input_shape``, while every submodule's ``forward`` is wrapped to record
the shape it returns (the idea of torchinfo's forward hooks; npconv modules
have no hooks, so the instance attribute ``forward`` is shadowed for the
duration of the pass and removed afterwards).

The pass has no side effects on the model: it runs in eval mode (so
BatchNorm's running statistics are not updated and Dropout is the identity),
and each module's attributes - including what its last forward cached for
``backward`` - are restored afterwards, as is every module's train/eval mode.
"""
from __future__ import annotations

import numbers

import numpy as np

from .nn import Module

__all__ = ["summary", "ModelSummary"]


class ModelSummary(str):
    """The summary table: a ``str`` that shows as the table in a REPL.

    Attributes
    ----------
    rows : list of dict
        One per module in depth-first order: ``name``, ``type``, ``depth``,
        ``output_shape`` (tuple, or None if the module never ran),
        ``params`` (the module's own parameters, not its children's).
    total_params, trainable_params : int
    output_shape : tuple
        Shape of the model's output.
    """

    rows: list
    total_params: int
    trainable_params: int
    output_shape: tuple

    def __repr__(self) -> str:
        return str(self)


def summary(model: Module, input_shape, dtype=np.float32, depth: int | None = None
            ) -> ModelSummary:
    """Tabulate ``model``'s layers with output shapes and parameter counts.

    Parameters
    ----------
    model : npconv.nn.Module
    input_shape : tuple of int
        Shape of one input, batched ``(N, C, *spatial)`` or unbatched
        ``(C, *spatial)`` if the model accepts that; a forward pass runs on
        ``np.zeros(input_shape, dtype)``.
    dtype : np.float32 or np.float64
        dtype of that input (the model's own dtype is usual).
    depth : int, optional
        Show modules nested at most this deep (1 = the model's direct
        children); totals always count every parameter. Default: all.

    Returns
    -------
    ModelSummary
        The table as a ``str`` (``print(summary(...))``; a REPL shows it as
        is), with the counts also as attributes. Nothing is printed.

    Raises
    ------
    TypeError
        ``model`` is not an npconv Module.
    ValueError
        ``input_shape`` is not a tuple of positive ints, or ``depth`` < 1.
        An error inside the forward pass propagates with a note naming the
        layer that raised it.

    Examples
    --------
    >>> from npconv import nn
    >>> from npconv.summary import summary
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    >>> table = summary(model, (2, 1, 8, 8))
    >>> table.total_params, table.output_shape
    (1490, (2, 10))
    """
    if not isinstance(model, Module):
        raise TypeError(f"summary: 'model' must be an npconv.nn.Module, got {type(model).__name__}")
    input_shape = _check_shape(input_shape)
    if depth is not None and (not isinstance(depth, numbers.Integral) or depth < 1):
        raise ValueError(f"summary: 'depth' must be an int >= 1 or None, got {depth!r}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"summary: 'dtype' must be a float dtype, got {dtype}")

    named = list(model.named_modules())
    output_shapes: dict[int, tuple] = {}
    saved_dicts = {id(m): dict(m.__dict__) for _, m in named}
    saved_modes = {id(m): m.training for _, m in named}

    def recording(module: Module, name: str):
        forward = module.forward  # the bound method of the class

        def forward_and_record(*args, **kwargs):
            try:
                out = forward(*args, **kwargs)
            except Exception as error:
                # add_note is Python >= 3.11; on 3.10 the error passes through as is
                if hasattr(error, "add_note") and not getattr(error, "_npconv_summary_noted", False):
                    shapes = ", ".join(str(tuple(np.shape(a))) for a in args)
                    error.add_note(f"summary: raised by layer '{name or '(model)'}' "
                                   f"({type(module).__name__}) on input shape {shapes}")
                    error._npconv_summary_noted = True
                raise
            output_shapes[id(module)] = tuple(np.shape(out))
            return out

        return forward_and_record

    try:
        model.eval()
        for name, module in named:
            object.__setattr__(module, "forward", recording(module, name))
        out = model(np.zeros(input_shape, dtype=dtype))
    finally:
        # Undo everything: the wrappers, anything forward cached, the modes.
        for _, module in named:
            module.__dict__.clear()
            module.__dict__.update(saved_dicts[id(module)])
            object.__setattr__(module, "training", saved_modes[id(module)])

    rows = []
    for name, module in named[1:]:  # the root is the table itself
        own = sum(p.data.size for p in module._parameters.values() if p is not None)
        rows.append(dict(name=name, type=type(module).__name__, depth=name.count(".") + 1,
                         output_shape=output_shapes.get(id(module)), params=own))
    params = model.parameters()
    total = sum(p.data.size for p in params)
    trainable = sum(p.data.size for p in params if getattr(p, "requires_grad", True))
    buffer_bytes = sum(b.nbytes for b in model.buffers())
    # Activation memory of a training forward: every leaf layer's output is
    # kept (by it or the next layer) for backward, roughly.
    leaf_ids = {id(m) for _, m in named[1:] if not any(True for _ in m.children())}
    itemsize = dtype.itemsize
    activation_bytes = sum(int(np.prod(shape)) * itemsize for key, shape in output_shapes.items()
                           if key in leaf_ids)

    table = _format(type(model).__name__, input_shape, tuple(np.shape(out)), rows, depth,
                    total, trainable, buffer_bytes, sum(p.data.nbytes for p in params),
                    int(np.prod(input_shape)) * itemsize, activation_bytes)
    result = ModelSummary(table)
    result.rows = rows
    result.total_params = total
    result.trainable_params = trainable
    result.output_shape = tuple(np.shape(out))
    return result


def _check_shape(input_shape) -> tuple[int, ...]:
    if isinstance(input_shape, numbers.Integral):
        input_shape = (input_shape,)
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(f"summary: 'input_shape' must be a tuple of positive ints, "
                         f"got {input_shape!r}") from None
    if not shape or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                            and s > 0 for s in shape):
        raise ValueError(f"summary: 'input_shape' must be a tuple of positive ints, "
                         f"got {input_shape!r}")
    return tuple(int(s) for s in shape)


def _format(model_type, input_shape, output_shape, rows, depth, total, trainable,
            buffer_bytes, param_bytes, input_bytes, activation_bytes) -> str:
    shown = [r for r in rows if depth is None or r["depth"] <= depth]
    first_column = ["  " * (r["depth"] - 1) + f"{r['name']} {r['type']}" for r in shown]
    shapes = [str(r["output_shape"]) if r["output_shape"] is not None else "--" for r in shown]
    counts = [f"{r['params']:,}" if r["params"] else "--" for r in shown]
    header = ("Layer (name type)", "Output Shape", "Param #")
    w0 = max([len(header[0]), len(model_type) + 8] + [len(s) for s in first_column])
    w1 = max([len(header[1]), len(str(input_shape)), len(str(output_shape))]
             + [len(s) for s in shapes])
    w2 = max([len(header[2])] + [len(s) for s in counts])
    width = w0 + w1 + w2 + 4
    line = lambda a, b, c: f"{a:<{w0}}  {b:<{w1}}  {c:>{w2}}".rstrip()  # noqa: E731
    mb = lambda n: f"{n / 2**20:,.2f}"  # noqa: E731
    out = ["=" * width, line(*header), "=" * width, line(f"input ({model_type})", str(input_shape), "")]
    out += [line(a, b, c) for a, b, c in zip(first_column, shapes, counts)]
    out += [line("output", str(output_shape), ""), "=" * width,
            f"Total params: {total:,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {total - trainable:,}",
            "-" * width,
            f"Input size (MB): {mb(input_bytes)}",
            f"Forward activations (MB): {mb(activation_bytes)}",
            f"Params size (MB): {mb(param_bytes)}",
            f"Buffers size (MB): {mb(buffer_bytes)}",
            "=" * width]
    return "\n".join(out)
