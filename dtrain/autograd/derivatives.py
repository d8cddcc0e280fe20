"""``torch.autograd.functional``: ``vjp``, ``jvp``, ``jacobian``, ``hessian``, ``hvp``, ``vhp``.

Each runs ``func`` on fresh copies of the inputs and differentiates it with ``autograd.grad``;
the forward-direction products (``jvp``, ``hvp``, forward-mode Jacobians) use the double
backward trick: the gradient of a vector-Jacobian product with respect to its (zero) vector.
Arguments, return structures (a Tensor, or tuples mirroring tuple inputs and outputs), strict
mode and its errors follow torch. ``vectorize=True`` is accepted and gives the same result; dtrain
has no vmap, so the rows are computed one by one either way. Exported as
``dtrain.autograd.functional``.
"""

from __future__ import annotations

import numpy as np

from .engine import grad as _autograd_grad
from .grad_mode import enable_grad, is_grad_enabled, set_grad_enabled
from .tensor import Tensor

__all__ = ["hessian", "hvp", "jacobian", "jvp", "vhp", "vjp"]

_STRATEGIES = ("forward-mode", "reverse-mode")


def _as_tuple(value, arg_name: str, fn_name: str) -> tuple[bool, tuple]:
    """(whether ``value`` was a tuple, ``value`` as a tuple of Tensors), checked as torch does."""
    is_tuple = isinstance(value, tuple)
    items = value if is_tuple else (value,)
    for i, item in enumerate(items):
        if not isinstance(item, Tensor):
            where = f"value at index {i}" if is_tuple else f"given {arg_name}"
            raise TypeError(f"The {arg_name} given to {fn_name} must be either a Tensor or a tuple "
                            f"of Tensors but the {where} has type {type(item)}.")
    return is_tuple, items


def _unpack(result, is_tuple):
    """Undo ``_as_tuple``: ``is_tuple`` is a flag, or (outer, inner) flags for nested results."""
    if isinstance(is_tuple, tuple):
        outer, inner = is_tuple
        if not inner:
            result = type(result)(row[0] for row in result)
        return result if outer else result[0]
    return result if is_tuple else result[0]


def _prepare(inputs: tuple, create_graph: bool, need_graph: bool) -> tuple:
    """Inputs as ``func`` sees them: views keeping the graph, or detached copies."""
    return tuple(t.view_as(t) if create_graph and t.requires_grad
                 else t.detach().requires_grad_(need_graph) for t in inputs)


def _finish(values, create_graph: bool):
    """Results detached unless the caller wants to differentiate them further."""
    if values and isinstance(values[0], Tensor):
        return values if create_graph else tuple(t.detach() for t in values)
    return tuple(_finish(v, create_graph) for v in values)


def _check_v(v: tuple, others: tuple, others_is_tuple: bool) -> None:
    if len(v) != len(others):
        if others_is_tuple:
            raise RuntimeError(f"v is a tuple of invalid length: should be {len(others)} but got "
                               f"{len(v)}.")
        raise RuntimeError("The given v should contain a single Tensor.")
    for i, (a, b) in enumerate(zip(v, others)):
        if a.shape != b.shape:
            prefix = f"Entry {i} in " if others_is_tuple else ""
            raise RuntimeError(f"{prefix}v has invalid size: should be {b.shape} but got "
                               f"{a.shape}.")


_STRICT = {
    "outputs": ("Output {} of the user-provided function does not require gradients. The outputs "
                "must be computed in a differentiable manner from the input when running in "
                "strict mode."),
    "grad_inputs": ("The gradient with respect to input {} is independent of the inputs of the "
                    "user-provided function. This is not allowed in strict mode."),
    "jacobian": ("While computing the hessian, found that the jacobian of the user-provided "
                 "function with respect to input {} is independent of the input. This is not "
                 "allowed in strict mode. You should ensure that your function is twice "
                 "differentiable and that the jacobian depends on the inputs (this would be "
                 "violated by a linear function for example)."),
    "hessian": ("The hessian of the user-provided function with respect to input {} is "
                "independent of the input. This is not allowed in strict mode. You should ensure "
                "that your function is thrice differentiable and that the hessian depends on the "
                "inputs."),
}


