"""PyTorch module -> clean ONNX with torch.onnx's TorchScript exporter.

That exporter (``dynamo=False``) works offline and keeps the parameter names
(``features.0.weight``), from which each conv node gets its module's name
(``features.0``). It exports the structure only; the weights go from the
module to the file as zero-copy views (see ``export``). State dicts are
loaded with ``weights_only=True``, memory-mapped and assigned, so the
weights are in memory once.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile

from inspector.errors import InspectorError

from . import onnx_passes
from .user_code import import_user_module


def import_torch():
    _no_triton_after_tensorflow()
    try:
        import torch
    except ImportError:
        raise InspectorError("converting PyTorch models needs torch; install it with: "
                             "pip install 'inspector-cnn[torch]' (the CPU build is enough)") from None
    return torch


def _no_triton_after_tensorflow() -> None:
    """Keep triton out of a process that has loaded TensorFlow.

    Loading triton's ``libtriton.so`` after TensorFlow's libraries kills the process with a segmentation
    fault (both carry their own LLVM; ``python -c "import tensorflow; import triton"`` crashes, the other
    order does not). torch.onnx.export imports ``torch._dynamo``, which imports triton when it is
    installed, so a notebook that used TensorFlow and then converted a torch model crashed. With TensorFlow
    loaded and triton not, ``import triton`` is made to fail (an ImportError, which torch takes as "no
    triton"), for the rest of the process: loading it later would crash it. The CPU exporter does not use
    triton."""
    import sys

    if "tensorflow" in sys.modules and "triton" not in sys.modules:
        sys.modules["triton"] = None


def parse_input_shape(text) -> tuple[int, ...]:
    if isinstance(text, (tuple, list)):
        parts = [str(p) for p in text]
    else:
        parts = [p.strip() for p in str(text).replace("x", ",").split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 4 or any(d <= 0 for d in shape):
        raise InspectorError(f"malformed --input-shape '{text}': give four positive integers N,C,H,W, "
                             "e.g. 1,3,224,224")
    return shape


def resolve_factory(spec: str):
    """``path/to/file.py:FACTORY`` or ``package.module:FACTORY`` -> the callable."""
    from .torch_factory import split_call, with_arguments

    head, paren, rest = spec.partition("(")  # ``FACTORY(literal args)``: a ':' inside them is no separator
    if ":" not in head:
        raise InspectorError(f"'{spec}' names no factory: use FILE.py:FACTORY or package.module:FACTORY")
    where, name = head.rsplit(":", 1)
    name, args, kwargs = split_call(name + paren + rest)
    if not name.isidentifier() and not all(part.isidentifier() for part in name.split(".")):
        raise InspectorError(f"'{name}' is not a Python name; use FILE.py:FACTORY or package.module:FACTORY")
    module = import_user_module(where, "factory")
    target = module
    for part in name.split("."):
        if not hasattr(target, part):
            found = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise InspectorError(f"'{name}' not found in {where}; callables there: {', '.join(found[:20]) or 'none'}")
        target = getattr(target, part)
    if not callable(target):
        raise InspectorError(f"'{name}' in {where} is not callable; FACTORY must be a function or class returning an nn.Module")
    return with_arguments(target, args, kwargs)


def is_torchscript_spec(spec: str) -> bool:
    """``model.pt`` (an existing file, no ``:FACTORY``): a TorchScript archive saved with torch.jit.save."""
    return isinstance(spec, str) and os.path.isfile(spec) and not spec.endswith(".py")


def load_torchscript(path: str):
    """A ``torch.jit.save`` archive -> its ScriptModule, without the Python class that made it.

    The archive holds TorchScript code (a restricted language the JIT interprets, not Python) and its
    tensors; a plain ``torch.save`` file or a state dict is refused with what to give instead."""
    torch = import_torch()
    import zipfile

    hint = ("a state dict or a pickled model is not a TorchScript archive: give the module's code as "
            "FILE.py:FACTORY and the file as --weights")
    if not zipfile.is_zipfile(path):
        raise InspectorError(f"{path} is not a TorchScript archive (not a zip file); {hint}")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if not any(n.endswith("/constants.pkl") or n.split("/", 1)[-1].startswith("code/") for n in names):
        raise InspectorError(f"{path} is not a TorchScript archive (no code/ in it); {hint}")
    try:
        module = torch.jit.load(path, map_location="cpu")
    except Exception as exc:
        raise InspectorError(f"{path} does not load as a TorchScript archive ({exc.__class__.__name__}: "
                             f"{_first_line(exc)[:160]})") from None
    return module.eval()


def build_module(factory, weights: str | None = None, warn=None):
    """Call the factory (see torch_factory: its one nn.Module is taken from a tuple or wrapper; with
    ``weights`` its pretrained downloads are skipped, every tensor coming from that file)."""
    from .torch_factory import pretrained_downloads_skipped, the_module

    torch = import_torch()
    skipped: list[str] = []
    try:
        with pretrained_downloads_skipped(torch, skipped) if weights else contextlib.nullcontext():
            result = factory()
    except InspectorError:
        raise
    except Exception as exc:
        raise InspectorError(f"calling the factory failed ({exc.__class__.__name__}: {_first_line(exc)[:200]})") from None
    module, note = the_module(result, torch)
    for message in ([note] if note else []) + [f"the factory's pretrained download {url} was skipped: every "
                                               "tensor comes from --weights" for url in skipped]:
        (warn or (lambda _m: None))(message)
    if weights:
        load_state_dict(module, weights)
    return module.eval()


def _first_line(exc: Exception) -> str:
    """The exception's first line; an empty message (a mutated file's bare IndexError) is no crash of ours."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "no message"


