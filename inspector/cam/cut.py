"""The part of a graph after one tensor, as a model of its own (for AblationCAM).

``tail_model`` keeps the nodes the target tensor needs, walking back from it
and stopping at the cut tensor, which becomes the new model's input. A tensor
on the way that depends on the original input by another path (the skip
connection around a residual block, a second branch) becomes an input too, fed
from the first run. Anything that does not depend on the input (weights,
constants, shape arithmetic on them) is kept as it is; initializers stay
external references into the model file, so no weight is copied.
"""

from __future__ import annotations

from ..errors import InspectorError


def _forward_closure(graph, start: str) -> set[str]:
    """Every tensor computed from ``start`` (``start`` included)."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(node)
    seen, stack = {start}, [start]
    while stack:
        for node in consumers.get(stack.pop(), []):
            for out in node.output:
                if out and out not in seen:
                    seen.add(out)
                    stack.append(out)
    return seen


class Plan:
    """Which nodes, initializers and extra inputs the part of a graph after ``cut`` needs for ``target``."""

    def __init__(self, nodes: list, fed: list[str], initializers: list, cut: str, target: str):
        self.nodes, self.fed, self.initializers, self.cut, self.target = nodes, fed, initializers, cut, target


def plan(model, cut: str, target: str, model_input: str) -> Plan:
    """Walk back from ``target`` to ``cut``. Raises InspectorError where the graph cannot be cut there."""
    import onnx

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output if out}
    initializers = {t.name for t in graph.initializer}
    from_input = _forward_closure(graph, model_input)
    after_cut = _forward_closure(graph, cut)
    other_inputs = {i.name for i in graph.input} - initializers - {model_input}
    if target not in after_cut:
        raise InspectorError(f"the scored tensor '{target}' does not depend on the target layer; "
                             "AblationCAM cannot run there: use --method scorecam")
    kept, fed, needed = set(), [], set()
    seen, stack = set(), [target]
    while stack:
        tensor = stack.pop()
        if tensor in seen or not tensor or tensor == cut:
            continue
        seen.add(tensor)
        if tensor in initializers:
            needed.add(tensor)
            continue
        if tensor in from_input and tensor not in after_cut:
            fed.append(tensor)  # reaches the input by another path (a skip connection): fed from the first run
            continue
        if tensor in other_inputs:
            fed.append(tensor)  # the model's other inputs (a shape, a scale factor): filled as for the whole model
            continue
        node = producer.get(tensor)
        if node is None:
            raise InspectorError(f"tensor '{tensor}' after the target layer has no producer; AblationCAM cannot "
                                 "cut this graph: use --method scorecam")
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise InspectorError(f"the graph after the target layer holds a {node.op_type} node with a subgraph; "
                                 "AblationCAM cannot cut it: use --method scorecam")
        if id(node) not in kept:
            kept.add(id(node))
            stack.extend(node.input)
    nodes = [node for node in graph.node if id(node) in kept]  # graph order is topological
    return Plan(nodes, sorted(fed), [t for t in graph.initializer if t.name in needed], cut, target)


def build(model, cut_plan: Plan, dtypes: dict):
    """The ModelProto of a plan: inputs ``cut`` then ``plan.fed``, one output ``target``.

    ``dtypes``: numpy dtype of every input, from the first run's values.
    """
    from onnx import helper

    names = [cut_plan.cut, *cut_plan.fed]
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(dtypes[name]), None)
              for name in names]
    graph = helper.make_graph(cut_plan.nodes, "inspector_cam_tail", inputs,
                              [helper.make_empty_tensor_value_info(cut_plan.target)], cut_plan.initializers)
    result = helper.make_model(graph, opset_imports=list(model.opset_import))
    result.ir_version = model.ir_version
    result.functions.extend(model.functions)
    return result
