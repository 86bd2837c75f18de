from __future__ import annotations

import argparse

from ..cli import Command


class Convert(Command):
    """Listed here for --help; ``cli.main`` hands ``convert`` straight to converters.cli."""

    name = "convert"
    help = ("export a Keras, TFLite, TensorFlow or PyTorch model to a clean, named ONNX file "
            "(needs the keras/torch extras)")
    description = "See 'inspector convert --help' for keras-app, keras, tflite, tf, torch, torchvision and timm."

    def add_arguments(self, parser):
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def run(self, args) -> int:  # pragma: no cover - main() dispatches before parsing
        from ..cli import _convert

        return _convert(args.rest)


COMMAND = Convert()
