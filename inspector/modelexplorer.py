"""The audit's dead fractions and diff's SQNR as Model Explorer node data, on the model's own graph.

Google's Model Explorer (``pip install ai-edge-model-explorer``) draws a model's graph and colours its
nodes with *node data* a user loads from a JSON file; its ONNX adapter (``pip install
model-explorer-onnx``) opens ``.onnx`` files. This module writes that JSON for one ONNX model: per conv
node, one number (the layer's dead fraction for ``audit``, its SQNR in dB for ``diff``) and thresholds
that colour the nodes.

The format, from ``model_explorer/node_data_builder.py`` of ai-edge-model-explorer 0.1.34 (its
``ModelNodeData.to_json_string``; none of its code is used here)::

    {GRAPH_ID: {"results": {NODE_ID: {"value": NUMBER}}, "name": ..., "thresholds":
                [{"value": NUMBER, "bgColor": CSS}], "hideAggregatedStats": ["sum"]}}

Thresholds are read in their order, the first whose value is at least the node's colouring it (the web
app's ``getBgColor``), so they are written ascending; a node above the last one stays white.

Which node a key lands on, from model-explorer-onnx 0.4.2 (``main.py``: ``convert``, ``create_graph``)
and the ``NameFixPass`` of onnx-ir 1.1.0 it runs first (``passes/common/naming.py``):

- the graph id is the main graph's name, or ``<main>`` when the file sets none (an empty name set
  explicitly stays the empty string);
- a node's id is its name after ``NameFixPass``: the main graph's nodes are visited in file order, each
  followed depth-first by the nodes of its subgraphs (If, Loop, Scan); a nameless node is called
  ``node``, a name already taken in its graph gets ``_1``, ``_2``, ... (one counter per base name shared
  by all graphs, each graph with its own set of taken names);
- keys that are output tensor names do *not* reach ONNX nodes: the web app maps them through an output
  metadata attribute ``tensor_name`` that the ONNX adapter does not write. So every key is a node id.

The ids come from the file as it is on disk (the light model read again), not from the graph inspector
rewrote in memory (lowered QONNX Quant nodes would shift the names of nameless nodes).
"""

from __future__ import annotations

import collections
import json
import math
import os

from .errors import InspectorError

MAIN_GRAPH = "<main>"  # the id of a main graph with no name (model-explorer-onnx's convert)
NAMELESS = "node"  # onnx-ir SimpleNameGenerator's name for a nameless node
FORMAT = "ai-edge-model-explorer 0.1.34 node_data_builder; model-explorer-onnx 0.4.2 node ids"
# Colours: light enough that Model Explorer's own choice of text colour (by luminance) stays dark.
GREEN, AMBER, ORANGE, RED = "#bbf7d0", "#fde68a", "#fdba74", "#fca5a5"
# Display bands of a layer's dead fraction (not verdicts: those are the audit's): none dead, up to a
# tenth, up to half, more.
DEAD_BANDS = ((0.0, GREEN), (0.1, AMBER), (0.5, ORANGE), (1.0, RED))
# Above diff's threshold by less than this many dB: amber (the error is within ~3x the allowed amplitude).
SQNR_MARGIN_DB = 10.0
# Group nodes show min/max/sum/avg of their children: a sum of fractions or of decibels means nothing.
HIDDEN_STATS = ["sum"]


# ------------------------------------------------------------------ node ids


def graph_id(model_proto) -> str:
    """The id Model Explorer's ONNX adapter gives the model's main graph."""
    graph = model_proto.graph
    return graph.name if graph.HasField("name") else MAIN_GRAPH


def node_ids(graph_proto) -> list[str]:
    """The adapter's id of every node of ``graph_proto`` (a GraphProto), in file order."""
    return _name_graph(graph_proto, collections.Counter())


def _name_graph(graph_proto, counter: collections.Counter) -> list[str]:
    from onnx import AttributeProto

    taken: set[str] = set()
    ids = []
    for node in graph_proto.node:
        if node.name and node.name not in taken:
            taken.add(node.name)
            ids.append(node.name)
        else:
            ids.append(_next_free(node.name or NAMELESS, taken, counter))
        for attr in node.attribute:  # subgraphs: their own taken names, the same counter
            if attr.ref_attr_name:
                continue
            if attr.type == AttributeProto.GRAPH:
                _name_graph(attr.g, counter)
            elif attr.type == AttributeProto.GRAPHS:
                for subgraph in attr.graphs:
                    _name_graph(subgraph, counter)
    return ids


def _next_free(base: str, taken: set[str], counter: collections.Counter) -> str:
    name = base
    while name in taken:
        counter[base] += 1
        name = f"{base}_{counter[base]}"
    taken.add(name)
    return name


def _on_disk(model):
    """The model's light ModelProto as the file holds it (inspector's in-memory graph may be rewritten)."""
    import mmap

    import onnx

    from .onnxfile import _Malformed, _strip_model  # the same reader OnnxFile uses, without its rewrites

    path = model.file.path
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            light = _strip_model(buf, os.path.basename(model.file.real_path))
        proto = onnx.ModelProto()
        proto.ParseFromString(light)
    except (OSError, ValueError, _Malformed) as exc:
        raise InspectorError(f"cannot read {path} again for Model Explorer's node names ({exc}); "
                             "was it changed while inspector ran?") from None
    return proto


