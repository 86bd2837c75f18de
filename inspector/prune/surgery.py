"""Rewrite the graph for a plan: slice weights, fold constant channels into biases, fix shape constants.

Works on a copy of the light model (``OnnxFile.model``: a few kilobytes, its
large weights still references into the original file). Every tensor it
changes becomes a payload array, written by ``write.py``; every tensor it does
not change is copied straight from the original file when the model is written.
An initializer keeps its name when only the edited node reads it; a shared one
gets a new name for the edited reader, so the other readers keep the original.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .trace import Plan


@dataclass
class Surgery:
    model: object  # onnx.ModelProto, light: changed initializers carry no data
    payloads: dict[str, np.ndarray]  # name -> data of each changed or new initializer
    weight_shapes: dict[int, tuple]  # node index -> (before, after) weight shapes of every edited conv/dense
    removed_filters: dict[int, list[int]] = field(default_factory=dict)  # conv node -> removed filter indices
    folded: dict[int, int] = field(default_factory=dict)  # node -> constant input channels folded into its bias
    computed: list[str] = field(default_factory=list)  # computed weights (Cast -> Mul...) now stored as values


def _np_dtype(data_type: int):
    import onnx

    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))


class _Editor:
    def __init__(self, plan: Plan):
        import onnx

        self.plan = plan
        self.tracer = plan.tracer
        self.model = onnx.ModelProto()
        self.model.CopyFrom(self.tracer.file.model)
        self.graph = self.model.graph
        self.nodes = self.graph.node  # same order as tracer.nodes
        self.payloads: dict[str, np.ndarray] = {}
        self.headers: dict[str, object] = {}
        self.computed: set[str] = set()  # tensors computed from constants (Cast -> Mul...) replaced by values
        self.names = {t.name for t in self.graph.initializer} | {o for n in self.nodes for o in n.output}
        self.names |= {i.name for i in self.graph.input}

    def value(self, node_index: int, position: int):
        name = self.nodes[node_index].input[position]
        if name in self.payloads:
            return self.payloads[name]
        return self.tracer.const(name)

    def dtype_of(self, name: str, fallback=np.float32):
        init = self.tracer.initializers.get(name)
        if init is not None:
            return _np_dtype(init.data_type)
        value = self.tracer.const(name)
        return value.dtype if value is not None else np.dtype(fallback)

    def set_input(self, node_index: int, position: int, array: np.ndarray, like: str | None = None) -> None:
        """Node input ``position`` reads ``array`` from now on."""
        import onnx

        node = self.nodes[node_index]
        name = node.input[position] if position < len(node.input) else ""
        dtype = self.dtype_of(name or like or "")
        array = np.require(np.asarray(array).astype(dtype, copy=False), requirements="C")  # 0-d stays 0-d
        readers = sum(list(n.input).count(name) for n in self.nodes) if name else 0
        in_place = (name and name in self.tracer.initializers and readers == 1 and name not in self.payloads
                    and name not in {o.name for o in self.graph.output})
        if name and self.tracer.computed(name):
            self.computed.add(name)
        if not in_place:
            base = (name or (like or node.output[0]) + "_bias") + "_pruned"
            new, k = base, 1
            while new in self.names:
                k += 1
                new = f"{base}{k}"
            self.names.add(new)
            while len(node.input) <= position:
                node.input.append("")
            node.input[position] = new
            name = new
        header = onnx.TensorProto()
        header.name = name
        header.data_type = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
        header.dims.extend(array.shape)
        self.payloads[name] = array
        self.headers[name] = header

    def finish(self) -> None:
        """Swap in the new initializer headers; drop what no node reads any more."""
        import onnx

        graph = self.graph
        kept = [t for t in graph.initializer if t.name not in self.headers]
        kept += list(self.headers.values())
        outputs = {o.name for o in graph.output}
        read_before = {name for node in self.tracer.nodes for name in node.input if name} | outputs
        read = {name for node in graph.node for name in node.input if name} | outputs
        # Only what the rewiring orphaned goes (Constant nodes whose value moved into an initializer,
        # weights replaced under a new name); whatever the model already left unused stays as it was.
        # Constant nodes and the nodes that computed a replaced weight from constants (Cast -> Mul,
        # DequantizeLinear) go with it, back to the stored tensors they read.
        orphaned = read_before - read
        while True:
            dropped = [n for n in graph.node if n.output and (
                (n.op_type == "Constant" and any(o in orphaned for o in n.output))
                or all(o in orphaned and self.tracer.computed(o) for o in n.output))]
            if not dropped:
                break
            gone = {id(n) for n in dropped}
            alive_nodes = [n for n in graph.node if id(n) not in gone]
            del graph.node[:]
            graph.node.extend(alive_nodes)
            read = {name for node in graph.node for name in node.input if name} | outputs
            orphaned = read_before - read
        kept = [t for t in kept if t.name not in orphaned]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        shapes = {t.name: t for t in kept}
        inputs = []
        for entry in graph.input:  # IR < 4 lists initializers among the inputs too
            if entry.name in self.tracer.initializers and entry.name not in shapes:
                continue
            if entry.name in self.headers:
                dims = entry.type.tensor_type.shape
                del dims.dim[:]
                for d in self.headers[entry.name].dims:
                    dims.dim.add().dim_value = d
            inputs.append(entry)
        if self.model.ir_version < 4:  # IR 3: every initializer is also a graph input
            listed = {entry.name for entry in inputs}
            for name, header in self.headers.items():
                if name not in listed and name in shapes:
                    inputs.append(onnx.helper.make_tensor_value_info(name, header.data_type, list(header.dims)))
        del graph.input[:]
        graph.input.extend(inputs)
        # Shapes recorded for traced tensors are stale where channels went.
        changed = {t for t in self.tracer.carriers if not self.plan.keep(t).all()}
        stale = [v for v in graph.value_info if v.name not in changed]
        del graph.value_info[:]
        graph.value_info.extend(stale)


def _fold(carrier, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions removed with a non-zero constant value, those values)."""
    gone = ~keep & ~np.isnan(carrier.values) & (carrier.values != 0)
    return np.flatnonzero(gone), carrier.values[gone]


