"""The floor for one-photo feature maps: what any script must do, and nothing more.

Load the ONNX file with ``onnx``, add the 13 conv layers' outputs (after
their Relu, where one follows, as the inspector shows them), create an
onnxruntime session, run the photo once. No rendering, no checks.

``--plain`` is a reference below the floor: onnxruntime opens the unmodified
file by path and runs it once, returning only the model's own output (no maps
at all): what merely running the model costs in a fresh process.

``--trunk`` is the physical floor for the maps of a model whose head the maps
do not need: onnxruntime opens a file that holds only the conv trunk (the
ancestors of the 13 maps, cut once beforehand by ``make-trunk`` with
``onnx.utils.Extractor``, independently of inspector's own cutting) and runs
it once. ``python bench/floor.py make-trunk MODEL TRUNK`` writes that file.
"""

import argparse


def conv_outputs(graph) -> list[str]:
    """The 13 tensors shown: each Conv's output, or the Relu after it where one follows."""
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = []
    for node in graph.node:
        if node.op_type == "Conv":
            tensor = node.output[0]
            after = consumers.get(tensor, [])
            if len(after) == 1 and after[0].op_type == "Relu":
                tensor = after[0].output[0]
            outputs.append(tensor)
    return outputs


def make_trunk(model_path: str, target: str) -> None:
    """A file holding only what the maps depend on, weights inline (not timed: done once)."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(model_path)
    inits = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    model = onnx.shape_inference.infer_shapes(model)  # the Extractor reads the outputs' types from value_info
    trunk = Extractor(model).extract_model(inputs, conv_outputs(model.graph))
    onnx.save(trunk, target + ".part")
    import os

    os.replace(target + ".part", target)


def main() -> None:
    import sys

    if sys.argv[1:2] == ["make-trunk"]:
        make_trunk(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("image")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--plain", action="store_true",
                        help="reference: session straight from the file, the model's own outputs only")
    parser.add_argument("--trunk", action="store_true",
                        help="the model is a trunk-only file (make-trunk): session from its path, all its outputs")
    args = parser.parse_args()

    import onnxruntime as ort

    providers = ["CUDAExecutionProvider"] if args.device == "cuda" else ["CPUExecutionProvider"]
    if args.trunk:
        session = ort.InferenceSession(args.model, providers=providers)
        first = session.get_inputs()[0]
        maps = session.run(None, {first.name: _caffe(args.image, first.shape[1] == 3)})
        print(f"{len(maps)} maps, {sum(m.nbytes for m in maps) / 2**20:.1f} MB")
        return
    if args.plain:
        session = ort.InferenceSession(args.model, providers=providers)
        first = session.get_inputs()[0]
        x = _caffe(args.image, first.shape[1] == 3)
        print([o.shape for o in session.run(None, {first.name: x})])
        return

    import onnx

    model = onnx.load(args.model)
    graph = model.graph
    outputs = conv_outputs(graph)
    for name in outputs:
        graph.output.append(onnx.helper.make_empty_tensor_value_info(name))

    session = ort.InferenceSession(model.SerializeToString(), providers=providers)

    first = session.get_inputs()[0]
    maps = session.run(outputs, {first.name: _caffe(args.image, first.shape[1] == 3)})
    print(f"{len(maps)} maps, {sum(m.nbytes for m in maps) / 2**20:.1f} MB")


def _caffe(image: str, nchw: bool):
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(image).convert("RGB").resize((224, 224)), dtype=np.float32)
    x = pixels[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)  # caffe: BGR, mean
    return np.ascontiguousarray((x.transpose(2, 0, 1) if nchw else x)[None])


if __name__ == "__main__":
    main()
