"""How far the audit's silent channels were from answering, against what unseen images did (docs/audit.md).

For each model: a zero-config audit of the photos; for each channel it counts silent after a Relu (not
dead by its weights), the tensor the Relu reads is added as an output of the unmodified model and run with
onnxruntime on every photo and on unseen images (each photo flipped and cropped, as demo/audit_ablation.py
makes them). One JSON row a channel: its per-image peaks' mean and standard deviation on the photos (the
margin is ``-mean / std``), whether the photos or the unseen images opened it. ``--summary`` prints the
counts docs/audit.md gives.

    PYTHONPATH=. .venv/bin/python demo/audit_margins.py --photos models/wild/photos --jsonl OUT MODEL ...
    PYTHONPATH=. .venv/bin/python demo/audit_margins.py --summary OUT
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def summary(path: str, z_min: float = 3.0) -> None:
    rows = [json.loads(line) for line in open(path)]
    silent = [r for r in rows if r["photos_fired"] == 0]
    varying = [r for r in silent if r["max_std_img"] > 0]
    margin = lambda r: -r["mean_img_max"] / r["max_std_img"]  # noqa: E731
    low = [r for r in varying if margin(r) < z_min]
    high = [r for r in varying if margin(r) >= z_min]
    print(f"{len(silent)} channels silent on every photo in {len({r['model'] for r in silent})} models; "
          f"{len(varying)} with peaks that vary")
    print(f"margin < {z_min:g}: {len(low)}, of which {sum(r['unseen_fired'] > 0 for r in low)} answered unseen images")
    print(f"margin >= {z_min:g}: {len(high)}, of which {sum(r['unseen_fired'] > 0 for r in high)} answered unseen "
          "images: " + ", ".join(f"{r['model']} {r['layer']} {r['channel']} (margin {margin(r):.2f}, "
                                 f"{r['unseen_fired']} images)" for r in high if r["unseen_fired"] > 0))
    fixed = [r for r in silent if r["max_std_img"] == 0]
    print(f"peaks that never change: {len(fixed)}, of which {sum(r['unseen_fired'] > 0 for r in fixed)} answered")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*")
    parser.add_argument("--photos", default="models/wild/photos")
    parser.add_argument("--jsonl", help="append one row a channel here")
    parser.add_argument("--summary", metavar="JSONL", help="print the counts of a finished run")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
        return 0
    import onnx
    import onnxruntime as ort

    import audit_ablation as A
    import inspector
    from inspector.audit import audit, collect_images, margins
    from inspector.audit.verdicts import channels_judged

    photos = collect_images([args.photos])
    unseen = A.unseen_images(photos, tempfile.mkdtemp())
    out = open(args.jsonl, "a")
    for path in args.models:
        started = time.time()
        try:
            model = inspector.load(path)
            result = audit(model, photos, quiet=True, device="cpu")
        except Exception as exc:  # noqa: BLE001 - a survey: say it and go on
            print(path, "error:", exc, flush=True)
            continue
        layers = {layer.index: layer for layer in model.require_layers()}
        gates = []  # (layer name, tensor the rectifier reads, threshold, channel axis, channels)
        for la in result.layers:
            if not la.rectifier or not channels_judged(la, result.images):
                continue
            chans = sorted(set(la.dead_channels) - set(la.weights.dead_filters))
            found = margins.pre_activation(model, layers[la.index]) if chans else None
            if found is not None:
                gates.append((la.name, *found, chans))
        if not gates:
            print(path, "no silent channel after a rectifier", flush=True)
            continue
        proto = onnx.load(path)
        tensors = list(dict.fromkeys(gate[1] for gate in gates))
        for tensor in tensors:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        feeding = model.feeding(None, None, photos)

        def peaks(files):
            """{layer name: (images, channels) peaks of the tensor its rectifier reads}"""
            got = {name: [] for name, *_ in gates}
            for file in files:
                x = model.image_batch([file], feeding.preprocess, tuple(result.input_size))
                if model.input.batch and model.input.batch > 1:  # a fixed batch: the image repeated
                    x = np.repeat(x, model.input.batch, axis=0)
                values = dict(zip(tensors, session.run(tensors, {model.input.name: x})))
                for name, tensor, _, axis, chans in gates:
                    value = np.moveaxis(values[tensor].astype(np.float64), axis, 1)[0, chans]
                    got[name].append(value.reshape(len(chans), -1).max(axis=1))
            return {name: np.array(rows) for name, rows in got.items()}

        try:
            seen, new = peaks(photos), peaks(unseen)
        except Exception as exc:  # noqa: BLE001
            print(path, "error:", exc, flush=True)
            continue
        for name, _, threshold, _, chans in gates:
            for k, channel in enumerate(chans):
                mine = seen[name][:, k]
                row = {"model": path.split("models/")[-1], "layer": name, "channel": int(channel),
                       "threshold": threshold, "mean_img_max": float(mine.mean() - threshold),
                       "max_std_img": float(mine.std(ddof=1)), "photos_fired": int((mine > threshold).sum()),
                       "unseen_fired": int((new[name][:, k] > threshold).sum())}
                out.write(json.dumps(row) + "\n")
        out.flush()
        print(path, sum(len(g[4]) for g in gates), "channels", round(time.time() - started, 1), "s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
