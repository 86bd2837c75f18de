from __future__ import annotations

import argparse
import sys

from ..cli import Command, add_max_memory, add_preprocessing, emit_json, positive_int


def decibels(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of dB; e.g. 30") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number of dB")
    return value


class Diff(Command):
    name = "diff"
    help = "compare two models layer by layer (float against int8, before and after fine-tuning, two exports)"
    description = (
        "Compare MODEL_B against MODEL_A (the reference) conv layer by conv layer. Layers are matched by source "
        "layer name, then node name, then position when both have the same conv sequence. Weights: per-filter "
        "relative change and cosine (dequantized for QDQ). With images (files or directories), both models run "
        "once per batch with every compared layer's output added, and per layer the SQNR (dB, over all images), "
        "cosine similarity, max absolute and relative error and the worst channels are streamed. Prints a "
        "table marking the first layer under the threshold; --json writes the versioned schema; -o DIR draws "
        "the worst layers' maps side by side (A, B, |A-B|); --fail-under gates CI (exit 1).")

    def add_arguments(self, parser):
        parser.add_argument("model_a", metavar="MODEL_A", help="the reference ONNX model (e.g. the float one)")
        parser.add_argument("model_b", metavar="MODEL_B", help="the ONNX model compared with it (e.g. the int8 one)")
        parser.add_argument("images", nargs="*", metavar="IMAGE|DIR",
                            help="images, or directories of images (not recursive); without them only the "
                                 "weights are compared")
        parser.add_argument("--layer", "-l", action="append", metavar="SEL", dest="layers",
                            help="a layer of MODEL_A to compare (index, name, node, output or unique substring; "
                                 "repeat for several; default every matched layer)")
        parser.add_argument("--json", metavar="FILE", help="write the comparison as JSON to FILE ('-' for stdout)")
        parser.add_argument("--model-explorer", metavar="FILE",
                            help="write each compared conv node's SQNR as Google Model Explorer node data on "
                                 "MODEL_A's graph (JSON, for its ONNX adapter; needs images; docs/diff.md)")
        parser.add_argument("--fail-under", type=decibels, metavar="DB",
                            help="exit 1 when any compared layer's SQNR is below DB (needs images)")
        parser.add_argument("--batch", type=positive_int, metavar="N",
                            help="images per run of each model when the batch dimension is open (default 8)")
        add_preprocessing(parser)
        parser.add_argument("--device", action="append", choices=("auto", "cpu", "cuda"), dest="devices",
                            metavar="{auto,cpu,cuda}",
                            help="execution provider for both models, or give it twice for MODEL_A then MODEL_B "
                                 "(--device cpu --device cuda); cuda never falls back silently (default auto)")
        parser.add_argument("-o", "--output", metavar="DIR",
                            help="draw the worst layers' maps of the first image side by side (A, B, |A-B|) "
                                 "into DIR (default: no pictures)")
        parser.add_argument("--pictures", type=positive_int, default=3, metavar="N",
                            help="how many of the worst layers to draw with -o (default 3)")
        add_max_memory(parser, "both models' maps of the compared layers for one batch")
        parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar or provider note")

    def run(self, args) -> int:
        import os

        from ..api import load
        from ..atomic import ensure_dir, ensure_parent, safe_name
        from ..compare.run import DEFAULT_THRESHOLD_DB, diff
        from ..errors import CheckFailed, InspectorError

        devices = args.devices or ["auto"]
        if len(devices) > 2:
            raise InspectorError("--device takes one value for both models or two (MODEL_A's, then MODEL_B's)")
        if args.fail_under is not None and not args.images:
            raise InspectorError("--fail-under gates on the layers' SQNR, which needs images: pass images or a "
                                 "directory after the two models")
        to_stdout = args.json == "-"
        if args.json and not to_stdout:
            ensure_parent(args.json, "--json")
        if args.model_explorer:
            from ..modelexplorer import check_target

            if not args.images:
                raise InspectorError("--model-explorer shows the layers' SQNR, which needs images: pass images "
                                     "or a directory after the two models")
            check_target(args.model_explorer)
        if args.output:
            ensure_dir(args.output)
        model_a = load(args.model_a, layout=args.layout)
        model_b = load(args.model_b, layout=args.layout)
        threshold = args.fail_under if args.fail_under is not None else DEFAULT_THRESHOLD_DB
        result = diff(model_a, model_b, args.images or None, layers=args.layers, batch=args.batch,
                      preprocess=args.preprocess, size=args.size, devices=devices, threshold_db=threshold,
                      keep_first=bool(args.output), quiet=args.quiet, verbose=args.verbose,
                      max_memory=args.max_memory)
        if result.providers and not args.quiet and ("auto" in devices or args.verbose):
            print(f"inspector: ran A on {result.providers[0]}, B on {result.providers[1]}", file=sys.stderr)
        out = sys.stderr if to_stdout else sys.stdout
        print(result.table(), file=out)
        if args.output and result.first_maps:
            from ..compare.pictures import picture_rows, save_side_by_side, side_by_side
            from ..compare.run import _sqnr_text

            for layer in result.worst_for_pictures(args.pictures):
                a, b = result.first_maps[layer.pair.a.name]
                rows = picture_rows(layer.stats)
                grid = side_by_side(a, b, rows, layer_name=layer.pair.a.name, name_a=result.name_a,
                                    name_b=result.name_b, sqnr_text=_sqnr_text(layer.sqnr(), False),
                                    image_name=os.path.basename(result.first_image or ""))
                path = os.path.join(args.output, f"diff_{layer.pair.a.index:02d}_{safe_name(layer.pair.a.name)}.png")
                width, height = save_side_by_side(grid, path)
                print(f"{path}  ({layer.pair.a.name}, {width}x{height})", file=out)
        if args.json:
            data = result.to_dict()
            emit_json(args.json, data, f"diff JSON, schema version {data['schema_version']}")
        if args.model_explorer:
            from .. import modelexplorer

            overlay, left_out = modelexplorer.diff_node_data(result, model_a)
            modelexplorer.write(args.model_explorer, overlay)
            print(f"{args.model_explorer}  ({modelexplorer.describe(overlay)}, MODEL_A's)", file=sys.stderr)
            if left_out:
                print(f"inspector: --model-explorer left out {len(left_out)} layer(s) with no finite SQNR (JSON has "
                      f"no infinity): {', '.join(left_out[:5])}{' ...' if len(left_out) > 5 else ''}", file=sys.stderr)
        if args.fail_under is not None:
            if not result.compared():  # a gate over nothing must not pass
                raise InspectorError("--fail-under: no layer's maps could be compared (see the table's notes); "
                                     "nothing to gate on")
            below = result.below(args.fail_under)
            broken = result.unmeasurable()
            if below or broken:
                parts = []
                if below:
                    parts.append(f"{len(below)} layer(s) under {args.fail_under:g} dB SQNR: " + ", ".join(
                        f"{layer.pair.a.name} {layer.sqnr():.2f} dB" for layer in below[:5])
                        + (" ..." if len(below) > 5 else ""))
                if broken:
                    parts.append(f"{len(broken)} layer(s) with NaN or infinite maps: "
                                 + ", ".join(layer.pair.a.name for layer in broken[:5]))
                raise CheckFailed("; ".join(parts))
        return 0


COMMAND = Diff()
