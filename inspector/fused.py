"""Maps of a QDQ model from onnxruntime's own int8 kernels, not from a float simulation of them.

onnxruntime runs a QDQ model fast by fusing each ``DequantizeLinear -> Conv -> QuantizeLinear`` into
one integer ``QLinearConv``, but only when no tensor inside the group is a graph output: asking for
the dequantized activations of every layer turned the whole int8 VGG16 back into float convs with
fake quantization around them, four times slower, and not the kernels the model ships with.

So for a QDQ model run on the CPU, onnxruntime first optimises the model as it is (its fusions,
written out with ``optimized_model_filepath``); in that graph each fused ``QLinearConv`` keeps the
conv node's name, and its integer output is exactly the tensor the QuantizeLinear -> DequantizeLinear
pair after the conv produced. That integer tensor becomes the graph output, and it is dequantized in
NumPy with the ``QLinearConv``'s own output scale and zero point. A layer that onnxruntime did not
fuse keeps its ordinary output; if a requested tensor is gone from the optimised graph, the plain
(unfused) session is used instead.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np


def wanted(layers, device: str) -> bool:
    """Worth trying: some layer shows a QuantizeLinear -> DequantizeLinear output, and the CPU runs it."""
    if device == "cuda":
        return False
    if device == "auto":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return False
    return any(layer.quantization == "qdq" and layer.output != layer.conv_output for layer in layers)


def fused_model(onnx_file, layers, outputs: list[str], verbose: bool = False):
    """(optimised model with the outputs added, {requested tensor: tensor to fetch}, {layer name: (scale, zero)})
    or None when the fused graph cannot give every requested tensor."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from .execution import session_options

    with tempfile.TemporaryDirectory(prefix="inspector-fused-") as folder:
        path = os.path.join(folder, "optimised.onnx")
        options = session_options(onnx_file.folder, verbose, relayout=False)  # extended: fusions, no NCHWc relayout
        options.optimized_model_filepath = path
        try:
            ort.InferenceSession(onnx_file.serialized(onnx_file.model), options, providers=["CPUExecutionProvider"])
            # Weights it did not rewrite still point into the model file (the light model's references).
            optimised = onnx.load(path, load_external_data=False)
        except Exception:  # noqa: BLE001 - the plain session reports a real problem with a clear message
            return None
    graph = optimised.graph
    produced = {out for node in graph.node for out in node.output} | {i.name for i in graph.input}
    inits = {init.name: init for init in graph.initializer}
    convs = {node.name: node for node in graph.node if node.op_type == "QLinearConv" and node.name}
    fetch: dict[str, str] = {}
    dequantizers: dict[str, tuple] = {}
    direct = _directly_requantized(onnx_file.model.graph, layers)
    for layer in layers:
        node = convs.get(layer.node_name) if layer.name in direct else None
        if node is not None and len(node.input) > 7 \
                and node.input[6] in inits and node.input[7] in inits:
            scale = numpy_helper.to_array(inits[node.input[6]]).astype(np.float32)
            zero = numpy_helper.to_array(inits[node.input[7]]).astype(np.float32)
            if scale.size != 1 or zero.size != 1:
                return None
            fetch[layer.output] = node.output[0]
            dequantizers[layer.name] = (np.float32(scale.reshape(())), np.float32(zero.reshape(())))
    if not fetch:
        return None
    for tensor in outputs:
        if tensor not in fetch and tensor not in produced:
            return None
    present = {o.name for o in graph.output}
    for tensor in dict.fromkeys(fetch.get(t, t) for t in outputs):
        if tensor not in present:
            graph.output.append(helper.make_empty_tensor_value_info(tensor))
    return optimised, fetch, dequantizers


def _directly_requantized(graph, layers) -> set[str]:
    """Layers whose shown tensor is ``DequantizeLinear(QuantizeLinear(conv output))``, or with a Relu between
    the conv and the QuantizeLinear: exactly what a fused QLinearConv outputs (in integers). A layout
    Transpose or an unfolded affine step in the chain would make the fused output another tensor."""
    producer = {out: node for node in graph.node for out in node.output}
    found = set()
    for layer in layers:
        if layer.quantization != "qdq" or layer.output_perm is not None or layer.affine:
            continue
        dequantize = producer.get(layer.output)
        quantize = producer.get(dequantize.input[0]) if dequantize is not None and dequantize.op_type == \
            "DequantizeLinear" else None
        if quantize is None or quantize.op_type != "QuantizeLinear":
            continue
        source = quantize.input[0]
        if source != layer.conv_output:
            activation = producer.get(source)
            if activation is None or activation.op_type != "Relu" or activation.input[0] != layer.conv_output:
                continue
        found.add(layer.name)
    return found
