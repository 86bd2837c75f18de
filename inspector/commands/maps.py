from __future__ import annotations

import json
import os
import sys

from ..cli import Command, add_device, add_max_memory, add_model, add_output_dir, add_preprocessing, add_selection


class Maps(Command):
    name = "maps"
    help = "draw every selected layer's feature maps for one image, from one inference"
    description = ("Run the model once on an image with every selected conv layer's output added as a "
                   "graph output, and draw each layer's feature maps. One PNG per layer.")

    def add_arguments(self, parser):
        add_model(parser)
        parser.add_argument("image", metavar="IMAGE", help="image file (any format Pillow reads)")
        add_selection(parser, default_max=64, what="channels")
        add_preprocessing(parser)
        add_device(parser)
        parser.add_argument("--cmap", default="viridis", metavar="NAME", help="matplotlib colour map (default viridis)")
        parser.add_argument("--norm", choices=("map", "layer"), default="map",
                            help="scale colours per channel or over the whole layer (default map)")
        parser.add_argument("--npz", metavar="FILE",
                            help="also save the raw maps: one (C, H, W) float32 array per layer name")
        parser.add_argument("--no-png", action="store_true", help="skip the pictures (with --npz)")
        add_max_memory(parser, "the selected layers' maps")
        parser.add_argument("--json", action="store_true",
                            help="print what was written as JSON on stdout (per layer: file, shape, min, max, "
                                 "fraction of zeros) instead of one line per file")
        add_output_dir(parser)

    def run(self, args) -> int:
        import numpy as np

        from ..api import load
        from ..atomic import atomic_path, ensure_dir, ensure_parent, safe_name
        from ..progress import progress
        from ..render import colormap_lut, draw_all, map_grid, save_maps_png
        from ..resources import check_maps_memory

        model = load(args.model, layout=args.layout)
        layers = model.select(args.layers, args.all_layers)
        # A non-image input or a misfit --size fails before any output; one open dim keeps the aspect ratio.
        feeding = model.feeding(args.preprocess, args.size, [args.image], args.image)
        spec, source, size = feeding.preprocess, feeding.preprocess_source, feeding.size
        for line in feeding.notes():  # a guessed preprocessing, a fixed batch filled, other inputs fed
            print(line, file=sys.stderr)
        label = spec.mode + (" (guessed: set --preprocess)" if source == "guessed" else "")
        check_maps_memory(model, layers, size, args.max_memory)
        if not args.no_png:
            colormap_lut(args.cmap)
            out_dir = ensure_dir(args.output)
        if args.npz:
            ensure_parent(args.npz, "--npz")
        # onnxruntime builds the session without the GIL: decode the image and load the drawing
        # code meanwhile (VGG16: 0.15 s of session, 0.03 s of decoding and imports).
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="inspector-session") as pool:
            opening = pool.submit(model.session, layers, device=args.device, verbose=args.verbose)
            batch = model.image_batch([args.image], spec, size)
            if not args.no_png:
                from PIL import ImageDraw, ImageFont  # noqa: F401 - imported here, used by the drawing
            session = opening.result()
        if args.device == "auto" or args.verbose:
            print(f"inspector: ran on {session.provider}", file=sys.stderr)
        maps = {name: value[0] for name, value in session.run(batch).items()}
        provider = session.provider
        # One run is all it serves: its weights, buffers and spinning threads go before the drawing.
        del session
        if args.npz:
            with atomic_path(args.npz) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, **maps)
            if not args.json:
                print(f"{args.npz}  ({len(maps)} layers, channel-first arrays)")
        if args.no_png and not args.json:
            return 0
        image_name = os.path.basename(args.image)

        def draw(layer):
            values = maps[layer.name]
            record = {"index": layer.index, "name": layer.name, "shape": list(values.shape), "png": None,
                      "npz": args.npz}
            if args.json:  # three passes over every map: only when asked for
                record.update(min=float(values.min()), max=float(values.max()),
                              zero_fraction=float(np.count_nonzero(values == 0) / max(values.size, 1)))
            if not args.no_png:
                grid = map_grid(values, layer, model.name, image_name=image_name,
                                preprocess=label, cmap=args.cmap, max_maps=args.max, norm=args.norm,
                                untrained=model.untrained)
                path = os.path.join(out_dir, f"maps_{layer.index:02d}_{safe_name(layer.name)}.png")
                record["png"] = path
                record["size"] = save_maps_png(grid, path)
            return record

        records = []
        # Layers are drawn on every core (NumPy, Pillow and zlib release the GIL), reported in order.
        for record in progress(draw_all(draw, layers), total=len(layers), desc="maps", unit="layer"):
            png_size = record.pop("size", None)
            if png_size and not args.json:
                print(f"{record['png']}  ({record['name']}, {'x'.join(map(str, record['shape']))}, "
                      f"{png_size[0]}x{png_size[1]})")
            records.append(record)
        if args.json:
            print(json.dumps({"model": args.model, "image": args.image, "provider": provider,
                              "preprocess": spec.mode, "preprocess_source": source,
                              "input_size": list(size), "input": feeding.to_dict(), "layers": records}, indent=2))
        return 0


COMMAND = Maps()
