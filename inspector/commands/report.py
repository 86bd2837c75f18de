from __future__ import annotations

import os
import sys

from ..cli import Command, add_device, add_max_memory, add_model, add_preprocessing, add_selection
from ..errors import InspectorError


class Report(Command):
    name = "report"
    help = "write one self-contained HTML page: layer table, audit summary, filters and feature maps"
    description = ("Run the model once on an image with every conv layer's output added, audit it, and write "
                   "one HTML file that needs nothing else: the layer table, the audit summary with its plots, "
                   "and each layer's filters and feature maps (pictures embedded; no network requests).")

    def add_arguments(self, parser):
        add_model(parser)
        parser.add_argument("image", metavar="IMAGE", help="image file (any format Pillow reads)")
        add_selection(parser, default_max=64, what="tiles per grid", default_layers="every conv layer")
        add_preprocessing(parser)
        add_device(parser)
        parser.add_argument("--cmap", default="viridis", metavar="NAME", help="matplotlib colour map (default viridis)")
        add_max_memory(parser, "every layer's maps")
        parser.add_argument("--compare", metavar="OTHER",
                            help="add a section comparing MODEL with another version of it (quantized, fine-tuned, "
                                 "re-exported) layer by layer on the image; see 'inspector diff'")
        parser.add_argument("-o", "--output", default="report.html", metavar="FILE",
                            help="the HTML file to write (default ./report.html)")

    def run(self, args) -> int:
        from ..api import load
        from ..atomic import ensure_parent, write_text
        from ..report import build_report
        from ..resources import check_maps_memory, human

        if os.path.isdir(args.output):
            raise InspectorError(f"-o '{args.output}' is a directory; give the HTML file's name, e.g. "
                                 f"{os.path.join(args.output, 'report.html')}")
        ensure_parent(args.output)  # an unwritable destination fails before any work
        model = load(args.model, layout=args.layout)
        all_layers = model.require_layers()
        shown = all_layers if args.all_layers or not args.layers else model.select(args.layers)
        feeding = model.feeding(args.preprocess, args.size, [args.image], args.image)
        size = feeding.size
        for line in feeding.notes():  # a guessed preprocessing, a fixed batch filled, other inputs fed
            print(line, file=sys.stderr)
        check_maps_memory(model, all_layers, size, args.max_memory)  # the report runs every layer's output once

        def say_provider(provider: str) -> None:
            if args.device == "auto" or args.verbose:
                print(f"inspector: ran on {provider}", file=sys.stderr)

        report = build_report(model, args.image, layers=shown, preprocess=args.preprocess, size=args.size,
                              device=args.device, max_tiles=args.max, cmap=args.cmap, verbose=args.verbose,
                              quiet=False, on_provider=say_provider)
        page = report.html
        if args.compare:
            from ..compare.html import report_section

            page = report_section(page, model, args.compare, args.image, preprocess=args.preprocess,
                                  size=args.size, device=args.device, verbose=args.verbose)
        write_text(args.output, page)
        size_bytes = os.path.getsize(args.output)
        print(f"{args.output}  ({report.layers_drawn} of {len(all_layers)} layers drawn, "
              f"{human(size_bytes)})")
        return 0


COMMAND = Report()
