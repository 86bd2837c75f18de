from __future__ import annotations

import sys

from ..cli import Command, add_model, add_preprocessing, emit_json


class Prune(Command):
    name = "prune"
    help = "remove dead filters from an ONNX model, with every weight that only served them"
    description = (
        "Remove the filters that are dead by their weights (zero weights and bias before an activation with "
        "f(0) = 0) and every input channel, BatchNorm entry, per-channel constant and dense row that only served "
        "them, following the graph's dependency groups (Concat, Split, residual Adds, depthwise convs, Transposes, "
        "Flatten/Reshape into Gemm/MatMul). Constant channels (zero weights, non-zero bias) are folded into the "
        "next layer's bias where that is exact. --channels also removes the channels an audit found silent on "
        "images (approximate: needs --check). Exit 1 when --check finds the outputs changed.")

    def add_arguments(self, parser):
        add_model(parser)
        parser.add_argument("-o", "--output", metavar="OUT.onnx", help="the pruned model (required unless --dry-run)")
        parser.add_argument("--from-audit", metavar="AUDIT.json",
                            help="the JSON of 'inspector audit --json': its dead filters and channels")
        parser.add_argument("--channels", action="store_true",
                            help="also remove the audit's dead channels and near-zero filters (approximate; needs "
                                 "--check, and --from-audit or the --check images to audit)")
        parser.add_argument("--dry-run", action="store_true", help="print what would be removed; write no model")
        parser.add_argument("--check", nargs="+", metavar="IMAGE|DIR",
                            help="run both models on these images and report the largest output change "
                                 "(exit 1 above 1e-5 relative for exact pruning, or above --tolerance)")
        parser.add_argument("--tolerance", type=float, metavar="REL",
                            help="largest relative output change --check accepts (default 1e-5 for exact pruning; "
                                 "no limit for --channels unless given)")
        parser.add_argument("--json", metavar="FILE", help="write what was removed as JSON to FILE ('-' for stdout)")
        add_preprocessing(parser)

    def run(self, args) -> int:
        import os
        import tempfile

        from ..api import load
        from ..atomic import ensure_parent
        from ..errors import CheckFailed, InspectorError
        from ..prune import prune
        from ..prune.audit_input import dead_by_layer, read_audit, verification_line
        from ..prune.check import EXACT_TOLERANCE, NOISE_FACTOR, noise_floor

        if not args.output and not args.dry_run:
            raise InspectorError("give the pruned model's path with -o OUT.onnx, or --dry-run to only see the plan")
        if args.channels and not args.check:
            raise InspectorError("--channels removes channels that are not exactly zero: add --check IMAGE|DIR ... "
                                 "to measure how far the outputs move")
        if args.output:
            if os.path.abspath(args.output) == os.path.abspath(args.model):
                raise InspectorError("-o must not be the model itself; write the pruned model to a new file")
            ensure_parent(args.output)
        to_stdout = args.json == "-"
        if args.json and not to_stdout:
            ensure_parent(args.json, "--json")
        model = load(args.model, layout=args.layout)
        images = None
        if args.check:
            from ..audit import collect_images

            images = collect_images(args.check)
            if not images:
                raise InspectorError("--check: no readable images among the paths given")
        dead = None
        audit_data = None
        if args.from_audit:
            audit_data = read_audit(args.from_audit)
            dead = dead_by_layer(audit_data, args.from_audit, warn=_warn)
        elif args.channels:
            from ..audit import audit

            audit_data = audit(model, images, preprocess=args.preprocess, size=args.size, device="cpu",
                               quiet=True).to_dict()
            dead = dead_by_layer(audit_data, warn=_warn)
        verified = verification_line(audit_data) if args.channels and audit_data is not None else None
        result = prune(model, dead=dead, channels=args.channels, size=args.size)
        out = sys.stderr if to_stdout else sys.stdout
        tolerance = args.tolerance if args.tolerance is not None else (EXACT_TOLERANCE if result.exact else None)

        batch = None
        if images:
            feeding = model.feeding(args.preprocess, args.size, images)  # inspector.inputs: the one resolver
            for line in feeding.notes():  # a guessed preprocessing, a fixed batch filled, other inputs fed
                print(line, file=sys.stderr)
            spec, size = feeding.preprocess, feeding.size
            model.image_batch(images[:1], spec, size)  # a wrong --preprocess or size fails now

            def batch():  # one image at a time: memory does not grow with the number of images
                for image in images:
                    yield model.image_batch([image], spec, size)[0]

        def verify(path: str) -> None:
            from ..prune.check import compare

            result.check = compare(model.file, path, batch(), total=len(images), feeds=model.feeds)
            result.check["tolerance"] = tolerance
            if args.tolerance is None and result.exact and result.check["max_rel_diff"] > tolerance:
                # Past 1e-5: is that pruning, or this model's own float32 noise? Measured, not assumed.
                noise = noise_floor(model.file, batch(), total=len(images), feeds=model.feeds)
                result.check["noise_floor"] = noise
                result.check["tolerance"] = max(tolerance, NOISE_FACTOR * noise)
            if result.check["tolerance"] is not None and result.check["max_rel_diff"] > result.check["tolerance"]:
                raise _CheckRefused

        refused = False
        try:
            if args.dry_run:
                if batch is not None and result.changed:
                    with tempfile.TemporaryDirectory(prefix="inspector-prune-") as folder:
                        result.write(os.path.join(folder, "pruned.onnx"), verify=verify)
                    result.output = None
            else:
                result.write(args.output, verify=verify if batch is not None else None)
        except _CheckRefused:
            refused = True
        print(result.table(), file=out)
        if verified:
            print(verified, file=out)
        if result.check is not None:
            check = result.check
            print(f"check on {check['inputs']} image(s): max abs output difference {check['max_abs_diff']:.3g}, "
                  f"max relative {check['max_rel_diff']:.3g}", file=out)
            if check.get("noise_floor") is not None:
                print(f"this model's own float32 noise on those images (onnxruntime with other conv kernels) is "
                      f"{check['noise_floor']:.3g}: exact pruning is accepted up to {NOISE_FACTOR:g}x that "
                      f"({check['tolerance']:.3g})", file=out)
            if tolerance is None and check["max_rel_diff"] > EXACT_TOLERANCE:
                print("inspector: the outputs moved (approximate pruning); --tolerance REL makes that a failure",
                      file=sys.stderr)
        if result.output:
            print(f"{result.output}  ({os.path.getsize(result.output):,} bytes)", file=out)
        if args.json:
            data = result.to_dict()
            if args.channels and audit_data is not None and isinstance(audit_data.get("verification"), dict):
                data["audit_verification"] = audit_data["verification"]
            emit_json(args.json, data)
        if refused:
            raise CheckFailed(
                f"the pruned model's outputs moved by {result.check['max_rel_diff']:.3g} relative "
                f"(> {result.check['tolerance']:.3g}); "
                + ("nothing written" if not args.dry_run else "dry run"))
        return 0


class _CheckRefused(Exception):
    """--check found the outputs changed: the pruned model is not put in place."""


COMMAND = Prune()


def _warn(message: str) -> None:
    print(f"inspector: {message}", file=sys.stderr)
