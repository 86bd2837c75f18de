"""Cut a (light) model down to what some tensors depend on.

A session that serves feature maps needs only the nodes between the input and
the requested tensors: for VGG16 the conv trunk is 59 MB of a 528 MB file and
the fully connected head is the rest. ``cut`` keeps the ancestors of the
requested tensors, the initializers, inputs and value_info they use, and makes
the graph outputs exactly those tensors. It works on the light model of
``onnxfile`` (weights are external references), so the weights of the nodes
it drops are never read, by us or by onnxruntime.
"""

from __future__ import annotations

from typing import Iterable


def subgraph_inputs(node) -> set[str]:
    """Every tensor name a node's subgraphs (If/Loop/Scan bodies, any depth) read.

    A body may read outer-scope tensors by name without listing them as node
    inputs. Names the body defines itself are included too: harmless, since
    only names the outer graph produces or holds are followed.
    """
    names: set[str] = set()
    for attribute in node.attribute:
        graphs = list(attribute.graphs)
        if attribute.HasField("g"):
            graphs.append(attribute.g)
        for graph in graphs:
            for inner in graph.node:
                names.update(name for name in inner.input if name)
                names |= subgraph_inputs(inner)
            names.update(output.name for output in graph.output)
    return names


def ancestors(graph, tensors: Iterable[str]) -> tuple[list[int], set[str]]:
    """(indices of the nodes the tensors depend on, in graph order; every tensor name they read or make)."""
    producer: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.output:
            if name:
                producer[name] = index
    needed: set[str] = set()
    kept: set[int] = set()
    stack = [name for name in tensors if name]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        index = producer.get(name)
        if index is None or index in kept:
            continue  # a graph input, an initializer, or a node already followed
        kept.add(index)
        node = graph.node[index]
        stack.extend(n for n in node.input if n and n not in needed)
        stack.extend(n for n in subgraph_inputs(node) if n not in needed)
        needed.update(n for n in node.output if n)
    return sorted(kept), needed


def cut(model, tensors: list[str], keep_inputs: Iterable[str] = ()):
    """A copy of ``model`` holding only what ``tensors`` depend on, with exactly ``tensors`` as outputs.

    ``keep_inputs``: graph inputs kept even if nothing kept reads them (the
    input that is fed, since onnxruntime refuses a feed for an unknown input).
    A requested tensor that already is a graph output keeps its declared type;
    the others get none (onnxruntime infers it: uint8 for QLinearConv).
    """
    import onnx
    from onnx import helper

    tensors = list(dict.fromkeys(tensors))
    graph = model.graph
    kept, needed = ancestors(graph, tensors)
    keep_inputs = set(keep_inputs)

    cut_model = onnx.ModelProto()
    cut_model.CopyFrom(model)
    # Rebuild the graph's repeated fields from the original; everything else (name, doc, metadata) stays.
    out = cut_model.graph
    for field in ("node", "initializer", "sparse_initializer", "input", "output", "value_info"):
        out.ClearField(field)
    out.node.extend(graph.node[i] for i in kept)
    out.initializer.extend(t for t in graph.initializer if t.name in needed)
    out.sparse_initializer.extend(t for t in graph.sparse_initializer if t.values.name in needed)
    out.input.extend(i for i in graph.input if i.name in needed or i.name in keep_inputs)
    out.value_info.extend(v for v in graph.value_info if v.name in needed)
    declared = {o.name: o for o in graph.output}
    for name in tensors:
        out.output.append(declared[name] if name in declared else helper.make_empty_tensor_value_info(name))
    return cut_model