def load_state_dict(module, path: str) -> None:
    torch = import_torch()
    if not os.path.isfile(path):
        raise InspectorError(f"state dict not found: {path}")
    try:
        try:  # memory-mapped: the tensors are the file's pages, not a second copy
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InspectorError(f"{path} is not a PyTorch state dict that loads with weights_only=True "
                             f"({exc.__class__.__name__}: {_first_line(exc)[:160]})") from None
    state = _unwrap_checkpoint(state, path)
    expected = module.state_dict(keep_vars=True)
    state = _strip_prefix(state, expected)
    # BatchNorm's training counter, which state dicts saved before torch 0.4.1 lack (FFDNet's): torch's own
    # loading fills it in, and it changes nothing in eval mode
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_names(unexpected)}")
        raise InspectorError(f"{path} does not fit the factory's module: {'; '.join(parts)}")
    fitted = {}
    for key, tensor in state.items():  # fp16 (or bf16) checkpoints: the module's own dtype, as it computes in
        target = expected[key]
        if torch.is_tensor(tensor) and torch.is_tensor(target) and tensor.is_floating_point() and \
                target.is_floating_point() and tensor.dtype != target.dtype:
            tensor = tensor.to(target.dtype)
        fitted[key] = tensor
    try:
        module.load_state_dict(fitted, strict=True, assign=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise InspectorError(f"{path} does not fit the factory's module: {first}") from None


CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "state", "model_state",
                   "ema", "model_ema")


def _is_tensor_dict(value) -> bool:
    torch = import_torch()
    return isinstance(value, dict) and bool(value) and any(torch.is_tensor(v) for v in value.values())


def _unwrap_checkpoint(state, path: str):
    """A training checkpoint ({"epoch": .., "state_dict": {..}, "optimizer": ..}) -> its model's state dict."""
    if _is_tensor_dict(state):
        return state
    if isinstance(state, dict):
        for key in CHECKPOINT_KEYS:
            if _is_tensor_dict(state.get(key)):
                return state[key]
        keys = ", ".join(sorted(str(k) for k in state)[:8])
        raise InspectorError(f"{path} holds a dict without tensors (keys: {keys or 'none'}) and none of "
                             f"{', '.join(CHECKPOINT_KEYS)}; save model.state_dict()")
    raise InspectorError(f"{path} holds a {type(state).__name__}, not a state dict; save model.state_dict()")


