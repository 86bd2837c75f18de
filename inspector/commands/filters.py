from __future__ import annotations

import json
import os

from ..cli import Command, add_model, add_output_dir, add_selection, positive_int


class Filters(Command):
    name = "filters"
    help = "draw conv filters (weights) as coloured grids"
    description = ("Draw the learned filters of conv layers, read straight from the ONNX file "
                   "(initializers, Constant nodes, DequantizeLinear, external data). One PNG per layer.")

    def add_arguments(self, parser):
        add_model(parser)
        add_selection(parser, default_max=64, what="filters")
        parser.add_argument("--cmap", default="viridis", metavar="NAME", help="matplotlib colour map (default viridis)")
        parser.add_argument("--norm", choices=("filter", "layer"), default="layer",
                            help="scale colours per filter or over the whole layer (default layer, as the tutorial)")
        parser.add_argument("--channels", type=positive_int, nargs="?", const=3, metavar="N",
                            help="show the first N input-channel slices of each filter (default N=3) "
                                 "instead of RGB tiles or the mean over input channels")
        parser.add_argument("--json", action="store_true",
                            help="print what was written as JSON on stdout (per layer: file, weight shape, "
                                 "min, max) instead of one line per file")
        add_output_dir(parser)

    def run(self, args) -> int:
        from .. import metadata as md
        from ..api import load
        from ..atomic import ensure_dir, safe_name
        from ..progress import progress
        from ..render import colormap_lut, filter_grid, save_filters_png

        model = load(args.model)
        layers = model.select(args.layers, args.all_layers)
        colormap_lut(args.cmap)  # an unknown colour map fails before any work
        out_dir = ensure_dir(args.output)
        spec = md.json_object(model.metadata, md.PREPROCESS)
        bgr = str(spec.get("color_order", "RGB")).upper() == "BGR"
        records = []
        for layer in progress(layers, total=len(layers), desc="filters", unit="layer"):
            weights = model.filters(layer)
            grid = filter_grid(weights, layer, model.name, norm=args.norm, cmap=args.cmap,
                               max_filters=args.max, channels=args.channels, bgr=bgr,
                               untrained=model.untrained)
            path = os.path.join(out_dir, f"filters_{layer.index:02d}_{safe_name(layer.name)}.png")
            width, height = save_filters_png(grid, path)
            if args.json:  # min/max read the whole layer; the picture alone reads only the filters shown
                records.append({"index": layer.index, "name": layer.name, "weight_shape": list(weights.shape),
                                "min": float(weights.min()), "max": float(weights.max()), "png": path})
            else:
                print(f"{path}  ({layer.name}, {weights.shape[0]} filters, {width}x{height})")
        if args.json:
            print(json.dumps({"model": args.model, "layers": records}, indent=2))
        return 0


COMMAND = Filters()
