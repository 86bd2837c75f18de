from __future__ import annotations

import json

from ..cli import Command, add_model


class Layers(Command):
    name = "layers"
    help = "list the conv layers in graph order"
    description = ("List every conv-like layer (Conv, ConvTranspose, QLinearConv, QDQ Conv) in graph order "
                   "with its source-framework name, weight shape and the tensor shown as its feature map.")

    def add_arguments(self, parser):
        add_model(parser)
        parser.add_argument("--json", action="store_true", help="print a JSON list on stdout")

    def run(self, args) -> int:
        from ..api import load

        model = load(args.model)
        layers = model.require_layers()
        if args.json:
            print(json.dumps([layer.to_dict() for layer in layers], indent=2))
            return 0
        rows = [("#", "name", "op", "weights", "groups", "params", "output")]
        for layer in layers:
            # Conv+BN/Relu: what lies between the conv and the tensor shown (unfolded steps, activation).
            op = layer.op + "".join("+" + _SHORT.get(step, step) for step in layer.affine)
            op += f"/{layer.activation}" if layer.activation else ""
            rows.append((str(layer.index), layer.name, op, "x".join(map(str, layer.weight_shape)),
                         str(layer.groups), f"{layer.params:,}", layer.output))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        total = sum(layer.params for layer in layers)
        print(f"\n{len(layers)} conv layers, {total:,} conv parameters ({model.name})")
        return 0


_SHORT = {"BatchNormalization": "BN"}

COMMAND = Layers()
