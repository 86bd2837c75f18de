"""Check an overlay written by ``--model-explorer`` with Model Explorer's own code (not a dependency).

    python3 -m venv /tmp/me && /tmp/me/bin/pip install ai-edge-model-explorer model-explorer-onnx
    /tmp/me/bin/python tools/check_modelexplorer.py MODEL.onnx OVERLAY.json

1. the overlay loads into ``model_explorer.node_data_builder``'s dataclasses (dacite, strict, types
   checked) and the builder writes every field of it back unchanged;
2. every key is the id of a conv node in the graph of that id that model-explorer-onnx's adapter builds
   from MODEL.onnx (``ONNXAdapter().convert``).

Exit 0 and one line per graph when it holds; an AssertionError naming the key otherwise. Checked this
way by hand: ai-edge-model-explorer 0.1.34, model-explorer-onnx 0.4.2, onnx-ir 1.1.0 (docs/audit.md).
"""

from __future__ import annotations

import json
import sys

CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")


def main(model_path: str, overlay_path: str) -> int:
    import dacite
    from model_explorer import node_data_builder as builder
    from model_explorer_onnx.main import ONNXAdapter

    with open(overlay_path) as handle:
        data = json.load(handle)
    strict = dacite.Config(strict=True, check_types=True)
    graphs = {graph: dacite.from_dict(builder.GraphNodeData, value, config=strict) for graph, value in data.items()}
    written = json.loads(builder.ModelNodeData(graphsData=graphs).to_json_string())
    for graph, value in data.items():  # the builder adds its defaults; ours come back unchanged
        assert {key: written[graph][key] for key in value} == value, f"graph {graph!r}: the builder changed it"

    converted = ONNXAdapter().convert(model_path, {})
    nodes_by_graph = {graph.id: {node.id: node for node in graph.nodes} for graph in converted["graphs"]}
    for graph, value in data.items():
        assert graph in nodes_by_graph, f"graph {graph!r} is not among the adapter's {list(nodes_by_graph)}"
        nodes = nodes_by_graph[graph]
        for key in value["results"]:
            assert key in nodes, f"{key!r} is no node of graph {graph!r}"
            assert nodes[key].label in CONV_OPS, f"{key!r} is a {nodes[key].label} node, not a conv"
        convs = sum(1 for node in nodes.values() if node.label in CONV_OPS)
        print(f"ok: graph {graph!r}: {len(value['results'])} key(s), each on one of its {convs} conv nodes")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    sys.exit(main(sys.argv[1], sys.argv[2]))
