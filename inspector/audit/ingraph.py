"""The audit's per-(image, channel) reductions appended to the ONNX graph itself.

A batch of VGG16's 13 maps is about 60 MB an image: copying them out of onnxruntime and reducing
them in NumPy cost more than the inference on a GPU. Here each audited layer's shown tensor, cast to
float32, feeds ReduceMax, ReduceMin and ReduceSum of itself, of its square, of its absolute value
(signed layers only) and of its nonzero-ness (the zero count), over every axis but batch and channel,
plus its Shape; the session returns only those (N, C) arrays, and onnxruntime frees each map once
its reductions have run instead of keeping all of them alive for the caller. That is the default
where onnxruntime runs on CUDA; on the CPU NumPy reduces the maps a little faster (see ``_IN_GRAPH``).

The figures are the ones ``activations.map_figures`` computes from the maps; a layer this cannot
serve keeps the map path (its maps come out and NumPy reduces them): a QDQ layer whose maps come
from onnxruntime's fused int8 kernels (``inspector.fused``; dequantized in NumPy), QLinearConv and
ConvInteger, a map that is not float32 (see ``float32_tensors``) or whose rank or layout is unknown,
a model below opset 6. A batch whose in-graph figures cannot be exact (a NaN or infinity in a map:
ReduceMax skips NaN where NumPy keeps it; 2**24 positions a map or more: the float32 count is no
longer exact) is run again through a plain session and reduced from its maps, so both paths give the
same audit.
"""

from __future__ import annotations

import numpy as np

from ..execution import FeatureMapSession, run as run_session, wants_cuda
from .activations import MapFigures

# None: the graph reduces the maps where onnxruntime runs on CUDA, NumPy reduces them on the CPU.
# Measured with VGG16 (24 images, batch 16, 5 paired rounds each): on an H100 the audit took 1.68 s
# in the graph against 2.40 s from the maps (every map crossing to the host), plain inference 3.05 s;
# on 2 CPU cores 4.75 s against 4.57 s (NumPy fuses passes that the graph makes separate nodes with
# map-sized temporaries), plain 5.38 s. The graph's path holds less memory (1.27 against 1.66 GB).
# True or False force one path for every device (the tests compare the two).
_IN_GRAPH: bool | None = None

# Cast takes its target type as a number from opset 6 (a string before).
MIN_OPSET = 6
# A float32 sum of ones is exact up to 2**24.
_EXACT_COUNT = 1 << 24
_IN_GRAPH_OPS = ("Conv", "ConvTranspose")


def ai_onnx_opset(model) -> int | None:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def batch_and_channel_axes(layer) -> tuple[int, int] | None:
    """(batch axis, channel axis) of the layer's shown tensor, or None when its layout is not known."""
    rank = len(layer.weight_shape)
    if rank < 3:
        return None
    perm = layer.output_perm
    if perm is None:
        return 0, 1
    if sorted(perm) != list(range(rank)):
        return None
    return perm.index(0), perm.index(1)


def reducible(layer, opset: int | None, dequantized: bool) -> bool:
    """Whether the graph can reduce this layer's maps (else they take the map path)."""
    return (not dequantized and opset is not None and opset >= MIN_OPSET and layer.op in _IN_GRAPH_OPS
            and layer.quantization != "qlinear" and batch_and_channel_axes(layer) is not None)


def float32_tensors(model, names: list[str]) -> set[str]:
    """Those of ``names`` that shape inference says are float32.

    Only those are reduced in the graph: onnxruntime runs float16 convs on the CPU in float32 between
    Casts, and drops a Cast pair (to float16 and back) that the statistics' own Cast would make, so the
    graph would see the values before their rounding to float16 where the maps hold them after.
    """
    from onnx import TensorProto, shape_inference

    wanted = set(names)
    if not wanted:
        return set()
    try:
        inferred = shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - a graph onnx cannot infer: every layer keeps the map path
        return set()
    return {v.name for v in (*inferred.value_info, *inferred.output, *inferred.input)
            if v.name in wanted and v.type.tensor_type.elem_type == TensorProto.FLOAT}


class _Names:
    """Fresh tensor names that collide with nothing in the graph."""

    def __init__(self, graph):
        self.taken = {name for node in graph.node for name in (*node.input, *node.output)}
        self.taken |= {t.name for t in graph.initializer} | {v.name for v in graph.input}
        self.taken |= {v.name for v in graph.output} | {v.name for v in graph.value_info}

    def __call__(self, wanted: str) -> str:
        name, suffix = wanted, 1
        while name in self.taken:
            suffix += 1
            name = f"{wanted}_{suffix}"
        self.taken.add(name)
        return name


