from __future__ import annotations

import sys

from ..cli import Command, add_device, add_max_memory, add_model, add_preprocessing, emit_json, positive_int

DEFAULT_TOLERANCE = 0.01  # inspector.audit.verify's; here so that --help imports no NumPy


def fraction(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number; use a fraction such as 0.05") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


class Audit(Command):
    name = "audit"
    help = "find dead and duplicate filters, channels that do not respond, and where the network collapses"
    description = ("Audit every conv layer: dead filters (all-zero weights), near-duplicate filters within a group "
                   "and near-zero weights from the weights alone; with images (files or directories; channel "
                   "verdicts need at least 8), channels that do not respond (exact zeros after Relu, constant or "
                   "dormant otherwise) and the layer where the output stops changing between images, streamed in "
                   "batches with one run per batch. Every verdict is unchanged by a function-preserving "
                   "rescaling. Prints a table; --json writes the versioned schema; --fail-on-dead gates CI (exit 1).")

    def add_arguments(self, parser):
        add_model(parser)
        parser.add_argument("images", nargs="*", metavar="IMAGE|DIR|GLOB|LIST|SHARD",
                            help="images (jpg, png, bmp, gif, tif, webp), directories of images, globs ('**' "
                                 "crosses folders; quote them), lists of image paths (.txt one a line, .csv with a "
                                 "'path' column) or WebDataset .tar shards (members read in place); streamed "
                                 "in batches, memory bounded")
        parser.add_argument("--recursive", "-r", action="store_true",
                            help="directories: their subfolders' images too")
        parser.add_argument("--limit", type=positive_int, metavar="N", help="audit the first N images only")
        parser.add_argument("--sample", type=positive_int, metavar="N",
                            help="audit N images drawn at random (with --seed), kept in the dataset's order")
        parser.add_argument("--seed", type=int, default=0, metavar="S", help="the seed of --sample (default 0)")
        parser.add_argument("--ray", nargs="?", const="local", metavar="local[:CPUS]|auto|ADDRESS",
                            help="run the batches on a Ray cluster (pip install 'inspector-cnn[ray]'): 'local' "
                                 "starts one here (local:4 with 4 CPUs), 'auto' joins the one this machine "
                                 "belongs to, or give its address; images must be at paths every node can read. "
                                 "The same statistics, verdicts and JSON as without it")
        parser.add_argument("--json", metavar="FILE", help="write the audit as JSON to FILE ('-' for stdout)")
        parser.add_argument("--model-explorer", metavar="FILE",
                            help="write each conv node's dead fraction as Google Model Explorer node data "
                                 "(JSON, for its ONNX adapter; docs/audit.md)")
        parser.add_argument("--fail-on-dead", type=fraction, metavar="F",
                            help="exit 1 when the verified dead fraction (dead filters, plus the dead channels "
                                 "confirmed on held-out images, over all filters) exceeds F; says how many verdicts "
                                 "it left out and why")
        parser.add_argument("--confirm", nargs="+", metavar="IMAGE|DIR",
                            help="images to verify the verdicts on, kept out of judging: every unit counted dead is "
                                 "replaced by its mean and the outputs compared (default: a deterministic quarter "
                                 "of the images, when at least 8 remain to judge)")
        parser.add_argument("--tolerance", type=fraction, metavar="F", default=DEFAULT_TOLERANCE,
                            help="largest output change, as a fraction of the output's range on the held-out "
                                 "images, that removing the dead units may cause; units beyond it are reported "
                                 "as silent but not confirmed, and not counted (default 0.01)")
        parser.add_argument("--batch", type=positive_int, metavar="N",
                            help="images per run when the model's batch dimension is open (default 16)")
        add_preprocessing(parser)
        add_device(parser)
        parser.add_argument("--statistics", choices=("auto", "graph", "maps"), default="auto",
                            help="where the per-channel statistics are computed: 'graph' appends them to the "
                                 "ONNX graph (about half the memory; the default on CUDA, where the maps then "
                                 "never leave the GPU), 'maps' reduces the maps with NumPy (a few percent faster "
                                 "on the CPU, the default there); the audit is the same either way")
        parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar or provider note")
        add_max_memory(parser, "the audited layers' maps of one image")

    def run(self, args) -> int:
        from ..api import load
        from ..atomic import ensure_parent
        from ..audit import audit
        from ..errors import CheckFailed, InspectorError

        to_stdout = args.json == "-"
        if args.json and not to_stdout:
            ensure_parent(args.json, "--json")  # an unwritable target fails before the work starts
        if args.model_explorer:
            from ..modelexplorer import check_target

            check_target(args.model_explorer)
        if (args.limit or args.sample or args.recursive) and not args.images:
            raise InspectorError("--recursive, --limit and --sample choose among images: give images too")
        model = load(args.model, layout=args.layout)
        images = None
        if args.images:  # a guessed preprocessing, a fixed batch filled, other inputs fed
            from ..audit import collect_images
            from ..datasets import select

            images = select(collect_images(args.images, args.recursive), args.limit, args.sample, args.seed)
            for line in model.feeding(args.preprocess, args.size, images).notes():
                print(line, file=sys.stderr)
        if args.confirm and not args.images:
            raise InspectorError("--confirm checks the verdicts judged on images: give the images to judge on too")
        result = audit(model, images, batch=args.batch, preprocess=args.preprocess,
                       size=args.size, device=args.device, quiet=args.quiet, verbose=args.verbose,
                       max_memory=args.max_memory, statistics=args.statistics, confirm=args.confirm,
                       tolerance=args.tolerance, ray=args.ray)
        if result.provider and not args.quiet and (args.device == "auto" or args.verbose):
            print(f"inspector: ran on {result.provider}", file=sys.stderr)
        # With --json - stdout carries the JSON alone; the table goes to stderr.
        print(result.table(), file=sys.stderr if to_stdout else sys.stdout)
        if args.json:
            data = result.to_dict()
            emit_json(args.json, data, f"audit JSON, schema version {data['schema_version']}")
        if args.model_explorer:
            from .. import modelexplorer

            overlay = modelexplorer.audit_node_data(result, model)
            modelexplorer.write(args.model_explorer, overlay)
            print(f"{args.model_explorer}  ({modelexplorer.describe(overlay)})", file=sys.stderr)
        if args.fail_on_dead is not None:
            left_out = result.left_out()["reasons"]
            if left_out:
                print(f"inspector: --fail-on-dead counts verified verdicts only; left out: {'; '.join(left_out)}",
                      file=sys.stderr)
            if result.verified_dead_fraction > args.fail_on_dead:
                raise CheckFailed(
                    f"dead fraction {result.verified_dead_fraction:.4f} ({result.verified_dead_unit_count} of "
                    f"{result.total_filters} filters dead) exceeds --fail-on-dead {args.fail_on_dead:g}")
        return 0


COMMAND = Audit()
