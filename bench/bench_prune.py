"""`inspector prune` on VGG16 with 30% of its filters dead: parameters, file size and latency before and after.

30% of the filters of every conv layer (a seeded random choice) get zero weights
and bias; the planted model is written beside the results (its conv weights
replaced, everything else streamed from the original file). Then `inspector
prune` removes them, and onnxruntime runs both models, interleaved, on the same
random input: median latency of each and their ratio from the same run, and the
largest output difference.

    bench/bench_prune.py [--model models/vgg16.onnx] [--dead 0.3] [--runs 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "bench", "out")


def plant(source: str, target: str, fraction: float, seed: int = 0) -> dict:
    """Zero ``fraction`` of the filters of every conv of ``source``; write ``target``. Returns {layer: count}."""
    from converters.writer import write_model

    from inspector.api import load

    model = load(source)
    rng = np.random.default_rng(seed)
    payloads, planted = {}, {}
    light = model.file.model
    headers = {t.name: t for t in light.graph.initializer}
    for layer in model.layers:
        chosen = rng.choice(layer.filters, size=int(round(fraction * layer.filters)), replace=False)
        for tensor in filter(None, (layer.weight_input, layer.bias_input)):
            array = np.array(model.graph.constant(tensor))
            array[chosen] = 0
            payloads[tensor] = array
        planted[layer.name] = len(chosen)
    for name in payloads:
        header = headers[name]
        del header.external_data[:]
        header.ClearField("data_location")
        header.ClearField("raw_data")
    write_model(light, target, payloads=payloads, source_folder=model.file.folder)
    return planted


def latency(original: str, pruned: str, runs: int) -> dict:
    import onnxruntime as ort

    sessions = {name: ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                for name, path in (("original", original), ("pruned", pruned))}
    feed = sessions["original"].get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in feed.shape]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32) * 50
    outputs = {name: s.run(None, {feed.name: x})[0] for name, s in sessions.items()}  # warm-up
    times = {name: [] for name in sessions}
    for _ in range(runs):  # interleaved: both models see the same machine load
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {feed.name: x})
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    ref = outputs["original"].astype(np.float64)
    diff = float(np.max(np.abs(ref - outputs["pruned"])))
    return {"runs": runs, "batch": shape[0], "median_s": {k: round(v, 4) for k, v in medians.items()},
            "latency_ratio": round(medians["pruned"] / medians["original"], 3),
            "max_abs_output_diff": diff, "max_rel_output_diff": diff / float(np.max(np.abs(ref)))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "vgg16.onnx"))
    parser.add_argument("--dead", type=float, default=0.3, help="fraction of each layer's filters to kill")
    parser.add_argument("--runs", type=int, default=5, help="interleaved timed runs per model (after a warm-up)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    source = os.path.realpath(args.model)
    if not os.path.exists(source):
        print(f"{args.model} is missing: run `make demo` first", file=sys.stderr)
        return 2
    os.makedirs(OUT, exist_ok=True)
    planted_path = os.path.join(OUT, "vgg16_dead30.onnx")
    pruned_path = os.path.join(OUT, "vgg16_dead30_pruned.onnx")
    start = time.perf_counter()
    planted = plant(source, planted_path, args.dead)
    plant_s = time.perf_counter() - start

    from inspector.prune import prune

    start = time.perf_counter()
    result = prune(planted_path)
    result.write(pruned_path)
    prune_s = time.perf_counter() - start
    report = {
        "model": os.path.relpath(args.model, ROOT), "dead_fraction": args.dead,
        "planted_filters": sum(planted.values()), "removed_filters": result.removed_filters,
        "params_before": result.params_before, "params_after": result.params_after,
        "params_ratio": round(result.params_after / result.params_before, 4),
        "file_mb_before": round(os.path.getsize(planted_path) / 2**20, 1),
        "file_mb_after": round(os.path.getsize(pruned_path) / 2**20, 1),
        "macs_before": sum(r.macs_before or 0 for r in result.rows),
        "macs_after": sum(r.macs_after or 0 for r in result.rows),
        "plant_s": round(plant_s, 2), "prune_and_write_s": round(prune_s, 2),
    }
    report["file_ratio"] = round(report["file_mb_after"] / report["file_mb_before"], 4)
    report["macs_ratio"] = round(report["macs_after"] / report["macs_before"], 4)
    report.update(latency(planted_path, pruned_path, args.runs))
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text + "\n")
    for path in (planted_path, pruned_path):  # 0.5 GB each: not left behind
        os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