def apply(plan: Plan) -> Surgery:
    ed = _Editor(plan)
    tracer = plan.tracer
    convs: dict[int, dict] = {}
    shapes: dict[int, tuple] = {}
    folded: dict[int, int] = {}
    for source in tracer.sources:
        keep = plan.keep(source.output)
        if not keep.all():
            convs.setdefault(source.node, {})["out"] = keep
    for use in tracer.uses:
        node = ed.nodes[use.node]
        carrier = tracer.carriers[use.tensor]
        keep = plan.keep(use.tensor)
        if use.kind == "conv_in" and not keep.all():
            convs.setdefault(use.node, {})["in"] = keep
            positions, consts = _fold(carrier, keep)
            if len(positions):
                weights = np.asarray(tracer.const(node.input[1]), np.float64)
                summed = weights[:, positions].reshape(weights.shape[0], len(positions), -1).sum(axis=2)
                convs[use.node]["fold"] = summed @ consts
                folded[use.node] = int(np.unique(carrier.ids[positions]).size)  # channels, not flattened features
        elif use.kind == "convT_in" and not keep.all():
            weights = np.asarray(ed.value(use.node, 1))
            ed.set_input(use.node, 1, weights[keep])
            shapes[use.node] = (tuple(weights.shape), tuple(weights[keep].shape))
        elif use.kind == "depthwise":
            out_keep = plan.keep(node.output[0])
            if not out_keep.all():
                convs.setdefault(use.node, {})["out"] = out_keep
                convs[use.node]["group"] = int(keep.sum())
        elif use.kind == "dense" and not keep.all():
            _dense(ed, use, carrier, keep, shapes, folded)
        elif use.kind == "const" and not keep.all():
            position = use.extra["input"]
            ed.set_input(use.node, position, np.compress(keep, ed.value(use.node, position), axis=use.extra["axis"]))
        elif use.kind == "batchnorm" and not keep.all():
            for position in range(1, 5):
                ed.set_input(use.node, position, np.asarray(ed.value(use.node, position)).reshape(-1)[keep])
        elif use.kind == "split" and not keep.all():
            _split(ed, use)
        elif use.kind == "reshape":
            features = int(plan.keep(use.tensor).sum())
            if features != use.extra["features"]:
                for name, flat_position, (reader, reader_input) in use.extra["entries"]:
                    value = np.array(ed.value(reader, reader_input))
                    value.reshape(-1)[flat_position] = features
                    ed.set_input(reader, reader_input, value)
    removed: dict[int, list[int]] = {}
    for index, edit in convs.items():
        node = ed.nodes[index]
        weights = np.asarray(tracer.const(node.input[1]))
        has_bias = len(node.input) > 2 and node.input[2]
        bias = np.asarray(tracer.const(node.input[2]), np.float64) if has_bias else np.zeros(weights.shape[0])
        out_keep = edit.get("out", np.ones(weights.shape[0], bool))
        in_keep = edit.get("in", np.ones(weights.shape[1], bool))
        new_weights = weights[out_keep][:, in_keep]
        ed.set_input(index, 1, new_weights)
        if "fold" in edit:
            bias = bias + edit["fold"]
        if has_bias or "fold" in edit:
            ed.set_input(index, 2, bias[out_keep], like=node.input[1])
        if "group" in edit:
            for attr in node.attribute:
                if attr.name == "group":
                    attr.i = edit["group"]
        shapes[index] = (tuple(weights.shape), tuple(new_weights.shape))
        removed[index] = [int(i) for i in np.flatnonzero(~out_keep)]
    ed.finish()
    return Surgery(ed.model, {n: ed.payloads[n] for n in ed.headers if n in {t.name for t in ed.graph.initializer}},
                   shapes, removed, folded, sorted(ed.computed))