def _check_requires_grad(tensors, kind: str, strict: bool) -> None:
    if not strict:
        return
    for i, t in enumerate(tensors):
        if t is None:
            raise RuntimeError(f"The output of the user-provided function is independent of input "
                               f"{i}. This is not allowed in strict mode.")
        if not t.requires_grad:
            raise RuntimeError(_STRICT[kind].format(i))


_MISSING = {
    "back": ("The output of the user-provided function is independent of input {}. This is not "
             "allowed in strict mode."),
    "back_trick": ("The gradient with respect to the input is independent of entry {} in the "
                   "grad_outputs when using the double backward trick to compute forward mode "
                   "gradients. This is not allowed in strict mode."),
    "double_back": ("The jacobian of the user-provided function is independent of input {}. This "
                    "is not allowed in strict mode."),
    "double_back_trick": ("The hessian of the user-provided function is independent of entry {} "
                          "in the grad_jacobian. This is not allowed in strict mode as it prevents "
                          "from using the double backward trick to replace forward mode AD."),
}


def _fill_zeros(grads, refs, strict: bool, create_graph: bool, stage: str) -> tuple:
    """Zeros where a gradient is None (an independent input), or torch's strict-mode errors."""
    out = []
    for i, (g, ref) in enumerate(zip(grads, refs)):
        if g is None:
            if strict:
                raise RuntimeError(_MISSING[stage].format(i))
            g = Tensor._wrap(np.zeros_like(ref._data))
        elif strict and create_graph and not g.requires_grad:
            what = "hessian" if "double" in stage else "jacobian"
            raise RuntimeError(f"The {what} of the user-provided function is independent of input "
                               f"{i}. This is not allowed in strict mode when create_graph=True.")
        out.append(g)
    return tuple(out)


def _grad(outputs: tuple, inputs: tuple, grad_outputs=None, create_graph=False,
          retain_graph=None) -> tuple:
    """``autograd.grad`` over the outputs that require grad; all None when none does."""
    grad_outputs = (None,) * len(outputs) if grad_outputs is None else grad_outputs
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o is not None and o.requires_grad]
    if not pairs:
        return (None,) * len(inputs)
    return _autograd_grad([o for o, _ in pairs], list(inputs), [g for _, g in pairs],
                          retain_graph=retain_graph, create_graph=create_graph, allow_unused=True)


def _ones_if_scalar(tensors: tuple, message: str) -> None:
    if len(tensors) != 1 or tensors[0].numel() != 1:
        raise RuntimeError(message)


def _inputs(inputs, name: str, create_graph: bool) -> tuple[bool, tuple]:
    """``inputs`` as a tuple flag and the tuple ``func`` is called with."""
    inputs_tuple, inputs = _as_tuple(inputs, "inputs", name)
    return inputs_tuple, _prepare(inputs, create_graph, need_graph=True)


def _outputs(func, inputs: tuple, name: str, strict: bool) -> tuple[bool, tuple]:
    """``func(*inputs)`` as a tuple flag and a tuple, checked to require grad if ``strict``."""
    outputs_tuple, outputs = _as_tuple(func(*inputs), "outputs of the user-provided function",
                                       name)
    _check_requires_grad(outputs, "outputs", strict)
    return outputs_tuple, outputs


def _vjp_along_zeros(ys: tuple, xs: tuple, like: tuple) -> tuple[tuple, tuple]:
    """The vjp of ``ys`` at ``xs`` along zeros like ``like`` (which it is linear in), and them."""
    dummies = tuple(Tensor._wrap(np.zeros_like(t._data), requires_grad=True) for t in like)
    return _grad(ys, xs, dummies, create_graph=True), dummies