def _strip_prefix(state: dict, expected) -> dict:
    """``module.`` (DataParallel, DistributedDataParallel) or ``_orig_mod.`` (torch.compile) on every key."""
    for prefix in ("module.", "_orig_mod.", "model."):
        if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _names(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


class _NeedsOpset(Exception):
    def __init__(self, operator: str, version: int):
        super().__init__(operator, version)
        self.operator, self.version = operator, version


def export(module, input_shape, opset: int = 17, stages=None, dynamic_batch: bool = True):
    """Export the module (``_export``); an operator whose ONNX translation came with a later opset (``nn.Fold``:
    ``aten::col2im``, opset 18) is exported at that opset, said on stderr, rather than refused."""
    try:
        return _export(module, input_shape, opset, stages, dynamic_batch)
    except _NeedsOpset as needs:
        from .api import _warn

        _warn(f"{needs.operator} has no ONNX translation before opset {needs.version}: the file is written at "
              f"opset {needs.version} instead of {opset}")
        try:
            return _export(module, input_shape, needs.version, stages, dynamic_batch)
        except _NeedsOpset as again:
            raise InspectorError(f"torch.onnx.export failed: {again.operator} needs ONNX opset {again.version}, "
                                 f"which this torch cannot write") from None


_NEEDS = re.compile(r"operator '([^']+)' to ONNX opset version (\d+) is not supported. Support for this operator "
                    r"was added in version (\d+)")


def _export(module, input_shape, opset: int = 17, stages=None, dynamic_batch: bool = True):
    """Export the structure with torch.onnx, then attach the module's weights ourselves.

    The TorchScript exporter, given the weights, holds them four times at its
    peak (the module, its C++ ModelProto, the serialised string, the Python
    bytes). Exported with ``export_params=False`` the parameters stay graph
    inputs named by their state-dict keys (``features.0.weight``); the
    attach pass then takes them from the module as zero-copy NumPy views,
    folds BatchNormalization into the conv before it (``TrainingMode.PRESERVE``
    keeps the exporter from doing it with weights it would not export), and
    the writer streams them to the file. Returns (model, conv layer names,
    payloads for ``writer.write_model``).

    Even without the weights in the file, the exporter's ONNX shape
    inference copies each parameter a node reads into a Constant and
    serialises it, about twice the largest tensor at once (+800 MB on a
    VGG16); so the trace gets them as inputs instead (``_state_as_inputs``):
    shape inference then sees only their types.

    While tracing, ``torch_trace.traceable`` makes ``.data`` and user autograd Functions traceable;
    ``dynamic_batch=False`` (a trace that fixes the batch) exports the traced batch as it is.
    """
    from .torch_trace import traceable

    torch = import_torch()
    import onnx

    from .measure import NoStages

    stages = stages or NoStages()
    if opset < 17:
        raise InspectorError(f"--opset {opset} is too old: the inspector writes opset 17 or newer")
    if module.training:
        module.eval()
    with tempfile.TemporaryDirectory(prefix="inspector-torch-") as folder:
        path = os.path.join(folder, "export.onnx")
        with stages("torch.onnx.export"):
            dummy = torch.zeros(input_shape, dtype=torch.float32)
            try:
                scripted = isinstance(module, torch.jit.ScriptModule)
                with _native_stderr_as_warnings(), torch.no_grad(), warnings_quiet(), _no_mha_fastpath(torch), \
                        traceable(torch), \
                        _unfold_of_any_length(torch, opset), _adaptive_pool_of_traced_size(torch, opset), \
                        _state_as_inputs(module) as (names, tensors):
                    # a ScriptModule's parameters cannot be swapped for inputs: exported with them, as inputs
                    # named by their state-dict keys, and then taken out of the file again (below)
                    torch.onnx.export(module, (dummy, *tensors), path, dynamo=False, opset_version=opset,
                                      export_params=scripted, keep_initializers_as_inputs=scripted,
                                      training=torch.onnx.TrainingMode.PRESERVE,
                                      do_constant_folding=True, input_names=["input", *names],
                                      output_names=["output"],
                                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}
                                      if dynamic_batch else None)
            except _NeedsOpset:
                raise
            except Exception as exc:
                needs = _NEEDS.search(str(exc))
                if needs and int(needs.group(3)) > opset:
                    raise _NeedsOpset(needs.group(1), int(needs.group(3))) from None
                raise InspectorError(f"torch.onnx.export failed ({exc.__class__.__name__}: "
                                     f"{_first_line(exc)[:200]})") from None
            del dummy, tensors
            model = onnx.load(path)
            if scripted:
                del model.graph.initializer[:]
    with stages("attach weights"):
        state = {name: tensor for name, tensor in module.state_dict(keep_vars=False).items()}
        inputs = {i.name for i in model.graph.input}
        missing = [i for i in list(inputs)[1:] if i not in state and i != "input"]
        if missing:
            raise InspectorError(f"the exported graph wants values that are not in the module's state dict "
                                 f"({', '.join(sorted(missing)[:5])}); the converter cannot attach them")
        weights = {name: (lambda t=tensor: t.detach().cpu().numpy()) for name, tensor in state.items()
                   if name in inputs}
        shapes = onnx_passes.static_shapes(model)
        # each conv's state-dict weight name, before folding a BatchNorm in renames its kernel
        weight_names = {n.name: n.input[1] for n in model.graph.node
                        if n.op_type in onnx_passes.CONV_OPS and len(n.input) > 1 and n.input[1] in state}
        producer = onnx_passes.producers(model.graph)
        for node in model.graph.node:  # a Linear on a map may become a 1x1 conv: its weight's name too
            if node.op_type == "MatMul" and len(node.input) > 1:
                source = producer.get(node.input[1])
                weight = source.input[0] if source is not None and source.op_type == "Transpose" else node.input[1]
                if weight in state:
                    weight_names[node.name] = weight
        _, payloads = onnx_passes.attach_weights(model, weights, opset, shapes, islands=True,
                                                 fold_allowed=_own_bias_or_batchnorm)
        del model.graph.value_info[:]
        conv_layers = name_torch_layers(model.graph, weight_names)
    return model, conv_layers, payloads


