"""``inspector convert keras-app|keras|tflite|tf|torch|torchvision|timm ...``: parse, call converters.api, print, map errors to exit codes."""

from __future__ import annotations

import argparse
import sys

from inspector.errors import CheckFailed, InspectorError

PROG = "inspector convert"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors: exit 2 through our own return path
        raise _UsageError(message, self)


class _UsageError(Exception):
    def __init__(self, message, parser):
        super().__init__(message)
        self.parser = parser


def _common(parser: argparse.ArgumentParser, preprocess: bool) -> None:
    """Options every subcommand shares."""
    parser.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default 17)")
    parser.add_argument("--check", action="store_true",
                        help="compare every conv layer and the output with the source model (fails above 1e-4 relative)")
    parser.add_argument("--image", metavar="PHOTO", help="with --check: also compare on this picture")
    parser.add_argument("-v", "--verbose", action="store_true", help="print time and peak memory of each stage")
    if preprocess:
        parser.add_argument("--preprocess", choices=("caffe", "torch", "tf", "raw"),
                            help="preprocessing to stamp into the model's metadata")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Convert Keras, TFLite, TensorFlow and PyTorch models (and the keras.applications, torchvision "
                                          "and timm zoos by name) to ONNX files the inspector reads well.")
    sub = parser.add_subparsers(dest="command", metavar="{keras-app,keras,tflite,tf,torch,torchvision,timm}",
                                parser_class=_Parser)
    sub.required = True

    app = sub.add_parser("keras-app", help="a keras.applications model by name (e.g. VGG16)")
    app.add_argument("name", help="application name, e.g. VGG16, ResNet50, MobileNetV2")
    app.add_argument("--weights", default="imagenet", metavar="imagenet|none|PATH",
                     help="imagenet (Keras's download and cache; default), none (random, untrained), or an .h5 file")
    app.add_argument("--no-top", action="store_true", help="without the classifier (include_top=False)")
    _common(app, preprocess=False)

    keras_file = sub.add_parser("keras", help="a saved .keras or .h5 model (Keras 2 files through tf_keras), or a "
                                "Keras 2 JSON architecture with its .h5 weights beside it")
    keras_file.add_argument("model", metavar="MODEL.keras|MODEL.h5|ARCH.json")
    keras_file.add_argument("--unsafe", action="store_true",
                            help="allow Lambda layers (their code runs when loading: only for files you trust)")
    keras_file.add_argument("--custom-objects", metavar="FILE.py|MODULE",
                            help="module defining the model's custom layers (CUSTOM_OBJECTS dict or its classes)")
    _common(keras_file, preprocess=True)

    tflite = sub.add_parser("tflite", help="a .tflite model (float32, float16 or int8) through tf2onnx's TFLite path")
    tflite.add_argument("model", metavar="MODEL.tflite")
    _common(tflite, preprocess=True)

    tf_cmd = sub.add_parser("tf", help="a TensorFlow SavedModel folder or a TF1 frozen graph .pb through tf2onnx")
    tf_cmd.add_argument("model", metavar="SAVED_MODEL_DIR|GRAPH.pb")
    tf_cmd.add_argument("--inputs", metavar="NAME[,NAME]", help="input tensors (default: the serving signature's, "
                        "or a frozen graph's Placeholders)")
    tf_cmd.add_argument("--outputs", metavar="NAME[,NAME]", help="output tensors (default: the signature's, or the "
                        "tensors nothing in a frozen graph reads)")
    tf_cmd.add_argument("--tag", help="SavedModel tag set (default: serve)")
    tf_cmd.add_argument("--signature", help="SavedModel signature (default: serving_default)")
    _common(tf_cmd, preprocess=True)

    torch_cmd = sub.add_parser("torch", help="a PyTorch nn.Module from a factory, or a TorchScript archive")
    torch_cmd.add_argument("factory", metavar="FILE.py:FACTORY|package.module:FACTORY|MODEL.pt",
                           help="callable returning an nn.Module, or a torch.jit.save archive (no Python class needed)")
    torch_cmd.add_argument("--input-shape", required=True, metavar="N,C,H,W", help="e.g. 1,3,224,224")
    torch_cmd.add_argument("--weights", metavar="STATE_DICT.pt", help="state dict, loaded with weights_only=True")
    torch_cmd.add_argument("--forward-arg", action="append", default=[], metavar="NAME=NUMBER",
                           help="an argument of forward after the image, as one value per picture (shape (N,)), "
                                "e.g. FFDNet's noise_sigma=0.1; repeatable")
    _common(torch_cmd, preprocess=True)

    for library, example in (("torchvision", "resnet18, mobilenet_v3_small, convnext_tiny"),
                             ("timm", "resnet18, mobilenetv3_small_100, efficientnet_b0")):
        zoo = sub.add_parser(library, help=f"a {library} model by name (e.g. {example.split(',')[0]})")
        zoo.add_argument("name", help=f"model name, e.g. {example}")
        zoo.add_argument("--weights", default="default", metavar="default|none|PATH",
                         help=f"default ({library}'s pretrained weights, its own download and cache; default), "
                              "none (random, untrained), or a state-dict file")
        zoo.add_argument("--input-shape", metavar="N,C,H,W",
                         help="traced input shape (default: 1,3 and the size from the library's metadata)")
        _common(zoo, preprocess=False)
    return parser