def _final_grads(ys: tuple, xs: tuple, v, refs: tuple, strict: bool, create_graph: bool,
                 stage: str) -> tuple:
    """``ys``'s gradients along ``v`` at ``xs`` (zeros like ``refs``), recorded if create_graph."""
    with set_grad_enabled(True if create_graph else is_grad_enabled()):
        grads = _grad(ys, xs, v, create_graph=create_graph)
        return _fill_zeros(grads, refs, strict, create_graph, stage)


def _results(outputs: tuple, outputs_tuple: bool, result: tuple, result_tuple: bool,
             create_graph: bool) -> tuple:
    """``(outputs, result)``, finished for ``create_graph`` and unpacked as the user gave them."""
    return (_unpack(_finish(outputs, create_graph), outputs_tuple),
            _unpack(_finish(result, create_graph), result_tuple))


def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), v^T J)``: a vector-Jacobian product, as torch.autograd.functional.vjp."""
    with enable_grad():
        inputs_tuple, inputs = _inputs(inputs, "vjp", create_graph)
        outputs_tuple, outputs = _outputs(func, inputs, "vjp", strict)
        if v is not None:
            v = _prepare(_as_tuple(v, "v", "vjp")[1], create_graph, need_graph=False)
            _check_v(v, outputs, outputs_tuple)
        else:
            _ones_if_scalar(outputs, "The vector v can only be None if the user-provided function "
                                     "returns a single Tensor with a single element.")
    result = _final_grads(outputs, inputs, v, inputs, strict, create_graph, "back")
    return _results(outputs, outputs_tuple, result, inputs_tuple, create_graph)


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), J v)``: a Jacobian-vector product by the double backward trick."""
    with enable_grad():
        inputs_tuple, inputs, v = _inputs_and_v(inputs, v, "jvp", create_graph)
        outputs_tuple, outputs = _outputs(func, inputs, "jvp", strict)
        # the vjp is linear in these zeros; its gradient with respect to them is J v
        grad_inputs, dummies = _vjp_along_zeros(outputs, inputs, outputs)
        _check_requires_grad(grad_inputs, "grad_inputs", strict)
    result = _final_grads(grad_inputs, dummies, v, outputs, strict, create_graph, "back_trick")
    return _results(outputs, outputs_tuple, result, outputs_tuple, create_graph)


def jacobian(func, inputs, create_graph=False, strict=False, vectorize=False,
             strategy="reverse-mode"):
    """The Jacobian of ``func`` at ``inputs``: ``output.shape + input.shape`` per pair, nested in
    tuples when the inputs or outputs are tuples, as torch.autograd.functional.jacobian."""
    if strategy not in _STRATEGIES:
        raise AssertionError('Expected strategy to be either "forward-mode" or "reverse-mode". '
                             'Hint: If your function has more outputs than inputs, "forward-mode" '
                             'tends to be more performant. Otherwise, prefer to use '
                             '"reverse-mode".')
    if strategy == "forward-mode":
        if create_graph:
            raise NotImplementedError("torch.autograd.functional.jacobian: `create_graph=True` "
                                      'and `strategy="forward-mode"` are not supported together '
                                      '(yet). Please either set `create_graph=False` or '
                                      '`strategy="reverse-mode"`.')
        return _jacobian_forward(func, inputs, strict, vectorize)
    with enable_grad():
        inputs_tuple, inputs = _inputs(inputs, "jacobian", create_graph)
        outputs_tuple, outputs = _outputs(func, inputs, "jacobian", strict)
        if vectorize and strict:
            raise RuntimeError("torch.autograd.functional.jacobian: `strict=True` and "
                               "`vectorized=True` are not supported together. Please either set "
                               "`strict=False` or `vectorize=False`.")
        rows = tuple(_jacobian_rows(i, out, inputs, create_graph, strict)
                     for i, out in enumerate(outputs))
        return _unpack(_finish(rows, create_graph), (outputs_tuple, inputs_tuple))