def _own_bias_or_batchnorm(conv, node) -> bool:
    """Fold a BatchNorm, or an op of the conv's own module (a Linear's bias); not another module's
    constant scale (ConvNeXt's layer_scale), so that the conv's tensor stays its module's output."""
    scope = lambda name: name.rsplit("/", 1)[0]  # noqa: E731 ("/features/features.1/.../block.3/MatMul")
    return node.op_type == "BatchNormalization" or (bool(conv.name) and scope(node.name) == scope(conv.name))


@contextlib.contextmanager
def _state_as_inputs(module):
    """Yield (state-dict names, tensors) to pass to the trace as inputs after the image.

    While it lasts the module holds None in their places (so the exporter
    finds no parameters of its own), and its ``forward`` puts the traced
    inputs there for the call. Shared tensors are passed once, under their
    first name, as the exporter would. A state dict with entries that are
    not plain parameters or buffers (custom ``_save_to_state_dict``, extra
    state) is left alone: then the names and tensors are empty and the
    exporter handles the parameters itself, as before.
    """
    slots, names, tensors, index = [], [], [], {}
    torch = import_torch()
    if isinstance(module, torch.jit.ScriptModule):
        yield [], []
        return
    for key, tensor in module.state_dict(keep_vars=True).items():
        prefix, _, local = key.rpartition(".")
        try:
            owner = module.get_submodule(prefix) if prefix else module
        except AttributeError:
            owner = None
        table = None
        for candidate in (getattr(owner, "_parameters", {}), getattr(owner, "_buffers", {})):
            if candidate.get(local) is tensor:
                table = candidate
        if table is None:
            yield [], []
            return
        if id(tensor) not in index:
            index[id(tensor)] = len(tensors)
            names.append(key)
            tensors.append(tensor)
        slots.append((table, local, tensor, index[id(tensor)]))
    if not slots:
        yield [], []
        return
    had_forward = "forward" in module.__dict__
    original_forward = module.forward

    def forward(*args):
        images, values = args[: len(args) - len(tensors)], args[len(args) - len(tensors):]
        for table, local, _, k in slots:
            table[local] = values[k]
        try:
            return original_forward(*images)
        finally:
            for table, local, _, _ in slots:
                table[local] = None

    try:
        for table, local, _, _ in slots:
            table[local] = None
        module.forward = forward
        yield names, tensors
    finally:
        if had_forward:
            module.forward = original_forward
        else:
            del module.forward
        for table, local, tensor, _ in slots:
            table[local] = tensor