def append_statistics(model, tensors: dict[str, tuple], opset: int) -> dict[str, dict[str, str]]:
    """Append the reductions of each tensor to ``model.graph`` (in place); the new outputs by tensor.

    ``tensors``: {tensor name: (rank, batch axis, channel axis, signed)}. Returns {tensor name:
    {figure: output name}} with the figures ``maximum``, ``minimum``, ``sums``, ``squares``,
    ``nonzero``, ``shape`` and, for signed tensors, ``abs_sums``; each (batch, channel) or (channel,
    batch) in axis order, ``shape`` the tensor's. The graph's outputs are left to the caller.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    fresh = _Names(graph)
    added: dict[str, dict[str, str]] = {}
    reductions: dict[str, list] = {}  # tensor -> the nodes that reduce it
    axes_inputs: dict[tuple[int, ...], str] = {}

    def axes_constant(axes: tuple[int, ...]) -> str:
        if axes not in axes_inputs:
            name = fresh("inspector_stats_axes_" + "_".join(map(str, axes)))
            graph.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), name))
            axes_inputs[axes] = name
        return axes_inputs[axes]

    def reduce(op: str, source: str, axes: tuple[int, ...], output: str):
        # axes: an attribute until opset 13 (ReduceSum) or 18 (the others), an input since.
        if opset >= (13 if op == "ReduceSum" else 18):
            return helper.make_node(op, [source, axes_constant(axes)], [output], keepdims=0, name=output)
        return helper.make_node(op, [source], [output], axes=list(axes), keepdims=0, name=output)

    for index, (tensor, (rank, batch_axis, channel_axis, signed)) in enumerate(tensors.items()):
        axes = tuple(a for a in range(rank) if a not in (batch_axis, channel_axis))
        stem = f"inspector_stats_{index}"
        # float32 like the map path; onnxruntime removes the Cast when the tensor already is float32.
        value = fresh(stem + "_float")
        nodes = [helper.make_node("Cast", [tensor], [value], to=TensorProto.FLOAT, name=value)]
        outputs = {figure: fresh(f"{stem}_{figure}") for figure in
                   ("maximum", "minimum", "sums", "squares", *(("abs_sums",) if signed else ()), "nonzero", "shape")}
        # ReduceSum has onnxruntime's fast kernel, ReduceSumSquare, ReduceL1 and Sign do not: Mul, Abs and a
        # Cast to bool (false for +0 and -0 alone, true for NaN as in NumPy) in front of ReduceSum are 2-5x faster.
        squared, absolute = fresh(stem + "_squared"), fresh(stem + "_absolute")
        nonzero_bool, nonzero_float = fresh(stem + "_nonzero_bool"), fresh(stem + "_nonzero_float")
        nodes += [reduce("ReduceMax", value, axes, outputs["maximum"]),
                  reduce("ReduceMin", value, axes, outputs["minimum"]),
                  reduce("ReduceSum", value, axes, outputs["sums"]),
                  helper.make_node("Mul", [value, value], [squared], name=squared),
                  reduce("ReduceSum", squared, axes, outputs["squares"])]
        if signed:
            nodes += [helper.make_node("Abs", [value], [absolute], name=absolute),
                      reduce("ReduceSum", absolute, axes, outputs["abs_sums"])]
        nodes += [helper.make_node("Cast", [value], [nonzero_bool], to=TensorProto.BOOL, name=nonzero_bool),
                  helper.make_node("Cast", [nonzero_bool], [nonzero_float], to=TensorProto.FLOAT, name=nonzero_float),
                  reduce("ReduceSum", nonzero_float, axes, outputs["nonzero"]),
                  helper.make_node("Shape", [tensor], [outputs["shape"]], name=outputs["shape"])]
        reductions[tensor] = nodes
        added[tensor] = outputs
    # At the end: onnxruntime orders the nodes itself (placed after each producer, the peak was the same).
    graph.node.extend(node for nodes in reductions.values() for node in nodes)
    return added


def statistics_session(model, layers, signed, device: str = "auto", verbose: bool = False,
                       maps_too: bool = False, in_graph: bool | None = None) -> StatisticsSession:
    """A ``StatisticsSession`` over ``layers`` of ``model`` (an ``inspector.Model``); ``in_graph``: True
    or False chooses the path, None leaves it to ``_IN_GRAPH`` (by default: the graph on CUDA)."""
    return StatisticsSession(model.file, layers, model.input, device, verbose, model._dequantizers(layers), signed,
                             maps_too, in_graph)


class StatisticsSession(FeatureMapSession):
    """``run(batch)`` gives ``({layer name: MapFigures}, {layer name: maps})``: every layer in one of the two.

    The layers the graph reduces (``in_graph``) come as figures, the others as (N, C, ...) float32
    maps, as ``FeatureMapSession.run`` returns them. ``signed``: names of the layers whose outputs
    may be negative (their absolute sums are computed too). ``maps_too``: every layer's maps come
    out as well (the report draws them and takes the audit's own figures).
    """

    def __init__(self, onnx_file, layers, model_input, device="auto", verbose=False, dequantizers=None,
                 signed=frozenset(), maps_too: bool = False, in_graph: bool | None = None):
        self.signed = frozenset(signed)
        self.in_graph_wanted = in_graph
        self.maps_too = maps_too
        self.in_graph: list = []
        self.map_layers = list(layers)
        self.figure_outputs: dict[str, dict[str, str]] = {}
        self._map_session = None
        self._session_args = (onnx_file, layers, model_input, device, verbose, dequantizers)
        super().__init__(onnx_file, layers, model_input, device, verbose, dequantizers)

    def finish_graph(self, model):
        opset = ai_onnx_opset(model)
        wanted = self.in_graph_wanted
        if wanted is None:
            wanted = wants_cuda(self._session_args[3]) if _IN_GRAPH is None else _IN_GRAPH
        chosen = [layer for layer in self.layers
                  if wanted and reducible(layer, opset, layer.name in self.dequantizers)]
        floats = float32_tensors(model, [self.fetch.get(layer.output, layer.output) for layer in chosen])
        chosen = [layer for layer in chosen if self.fetch.get(layer.output, layer.output) in floats]
        tensors = {}
        for layer in chosen:
            tensor = self.fetch.get(layer.output, layer.output)
            if tensor not in tensors:
                tensors[tensor] = (len(layer.weight_shape), *batch_and_channel_axes(layer), layer.name in self.signed)
            else:  # two layers showing one tensor: reduce it once, signed if either is
                rank, batch_axis, channel_axis, signed = tensors[tensor]
                tensors[tensor] = (rank, batch_axis, channel_axis, signed or layer.name in self.signed)
        if not tensors:
            return model
        added = append_statistics(model, tensors, opset)
        self.in_graph = chosen
        self.figure_outputs = {layer.name: added[self.fetch.get(layer.output, layer.output)] for layer in chosen}
        reduced = set() if self.maps_too else {layer.name for layer in chosen}
        self.small_outputs = len(reduced) == len(self.layers)  # no maps come out
        kept = [self.fetch.get(layer.output, layer.output) for layer in self.layers if layer.name not in reduced]
        self.map_layers = [layer for layer in self.layers if layer.name not in reduced]
        self.outputs = [layer.output for layer in self.map_layers]
        from onnx import helper

        declared = {o.name: o for o in model.graph.output}
        model.graph.ClearField("output")
        names = list(dict.fromkeys([*kept, *(name for figures in added.values() for name in figures.values())]))
        model.graph.output.extend(declared[name] if name in declared else helper.make_empty_tensor_value_info(name)
                                  for name in names)
        return model

    def run(self, batch: np.ndarray) -> tuple[dict[str, MapFigures], dict[str, np.ndarray]]:
        if not self.in_graph:
            return {}, super().run(batch)
        feeds = self.feeds(batch)  # inspector.inputs: a fixed batch filled, other inputs fed
        figure_names = (name for figures in self.figure_outputs.values() for name in figures.values())
        fetched = list(dict.fromkeys([*(self.fetch.get(name, name) for name in self.outputs), *figure_names]))
        values = run_session(self.session, feeds, fetched)
        figures = {}
        for layer in self.in_graph:
            found = _figures(layer, {figure: values[name] for figure, name in self.figure_outputs[layer.name].items()})
            if found is None:  # not exact in float32: this batch's maps, reduced by NumPy
                return {}, self._maps(batch)
            figures[layer.name] = found
        maps = {layer.name: self.map_of(layer, values[self.fetch.get(layer.output, layer.output)])
                for layer in self.map_layers}
        return figures, maps

    def _maps(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every layer's maps from a plain session (made on the first batch that needs it)."""
        if self._map_session is None:
            self._map_session = FeatureMapSession(*self._session_args)
        return self._map_session.run(batch)


def _figures(layer, values: dict[str, np.ndarray]) -> MapFigures | None:
    """The layer's figures as (N, C) arrays, or None when the float32 graph cannot have them exactly."""
    batch_axis, channel_axis = batch_and_channel_axes(layer)
    shape = [int(d) for d in values.pop("shape")]
    per_map = int(np.prod([d for axis, d in enumerate(shape) if axis not in (batch_axis, channel_axis)],
                          dtype=np.int64))
    if batch_axis > channel_axis:  # e.g. a (C, N, H, W) tensor: the reductions come out (C, N)
        values = {figure: array.T for figure, array in values.items()}
    sums, squares, nonzero = values["sums"], values["squares"], values["nonzero"]
    if per_map >= _EXACT_COUNT or not (np.isfinite(sums).all() and np.isfinite(squares).all()
                                       and np.isfinite(nonzero).all()):
        return None
    zeros = per_map - nonzero.astype(np.int64)
    return MapFigures(per_map, values["maximum"], values["minimum"], sums, values.get("abs_sums"), squares, zeros)