def _dense(ed: _Editor, use, carrier, keep, shapes, folded) -> None:
    node = ed.nodes[use.node]
    matrix = np.asarray(ed.value(use.node, 1))
    rows = matrix.T if use.extra["transB"] else matrix  # (features, outputs)
    positions, consts = _fold(carrier, keep)
    new_matrix = matrix[:, keep] if use.extra["transB"] else matrix[keep]
    ed.set_input(use.node, 1, new_matrix)
    shapes[use.node] = (tuple(matrix.shape), tuple(new_matrix.shape))
    if not len(positions):
        return
    folded[use.node] = int(np.unique(carrier.ids[positions]).size)  # channels, not flattened features
    fold = consts @ np.asarray(rows[positions], np.float64)  # (outputs,)
    kind = use.extra["bias"]
    if kind[0] == "gemm":
        has_c = len(node.input) > 2 and node.input[2]
        beta = float(next((a.f for a in node.attribute if a.name == "beta"), 1.0)) if has_c else 1.0
        alpha = float(next((a.f for a in node.attribute if a.name == "alpha"), 1.0))
        fold = fold * alpha / (beta or 1.0)
        if has_c:
            c = np.asarray(ed.value(use.node, 2), np.float64)
            ed.set_input(use.node, 2, (np.broadcast_to(c, np.broadcast_shapes(c.shape, fold.shape)) + fold))
        else:
            if beta == 0:
                for attr in node.attribute:
                    if attr.name == "beta":
                        attr.f = 1.0
            ed.set_input(use.node, 2, fold, like=node.input[1])
    else:
        _, add_index, other = kind
        add = ed.nodes[add_index]
        position = list(add.input).index(other)
        bias = np.asarray(ed.value(add_index, position), np.float64)
        ed.set_input(add_index, position, bias + fold.reshape(bias.shape))


def _split(ed: _Editor, use) -> None:
    import onnx

    node = ed.nodes[use.node]
    sizes = np.array([int(ed.plan.keep(out).sum()) for out in node.output], np.int64)
    source = use.extra["source"]
    opset = next((o.version for o in ed.model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if source == "input":
        ed.set_input(use.node, 1, sizes)
    elif source == "attribute" or opset < 13:
        attrs = [a for a in node.attribute if a.name != "split"]
        del node.attribute[:]
        node.attribute.extend(attrs)
        node.attribute.append(onnx.helper.make_attribute("split", sizes.tolist()))
    else:
        attrs = [a for a in node.attribute if a.name != "num_outputs"]
        del node.attribute[:]
        node.attribute.extend(attrs)
        name = node.output[0] + "_split_sizes"
        while len(node.input) < 2:
            node.input.append("")
        node.input[1] = ""
        ed.names.add(name)
        ed.payloads[name] = sizes
        header = onnx.TensorProto(name=name, data_type=onnx.TensorProto.INT64, dims=[len(sizes)])
        ed.headers[name] = header
        node.input[1] = name