@contextlib.contextmanager
def _no_mha_fastpath(torch):
    """nn.MultiheadAttention in eval mode without grad takes a fused fast path
    (``aten::_native_multi_head_attention``) that torch.onnx cannot export (torchvision's ViT): traced with
    the plain path, which computes the same."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


@contextlib.contextmanager
def _unfold_of_any_length(torch, opset: int):
    """``Tensor.unfold(dim, size, step)`` on a dimension whose length the exporter does not know at that point
    (after ``F.pad``: timm's HaloAttn) has no export ("Unsupported: ONNX export of operator Unfold, input size
    not accessible"). While exporting, such an unfold is written as a Gather of the windows' indices, computed
    from the tensor's shape in the graph (the window axis then moved last, as unfold puts it); an unfold of a
    known length keeps torch.onnx's own translation."""
    from torch.onnx import symbolic_helper as helper
    from torch.onnx import symbolic_opset12

    def unfold(g, tensor, dimension, size, step):
        dim, rank = helper._get_const(dimension, "i", "dimension"), helper._get_tensor_rank(tensor)
        size_c, step_c = helper._maybe_get_const(size, "i"), helper._maybe_get_const(step, "i")
        if rank is None or helper._is_value(size_c) or helper._is_value(step_c) or \
                helper._get_tensor_dim_size(tensor, dim) is not None:
            return symbolic_opset12.unfold(g, tensor, dimension, size, step)
        dim %= rank
        const = lambda v: g.op("Constant", value_t=torch.tensor(v, dtype=torch.int64))  # noqa: E731
        length = g.op("Gather", g.op("Shape", tensor), const(dim), axis_i=0)
        count = g.op("Add", g.op("Div", g.op("Sub", length, const(size_c)), const(step_c)), const(1))
        starts = g.op("Mul", g.op("Range", const(0), count, const(1)), const(step_c))
        index = g.op("Add", g.op("Unsqueeze", starts, const([1])),
                     g.op("Unsqueeze", g.op("Range", const(0), const(size_c), const(1)), const([0])))
        windows = g.op("Gather", tensor, index, axis_i=dim)  # (..., count, size, ...)
        if dim + 1 == rank:
            return windows
        return g.op("Transpose", windows, perm_i=[k for k in range(rank + 1) if k != dim + 1] + [dim + 1])

    torch.onnx.register_custom_op_symbolic("aten::unfold", unfold, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::unfold", opset)


def _adaptive_average_matrix(size: int, out: int):
    """(out, size) float32: row i averages torch's adaptive window i, floor(i*size/out) to ceil((i+1)*size/out)."""
    import numpy as np

    matrix = np.zeros((out, size), dtype=np.float32)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


@contextlib.contextmanager
def _adaptive_pool_of_traced_size(torch, opset: int):
    """``AdaptiveAvgPool2d((7, 7))`` on a map whose height and width torch.onnx lost (a reshape to sizes computed
    from ``x.shape`` with the batch left open: timm's CSATv2 DCT stem) has no export ("adaptive_avg_pool2d,
    input size not accessible"), though the trace knows them: the pool gets the traced channels, height and
    width (the batch stays open) before torch.onnx's own translation, which then writes an AveragePool where
    they divide evenly, as it does for a map of known size."""
    from torch.onnx import symbolic_helper as helper
    from torch.onnx import symbolic_opset9

    def adaptive_avg_pool2d(g, tensor, output_size):
        sizes = helper._get_tensor_sizes(tensor)
        traced = g.original_node.inputsAt(0).type()
        if isinstance(traced, torch._C.TensorType) and traced.varyingSizes() and \
                (sizes is None or any(d is None for d in sizes[1:])):
            known = traced.varyingSizes()
            tensor.setType(traced.with_sizes([None, *known[1:]]))
        sizes = helper._get_tensor_sizes(tensor)
        try:
            wanted = helper._parse_arg(output_size, "is")
        except Exception:  # not a constant: torch.onnx's own refusal
            wanted = None
        if wanted and sizes and len(sizes) == 4 and None not in sizes[2:] and wanted != [1, 1] and \
                any(n % w for n, w in zip(sizes[2:], wanted)):
            # windows of unequal sizes (7 from 28 divides, 7 from 24 does not): the mean over each window as
            # two matrix products with the averaging matrices, rows then columns, as torch computes them
            rows, cols = (_adaptive_average_matrix(n, w) for n, w in zip(sizes[2:], wanted))
            along_width = g.op("MatMul", tensor, g.op("Constant", value_t=torch.from_numpy(cols.T.copy())))
            return g.op("MatMul", g.op("Constant", value_t=torch.from_numpy(rows)), along_width)
        return symbolic_opset9.adaptive_avg_pool2d(g, tensor, output_size)

    def col2im(g, tensor, output_size, kernel_size, dilation, padding, stride):
        # F.fold (VOLO's outlooker) to an output size taken from x.shape: a computed list whose length torch.onnx's
        # own translation reads from its type, unknown here; F.fold is two-dimensional, always
        dilation, padding, stride = (helper._get_const(v, "is", n) for v, n in
                                     ((dilation, "dilation"), (padding, "padding"), (stride, "stride")))
        return g.op("Col2Im", tensor, output_size, kernel_size, dilations_i=list(dilation) or [1, 1],
                    pads_i=[p for p in padding for _ in range(2)] or [0, 0, 0, 0], strides_i=list(stride) or [1, 1])

    def bicubic_antialiased(g, tensor, output_size, align_corners, *scales):
        # F.interpolate(mode="bicubic", antialias=True): timm's NaFlexViT resizing its learned position table to
        # the grid. Resize antialiases from opset 18 on (PIL's filter, as torch's: a = -0.5, the weights outside
        # the map left out and the rest renormalised); at an older opset, the exporter's own "added in version"
        # sentence, so that export() writes the file at 18, said
        if opset < 18:
            raise _NeedsOpset("aten::_upsample_bicubic2d_aa", 18)
        size = helper._maybe_get_const(output_size, "is")
        if helper._is_value(size):  # a size computed from x.shape (NaFlexViT's grid): the traced one, as the
            traced = g.original_node.outputsAt(0).type()  # input's height and width are fixed in the file
            known = traced.varyingSizes() if isinstance(traced, torch._C.TensorType) else None
            if not known or None in known[2:]:
                return helper._unimplemented("aten::_upsample_bicubic2d_aa", "an output size the trace does not "
                                             "know", tensor)
            size = known[2:]
        sizes = g.op("Concat", g.op("Slice", g.op("Shape", tensor), g.op("Constant", value_t=torch.tensor([0])),
                                    g.op("Constant", value_t=torch.tensor([2]))),
                     g.op("Constant", value_t=torch.tensor(list(size), dtype=torch.int64)), axis_i=0)
        corners = helper._maybe_get_const(align_corners, "b")
        return g.op("Resize", tensor, g.op("Constant", value_t=torch.tensor([], dtype=torch.float32)),
                    g.op("Constant", value_t=torch.tensor([], dtype=torch.float32)), sizes, mode_s="cubic",
                    cubic_coeff_a_f=-0.5, antialias_i=1, exclude_outside_i=1,
                    coordinate_transformation_mode_s="align_corners" if corners else "half_pixel")

    def rms_norm(g, tensor, normalized_shape, weight, eps):
        # F.rms_norm (timm's RmsNorm: Gemma 4's ViT): ONNX has RMSNormalization only from opset 23, so its
        # definition, x / sqrt(mean(x^2 over the normalised axes) + eps) * weight, eps torch's default when None
        shape = helper._get_const(normalized_shape, "is", "normalized_shape")
        axes = list(range(-len(shape), 0))
        epsilon = torch.finfo(torch.float32).eps if helper._is_none(eps) else helper._get_const(eps, "f", "eps")
        square = g.op("Mul", tensor, tensor)
        mean = g.op("ReduceMean", square, g.op("Constant", value_t=torch.tensor(axes)), keepdims_i=1) \
            if opset >= 18 else g.op("ReduceMean", square, axes_i=axes, keepdims_i=1)
        root = g.op("Sqrt", g.op("Add", mean, g.op("Constant", value_t=torch.tensor(epsilon, dtype=torch.float32))))
        normed = g.op("Div", tensor, root)
        return normed if helper._is_none(weight) else g.op("Mul", normed, weight)

    ops = [("aten::adaptive_avg_pool2d", adaptive_avg_pool2d, opset), ("aten::rms_norm", rms_norm, opset),
           ("aten::_upsample_bicubic2d_aa", bicubic_antialiased, opset)] + \
        ([("aten::col2im", col2im, opset)] if opset >= 18 else [])
    for name, function, version in ops:
        torch.onnx.register_custom_op_symbolic(name, function, version)
    try:
        yield
    finally:
        for name, _, version in ops:
            torch.onnx.unregister_custom_op_symbolic(name, version)


@contextlib.contextmanager
def _native_stderr_as_warnings():
    """torch.onnx's C++ passes print their notices ("In-place op on output of tensor.shape") straight to the
    process's stderr, past Python's warnings: file descriptor 2 goes to a temporary file while the exporter
    runs, and each line it got comes out afterwards as our warning, so that stderr holds only our lines."""
    import sys

    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (an embedded interpreter): nothing to capture
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            if text.strip():
                from .api import _warn

                for line in text.splitlines():
                    if line.strip():
                        _warn(f"torch.onnx: {line.strip()}")


@contextlib.contextmanager
def warnings_quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def name_torch_layers(graph, weight_names: dict | None = None) -> list[str]:
    """Conv node name = module name, from its weight (``features.0.weight``) or its scope."""
    initializers = {i.name for i in graph.initializer}
    mapping = {}
    for node in graph.node:
        if node.op_type not in onnx_passes.CONV_OPS:
            continue
        weight = (weight_names or {}).get(node.name) or (node.input[1] if len(node.input) > 1 else "")
        if weight.endswith(".weight"):
            mapping[node.name] = weight[: -len(".weight")]
            continue
        if weight in initializers and weight.endswith(".weight"):
            mapping[node.name] = weight[: -len(".weight")]
        else:  # "/features/features.0/Conv" -> "features.0", "/layer1/layer1.0/conv1/Conv" -> "layer1.0.conv1"
            from inspector.graph import scoped_layer

            mapping[node.name] = scoped_layer(node.name) or node.name
    return onnx_passes.name_layers(graph, mapping)