def _forward_args(items: list[str]) -> dict[str, float]:
    values = {}
    for item in items:
        name, _, text = item.partition("=")
        try:
            values[name.strip()] = float(text)
        except ValueError:
            raise InspectorError(f"--forward-arg '{item}': give NAME=NUMBER, e.g. noise_sigma=0.1") from None
        if not name.strip().isidentifier():
            raise InspectorError(f"--forward-arg '{item}': '{name}' is not an argument name")
    return values


def _echo(message: str) -> None:
    print(message, flush=True)


def run(args) -> int:
    from . import api

    common = dict(opset=args.opset, check=args.check, image=args.image, echo=_echo, measure=args.verbose)
    if args.command == "keras-app":
        result = api.convert_keras_app(args.name, args.output, weights=args.weights,
                                       include_top=not args.no_top, **common)
    elif args.command == "keras":
        result = api.convert_keras_file(args.model, args.output, preprocess=args.preprocess, unsafe=args.unsafe,
                                        custom_objects=args.custom_objects, **common)
    elif args.command == "tflite":
        result = api.convert_tflite_file(args.model, args.output, preprocess=args.preprocess, **common)
    elif args.command == "tf":
        result = api.convert_tf(args.model, args.output, preprocess=args.preprocess, inputs=args.inputs,
                                outputs=args.outputs, tag=args.tag, signature=args.signature, **common)
    elif args.command in ("torchvision", "timm"):
        convert = api.convert_torchvision if args.command == "torchvision" else api.convert_timm
        result = convert(args.name, args.output, weights=args.weights, input_shape=args.input_shape, **common)
    else:
        result = api.convert_torch(args.factory, args.input_shape, args.output, weights=args.weights,
                                   preprocess=args.preprocess or "torch",
                                   forward_args=_forward_args(args.forward_arg), **common)
    layers = result.conv_layers
    shown = ", ".join(layers[:3]) + (f", ... {layers[-1]}" if len(layers) > 3 else "")
    print(f"wrote {result.path}: {len(layers)} conv layers ({shown}), {sum(result.ops.values())} nodes, "
          f"{result.transposes} Transpose")
    if result.stages:
        print(f"total {result.stages['total_seconds']:.1f} s, peak RSS {result.stages['peak_rss_mb']:.0f} MB")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        exc.parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    try:
        return run(args)
    except (InspectorError, CheckFailed) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