def _jacobian_rows(i: int, out: Tensor, inputs: tuple, create_graph: bool, strict: bool) -> tuple:
    """d out / d input for each input, one backward per element of ``out``."""
    flat = out.reshape(-1)
    rows = [[] for _ in inputs]
    for j in range(out.numel()):
        grads = _grad((flat[j],), inputs, retain_graph=True, create_graph=create_graph)
        for k, (g, inp) in enumerate(zip(grads, inputs)):
            if g is None:
                if strict:
                    raise RuntimeError(f"Output {i} of the user-provided function is independent "
                                       f"of input {k}. This is not allowed in strict mode.")
                g = Tensor._wrap(np.zeros_like(inp._data))
            elif strict and create_graph and not g.requires_grad:
                raise RuntimeError(f"The jacobian of the user-provided function is independent of "
                                   f"input {i}. This is not allowed in strict mode when "
                                   "create_graph=True.")
            rows[k].append(g)
    return tuple(_stack_rows(r, out.shape + inp.shape, inp) for r, inp in zip(rows, inputs))


def _stack_rows(rows: list, shape: tuple, like: Tensor) -> Tensor:
    from .tensor import stack

    if not rows:  # an output with no elements
        return Tensor._wrap(np.zeros(shape, like._data.dtype))
    return stack(rows, 0).view(shape)


def _jacobian_forward(func, inputs, strict: bool, vectorize: bool):
    """Forward-mode Jacobian: one Jacobian-vector product per input element."""
    if strict:
        raise RuntimeError("torch.autograd.functional.jacobian: `strict=True` and "
                           '`strategy="forward-mode"` are not supported together (yet). Please '
                           'either set `strict=False` or `strategy="reverse-mode"`.')
    if not vectorize:
        raise NotImplementedError("Computing Jacobian using forward-AD or forward-over-reverse "
                                  "Hessian is only implemented for `vectorize=True`.")
    inputs_tuple, inputs = _as_tuple(inputs, "inputs", "jacobian")
    columns, outputs, outputs_tuple = [[] for _ in inputs], None, False
    for k, inp in enumerate(inputs):
        for j in range(inp.numel()):
            tangents = tuple(_basis(t, j if m == k else None) for m, t in enumerate(inputs))
            outs, products = jvp(func, inputs, tangents)
            outputs_tuple = isinstance(outs, tuple)
            outputs = outs if outputs_tuple else (outs,)
            columns[k].append(products if outputs_tuple else (products,))
    if outputs is None:  # inputs without elements: evaluate once for the output shapes
        outputs_tuple, outputs = _as_tuple(func(*inputs), "outputs", "jacobian")
    # lists, not tuples, as torch's forward-mode jacobian returns
    result = [[_columns_to_jacobian([c[i] for c in columns[k]], out, inp)
               for k, inp in enumerate(inputs)]
              for i, out in enumerate(outputs)]
    return _unpack(result, (outputs_tuple, inputs_tuple))


def _basis(like: Tensor, index) -> Tensor:
    """The ``index``-th standard basis vector shaped like ``like`` (zeros when index is None)."""
    flat = np.zeros(like.numel(), like._data.dtype)
    if index is not None:
        flat[index] = 1
    return Tensor._wrap(flat.reshape(like.shape))


def _columns_to_jacobian(columns: list, out: Tensor, inp: Tensor) -> Tensor:
    shape = tuple(out.shape) + tuple(inp.shape)
    if not columns:
        return Tensor._wrap(np.zeros(shape, out._data.dtype))
    stacked = np.stack([c._data.reshape(-1) for c in columns], axis=-1)
    return Tensor._wrap(stacked.reshape(shape))


