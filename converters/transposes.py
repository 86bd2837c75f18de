"""Which Transposes left in a converted file our passes promised to remove, and which are the model's own.

Ours: layout Transposes, a pair NCHW -> NHWC -> NCHW (perms (0, 2, 3, 1) and (0, 3, 1, 2), either order)
joined by ops that work per position whatever the layout (a conv, elementwise ops, BatchNorm, LayerNorm or
a MatMul by a constant over the channels): tf2onnx's Transposes around each conv, ConvNeXt's channels-last
islands. The converters remove these; one left is a failure. The model's own: every other Transpose, the
permutes written in its forward (attention's heads, Swin's windows, ViT's tokens, a Swin stem that stays
channels-last through attention); they are counted and said, never a failure (`make zoo`).

In a file converted from torch (metadata ``inspector.source_framework``), only the first order is ours:
torch.onnx writes no layout Transposes of its own, and our passes take a channels-last island out of an
NCHW model (ConvNeXt's). The other order there, a channels-last model's ``permute(0, 3, 1, 2)`` before its
conv and back (timm's MambaOut, PVT v2, GCViT, VOLO, Sequencer), is the model's own: ONNX's Conv reads NCHW
only, and the channels-last stretches around it hold LayerNorms over the last axis. So is a pair whose
values are read elsewhere too (GCViT's stem: the normed map feeds its channels-last blocks as it is and, back
in NCHW, its global-query convs; VOLO's first block: the map before the norm feeds the residual): the model
uses both layouts, and our pass, like this count, takes only an island whose values leave it through the
closing Transposes.
"""

from __future__ import annotations

TO_NHWC, TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)
PER_POSITION = {"Conv", "ConvTranspose", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu", "Sigmoid",
                "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu", "Clip", "Elu", "Selu", "Softplus", "Exp", "Log",
                "Abs", "Neg", "Sqrt", "Pow", "Identity", "Cast", "BatchNormalization", "LayerNormalization",
                "MatMul", "Gemm", "ReduceMean", "Mish", "Swish", "Dropout"}


def _perm(node) -> tuple[int, ...] | None:
    for attribute in node.attribute:
        if attribute.name == "perm":
            return tuple(attribute.ints)
    return None


def classify(model) -> tuple[int, int]:
    """(layout Transposes, the model's own) in ``model`` (an onnx ModelProto; only its graph is read).

    The path between a pair follows an op only when its other inputs are constants (weights, a layer
    scale) or the same layout change of another tensor: a residual Add that brings in attention's output
    (Swin's stem, channels-last through its blocks) ends it."""
    graph = model.graph
    consumers: dict[str, list] = {}
    producer = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producer[name] = node
    constants = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    from_torch = any(p.key == "inspector.source_framework" and p.value == "torch" for p in model.metadata_props)

    def fits(node, entered: str, perm) -> bool:
        for name in node.input:
            if not name or name == entered or name in constants:
                continue
            source = producer.get(name)
            if source is None or not (source.op_type == "Constant" or
                                      source.op_type == "Transpose" and _perm(source) == perm):
                return False
        return True
    transposes = [n for n in graph.node if n.op_type == "Transpose"]
    layout: set[int] = set()
    for start in transposes:
        perm = _perm(start)
        if perm not in (TO_NHWC, TO_NCHW) or from_torch and perm == TO_NCHW:
            continue
        inverse = TO_NCHW if perm == TO_NHWC else TO_NHWC
        seen, todo, closing, leaves = set(), list(start.output), [], False
        while todo:
            entered = todo.pop()
            leaves |= entered in outputs
            for node in consumers.get(entered, []):
                if node.op_type == "Transpose" and _perm(node) == inverse:
                    closing.append(node)
                elif node.op_type in PER_POSITION and fits(node, entered, perm):
                    if id(node) not in seen:
                        todo.extend(node.output)
                else:
                    leaves = True
                seen.add(id(node))
        if closing and not (from_torch and leaves):
            layout.update({id(start), *(id(node) for node in closing)})
    return len(layout), len(transposes) - len(layout)
