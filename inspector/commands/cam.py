from __future__ import annotations

import json
import os
import sys

from ..cli import Command, add_device, add_max_memory, add_model, add_output_dir, add_preprocessing, positive_int

from ..cam.methods import METHODS


class Cam(Command):
    name = "cam"
    help = "class activation map: where the model looks, from forward runs only (ScoreCAM, EigenCAM, AblationCAM)"
    description = ("Draw where the model looks on a photo, without gradients: EigenCAM (the first principal "
                   "component of a layer's maps, one run), ScoreCAM (each channel masks the input; the target's "
                   "scores weigh the maps; one run per channel, batched) or AblationCAM (the target's drop when "
                   "each channel is zeroed; runs only the graph after the layer). One PNG: the photo and the "
                   "heatmap over it.")

    def add_arguments(self, parser):
        add_model(parser)
        parser.add_argument("image", metavar="IMAGE", help="image file (any format Pillow reads)")
        parser.add_argument("--method", "-m", default=None, choices=tuple(METHODS), type=str.lower,
                            help="; ".join(f"{name}: {m.summary}" for name, m in METHODS.items())
                            + " (default: scorecam where the model has one class output or --target is given, "
                              "else eigencam; the choice is said on stderr)")
        parser.add_argument("--layer", "-l", metavar="SEL",
                            help="target layer by index, name, node name, output tensor or unique substring "
                                 "(default: the last conv layer whose maps are larger than 1x1)")
        parser.add_argument("--target", "-t", metavar="SPEC",
                            help="what to explain: top (default), a class index, a class name from the model's "
                                 "metadata, OUTPUT:top|K|NAME for one of several class outputs, or OUTPUT:max / "
                                 "OUTPUT:mean to score a model without a class output (detectors, segmenters), "
                                 "OUTPUT:CH:max for one channel of it (an index, or a class name among the last "
                                 "channels, as in YOLOv8's output0:Table:max)")
        parser.add_argument("--batch", type=positive_int, default=16, metavar="N",
                            help="inputs per run for ScoreCAM and AblationCAM where the batch dimension is open "
                                 "(default 16; a fixed batch is respected)")
        add_preprocessing(parser)
        add_device(parser)
        add_max_memory(parser, "the layer's maps of one image")
        parser.add_argument("--npz", metavar="FILE",
                            help="also save cam (H x W float32 in [0, 1] at the input size), target (int, -1 where "
                                 "none) and layer (name)")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
        add_output_dir(parser)

    def run(self, args) -> int:
        import numpy as np

        from ..api import load
        from ..atomic import atomic_path, ensure_dir, ensure_parent, safe_name
        from ..cam import compute
        from ..cam.picture import save

        model = load(args.model, layout=args.layout)
        out_dir = ensure_dir(args.output)
        if args.npz:
            ensure_parent(args.npz, "--npz")

        def say_provider(provider: str) -> None:
            if args.device == "auto" or args.verbose:
                print(f"inspector: ran on {provider}", file=sys.stderr)

        def say_feeding(feeding) -> None:  # a guessed preprocessing, a fixed batch filled, other inputs fed
            for line in feeding.notes():
                print(line, file=sys.stderr)

        result = compute(model, args.image, args.method, args.layer, args.target, batch=args.batch,
                         preprocess=args.preprocess, size=args.size, device=args.device, verbose=args.verbose,
                         quiet=False, on_provider=say_provider, max_memory=args.max_memory, on_feeding=say_feeding)
        stem = os.path.splitext(os.path.basename(args.image))[0]
        path = os.path.join(out_dir, f"cam_{result.method}_{safe_name(result.layer)}_{safe_name(stem)}.png")
        width, height = save(result, path)
        if args.npz:
            with atomic_path(args.npz) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, cam=result.cam.astype(np.float32), target=np.int64(result.target),
                             layer=np.str_(result.layer))
        summary = {**result.to_dict(), "png": path, "npz": args.npz}
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            target = result.target_label or "no target"
            score = f", score {result.score:.4g}" if result.score is not None else ""
            print(f"{path}  ({result.method}, {result.layer}, {target}{score}, {width}x{height})")
            if args.npz:
                print(f"{args.npz}  (cam {result.cam.shape[0]}x{result.cam.shape[1]}, target, layer)")
        for note in result.notes:  # the method chosen and why: on stderr with --json too
            print(f"inspector: note: {note}", file=sys.stderr)
        return 0


COMMAND = Cam()