def hessian(func, inputs, create_graph=False, strict=False, vectorize=False,
            outer_jacobian_strategy="reverse-mode"):
    """The Hessian of a scalar ``func``: the Jacobian of its gradient, as torch's ``hessian``;
    tuple inputs give a tuple of tuples (block (i, j) is d2 f / d input_i d input_j)."""
    inputs_tuple, inputs = _as_tuple(inputs, "inputs", "hessian")
    if outer_jacobian_strategy not in _STRATEGIES:
        raise AssertionError('Expected strategy to be either "forward-mode" or "reverse-mode".')

    def scalar_func(*args):
        out = func(*args)
        out_tuple, outs = _as_tuple(out, "outputs of the user-provided function", "hessian")
        _check_requires_grad(outs, "outputs", strict)
        if out_tuple or not isinstance(out, Tensor):
            raise RuntimeError("The function given to hessian should return a single Tensor")
        if out.numel() != 1:
            raise RuntimeError("The Tensor returned by the function given to hessian should "
                               "contain a single element")
        return out.squeeze()

    def gradient(*args):
        if outer_jacobian_strategy == "forward-mode":
            args = tuple(t.requires_grad_(True) for t in args)
        jac = jacobian(scalar_func, args, create_graph=True)
        _check_requires_grad(jac, "jacobian", strict)
        return jac

    result = jacobian(gradient, inputs, create_graph=create_graph, strict=strict,
                      vectorize=vectorize, strategy=outer_jacobian_strategy)
    return _unpack(result, (inputs_tuple, inputs_tuple))


def _scalar_output(func, inputs: tuple, name: str, strict: bool) -> tuple:
    outputs_tuple, outputs = _outputs(func, inputs, name, strict)
    if outputs_tuple:
        raise RuntimeError(f"The function given to {name} should return a single Tensor")
    if outputs[0].numel() != 1:
        raise RuntimeError(f"The Tensor returned by the function given to {name} should contain "
                           "a single element")
    return outputs_tuple, outputs


def _inputs_and_v(inputs, v, name: str, create_graph: bool) -> tuple:
    inputs_tuple, inputs = _inputs(inputs, name, create_graph)
    if v is not None:
        v = _prepare(_as_tuple(v, "v", name)[1], create_graph, need_graph=False)
        _check_v(v, inputs, inputs_tuple)
    else:
        _ones_if_scalar(inputs, "The vector v can only be None if the input to the user-provided "
                                "function is a single Tensor with a single element.")
    return inputs_tuple, inputs, v


def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), v^T H)`` for a scalar ``func``: a vector-Hessian product."""
    with enable_grad():
        inputs_tuple, inputs, v = _inputs_and_v(inputs, v, "vhp", create_graph)
        outputs_tuple, outputs = _scalar_output(func, inputs, "vhp", strict)
        jac = _grad(outputs, inputs, create_graph=True)
        _check_requires_grad(jac, "jacobian", strict)
    result = _final_grads(jac, inputs, v, inputs, strict, create_graph, "double_back")
    return _results(outputs, outputs_tuple, result, inputs_tuple, create_graph)


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), H v)`` for a scalar ``func``, by the double backward trick (equal to
    ``vhp`` for twice-differentiable functions, whose Hessian is symmetric)."""
    with enable_grad():
        inputs_tuple, inputs, v = _inputs_and_v(inputs, v, "hvp", create_graph)
        outputs_tuple, outputs = _scalar_output(func, inputs, "hvp", strict)
        jac = _grad(outputs, inputs, create_graph=True)
        _check_requires_grad(jac, "jacobian", strict)
        double_back, dummies = _vjp_along_zeros(jac, inputs, inputs)
        _check_requires_grad(jac, "hessian", strict)
    result = _final_grads(double_back, dummies, v, inputs, strict, create_graph,
                          "double_back_trick")
    return _results(outputs, outputs_tuple, result, inputs_tuple, create_graph)