def conv_node_ids(model) -> tuple[str, dict[int, str]]:
    """(the graph id, {layer index: node id}) of ``model``'s conv layers in Model Explorer's ONNX adapter.

    A layer's conv node is found in the file on disk by its output tensor (ONNX names each tensor once).
    """
    proto = _on_disk(model)
    ids = node_ids(proto.graph)
    by_output = {}
    for node, node_id in zip(proto.graph.node, ids):
        for output in node.output:
            if output:
                by_output[output] = node_id
    found = {}
    for layer in model.layers:
        if layer.conv_output not in by_output:
            raise InspectorError(f"conv node of layer {layer.name!r} not found in {model.file.path} on disk; "
                                 "was the file changed while inspector ran?")
        found[layer.index] = by_output[layer.conv_output]
    return graph_id(proto), found


# ------------------------------------------------------------------ node data


def _graph_data(name: str, results: dict[str, dict], thresholds: list[tuple[float, str]]) -> dict:
    return {
        "name": name,
        "results": results,
        "thresholds": [{"value": value, "bgColor": colour} for value, colour in thresholds],
        "hideAggregatedStats": list(HIDDEN_STATS),
    }


def layer_dead_fraction(layer, images: int) -> float | None:
    """A layer's share of dead units as the audit's ``dead_fraction`` counts them: dead filters, plus dead
    channels when judged and not refused by the verification; None for a layer of unknown filter count."""
    from .audit.verdicts import channels_judged

    if not layer.filters:
        return None
    return len(layer.dead_units(channels_judged(layer, images))) / layer.filters


def audit_node_data(result, model) -> dict:
    """Model Explorer node data for an ``AuditResult`` of ``model``: each conv node's dead fraction."""
    _same_model(result.model_path, model)
    graph, ids = conv_node_ids(model)
    results = {}
    for layer in result.layers:
        value = layer_dead_fraction(layer, result.images)
        if value is not None:
            results[ids[layer.index]] = {"value": value}
    return {graph: _graph_data("dead fraction (inspector audit)", results, list(DEAD_BANDS))}


def sqnr_thresholds(threshold_db: float, values: list[float]) -> list[tuple[float, str]]:
    """Red below diff's threshold (diff's test is strict, Model Explorer's is <=), amber within
    ``SQNR_MARGIN_DB`` above it, green up to the highest value written."""
    below = math.nextafter(threshold_db, -math.inf)
    margin = threshold_db + SQNR_MARGIN_DB
    return [(below, RED), (margin, AMBER), (max([margin, *values]), GREEN)]


def diff_node_data(result, model_a) -> tuple[dict, list[str]]:
    """Model Explorer node data for a ``DiffResult`` on ``model_a``'s graph (the reference, MODEL_A): each
    compared conv node's SQNR in dB, as the diff's JSON rounds it.

    Returns (the data, the names of the compared layers left out): JSON has no infinity, so a layer whose
    maps are identical (SQNR inf), whose reference maps are all zero (-inf) or that holds NaN gets no entry.
    """
    from .compare.metrics import db_json

    _same_model(result.path_a, model_a)
    graph, ids = conv_node_ids(model_a)
    results, left_out = {}, []
    for layer in result.compared():
        value = db_json(layer.sqnr())
        if isinstance(value, (int, float)):
            results[ids[layer.pair.a.index]] = {"value": value}
        else:
            left_out.append(f"{layer.pair.a.name} ({'no SQNR' if value is None else 'SQNR ' + value})")
    values = [entry["value"] for entry in results.values()]
    data = {graph: _graph_data(f"SQNR dB of {result.name_b} against {result.name_a} (inspector diff)", results,
                               sqnr_thresholds(result.threshold_db, values))}
    return data, left_out


def _same_model(path: str, model) -> None:
    if os.path.abspath(os.fspath(path)) != os.path.abspath(os.fspath(model.path)):
        raise InspectorError(f"the result is of {path}, not of {model.path}: pass the model it was computed on")


# ------------------------------------------------------------------ writing


def check_target(path: str, option: str = "--model-explorer") -> str:
    """Refuse an unwritable FILE before any work starts."""
    from .atomic import ensure_parent

    if path == "-":
        raise InspectorError(f"{option} writes a file: give a file name (Model Explorer loads it from disk)")
    if os.path.isdir(path):
        raise InspectorError(f"{option} {path} is a directory: give a file name such as overlay.json")
    return ensure_parent(path, option)


def write(path: str, data: dict) -> None:
    """Write node data as JSON, whole or not at all (temp file and rename)."""
    from .atomic import write_text

    text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    try:
        write_text(path, text)
    except OSError as exc:
        raise InspectorError(f"cannot write {path} ({exc.strerror or exc}); choose another --model-explorer "
                             "file") from None


def describe(data: dict) -> str:
    """One line for stderr: how many nodes of which graph."""
    (graph, graph_data), = data.items()
    return f"Model Explorer node data: {len(graph_data['results'])} conv node(s) of graph {graph!r}"
