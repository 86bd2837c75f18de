"""Benchmark items 1-3: feature maps side by side, the cost of the added outputs, filters of a 550 MB model.

Called by ``bench/run.py``; each function returns a JSON-ready dict. Also a
small command line of its own: ``python bench/bench_maps.py keras-weights
MODEL.onnx OUT.weights.h5`` copies the ONNX model's weights into Keras' VGG16
(run in a subprocess so that TensorFlow stays out of the benchmark process).
"""

from __future__ import annotations

import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (INSPECTOR, OUT, PYTHON, ROOT, interleaved, measure, ratio,  # noqa: E402
                    timed_calls)

HERE = os.path.dirname(os.path.abspath(__file__))


def _fresh_dir(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


# ------------------------------------------------------------------ Keras weights = ONNX weights

def keras_weights(model: str, log: str, echo=print) -> tuple[str | None, dict | None]:
    """A ``.weights.h5`` for Keras' VGG16 holding the ONNX model's weights (cached), and the check result."""
    import json

    target = os.path.join(OUT, "vgg16_from_onnx.weights.h5")
    check_file = target + ".check.json"
    if (os.path.exists(target) and os.path.exists(check_file)
            and os.path.getmtime(target) >= os.path.getmtime(model)):
        with open(check_file) as handle:
            return target, json.load(handle)
    echo("  copying the ONNX weights into Keras' VGG16 (once) ...")
    sample = measure([PYTHON, os.path.abspath(__file__), "keras-weights", model, target], log=log)
    # (a child of its own: TensorFlow must not load into the harness)
    if sample.returncode != 0 or not os.path.exists(check_file):
        echo(f"  could not copy the weights (see {log}); the Keras ways use random initial weights")
        return None, None
    with open(check_file) as handle:
        return target, json.load(handle)


def _copy_onnx_weights_into_keras(model_path: str, target: str) -> None:
    """Conv kernels OIHW -> HWIO; dense kernels copied where the shapes agree. Then compare maps."""
    import json

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    from keras.applications.vgg16 import VGG16

    import inspector

    onnx_model = inspector.load(model_path)
    keras_model = VGG16(weights=None)
    by_name = {layer.name: layer for layer in onnx_model.layers}
    copied = []
    for layer in keras_model.layers:
        if layer.name in by_name:
            weights, bias = onnx_model.filters_and_bias(by_name[layer.name])
            if bias is None:  # a zero bias may be dropped by the converter
                bias = np.zeros(weights.shape[0], np.float32)
            layer.set_weights([weights.transpose(2, 3, 1, 0), bias])
            copied.append(layer.name)
    keras_model.save_weights(target)

    # Same pictures? Both frameworks on the same preprocessed batch, every conv layer.
    rng = np.random.default_rng(0)
    batch_nhwc = rng.uniform(-120, 150, (1, 224, 224, 3)).astype(np.float32)
    fed = batch_nhwc.transpose(0, 3, 1, 2) if onnx_model.input.layout == "NCHW" else batch_nhwc
    ours = onnx_model.run(fed, layers=copied, device="cpu")
    import keras

    probe = keras.Model(keras_model.inputs, [keras_model.get_layer(n).output for n in copied])
    theirs = dict(zip(copied, probe.predict(batch_nhwc, verbose=0)))
    worst = 0.0
    for name in copied:
        expected = theirs[name].transpose(0, 3, 1, 2)
        scale = float(np.abs(expected).max()) or 1.0
        worst = max(worst, float(np.abs(ours[name] - expected).max()) / scale)
    with open(target + ".check.json", "w") as handle:
        json.dump({"layers_copied": len(copied), "max_relative_difference": worst,
                   "same_maps": worst < 1e-3}, handle)


# ------------------------------------------------------------------------------ item 1: maps

def maps_section(model: str, photo: str, runs: int, device: str, keras: bool, log: str, echo=print) -> dict:
    maps_out = os.path.join(OUT, "maps")
    commands: dict[str, list[str]] = {}
    notes = []
    check = None
    if keras:
        weights, check = keras_weights(model, log, echo)
        weight_args = ["--weights", weights] if weights else []
        if not weights:
            notes.append("Keras ways ran with their own random initial weights (copy from ONNX failed)")
        commands["tutorial"] = [PYTHON, os.path.join(HERE, "tutorial_way.py"), photo, *weight_args,
                                "-o", _fresh_dir(os.path.join(maps_out, "tutorial"))]
        commands["keract"] = [PYTHON, os.path.join(HERE, "keract_way.py"), photo, *weight_args,
                              "-o", _fresh_dir(os.path.join(maps_out, "keract"))]
    trunk = trunk_file(model, log)
    commands["inspector_layer1"] = [INSPECTOR, "maps", model, photo, "--layer", "block1_conv1", "--device", "cpu",
                                    "-o", _fresh_dir(os.path.join(maps_out, "inspector_layer1"))]
    # What the maps path imports, beside what the bare trunk script imports.
    commands["imports"] = [PYTHON, "-c", "import inspector.cli, inspector.commands.maps, inspector.api, "
                           "inspector.render, inspector.subgraph, onnx, onnxruntime, PIL.Image, PIL.ImageDraw"]
    commands["imports_floor"] = [PYTHON, "-c", "import numpy, onnxruntime, PIL.Image"]
    devices = ["cpu"] + (["cuda"] if device == "cuda" else [])
    for dev in devices:
        suffix = "" if dev == "cpu" else "_cuda"
        commands[f"inspector{suffix}"] = [INSPECTOR, "maps", model, photo, "--all", "--device", dev,
                                          "-o", _fresh_dir(os.path.join(maps_out, f"inspector{suffix}"))]
        commands[f"floor{suffix}"] = [PYTHON, os.path.join(HERE, "floor.py"), model, photo, "--device", dev]
        commands[f"plain{suffix}"] = [PYTHON, os.path.join(HERE, "floor.py"), model, photo, "--device", dev,
                                      "--plain"]
        if trunk:
            commands[f"trunk{suffix}"] = [PYTHON, os.path.join(HERE, "floor.py"), trunk, photo, "--device", dev,
                                          "--trunk"]
    measured = interleaved(commands, runs, env={"MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "3"},
                           log=log, echo=echo)
    ways = {name: m.summary() for name, m in measured.items()}
    size_mb = os.path.getsize(model) / 2**20
    for name, way in ways.items():
        floor = ways["floor_cuda" if name.endswith("_cuda") else "floor"]  # the floor
        way["ratio_to_floor"] = {key: ratio(way[key], floor[key]) for key in ("wall_s", "cpu_s", "peak_rss_mb")}
        trunk_way = ways.get("trunk_cuda" if name.endswith("_cuda") else "trunk")
        if trunk_way:  # the physical floor: a bare script over a file that holds only the trunk
            way["ratio_to_trunk"] = {key: ratio(way[key], trunk_way[key]) for key in ("wall_s", "cpu_s", "peak_rss_mb")}
        way["peak_rss_over_file"] = ratio(way["peak_rss_mb"], size_mb)
    inspector = ways["inspector"]
    goals = {"inspector_within_1.5x_of_floor": _goal(inspector["ratio_to_floor"]["wall_s"], 1.5, "<=")}
    if "trunk" in ways:
        goals["inspector_wall_over_trunk"] = inspector["ratio_to_trunk"]["wall_s"]
        goals["inspector_within_1.5x_of_trunk"] = _goal(inspector["ratio_to_trunk"]["wall_s"], 1.5, "<=")
    goals["inspector_peak_rss_over_file"] = inspector["peak_rss_over_file"]
    goals["inspector_peak_at_most_0.7x_file"] = _goal(inspector["peak_rss_over_file"], 0.7, "<=")
    layer1 = ways["inspector_layer1"]["peak_rss_over_file"]
    goals["layer1_peak_rss_over_file"] = layer1
    goals["layer1_peak_under_0.3x_file"] = None if layer1 is None else layer1 < 0.3
    if "tutorial" in ways:
        speedup = ratio(ways["tutorial"]["wall_s"], inspector["wall_s"], 1)
        goals["speedup_over_tutorial"] = speedup
        goals["inspector_5x_faster_than_tutorial"] = _goal(speedup, 5, ">=")
        goals["speedup_over_keract"] = ratio(ways["keract"]["wall_s"], inspector["wall_s"], 1)
    if "inspector_cuda" in ways:
        goals["cuda_speedup_inspector"] = ratio(inspector["wall_s"], ways["inspector_cuda"]["wall_s"])
        goals["cuda_speedup_floor"] = ratio(ways["floor"]["wall_s"], ways["floor_cuda"]["wall_s"])
    pngs = {name: len(os.listdir(os.path.join(maps_out, name)))
            for name in commands if os.path.isdir(os.path.join(maps_out, name))}
    return {"ways": ways, "goals": goals, "pngs_written": pngs, "keras_weights_check": check, "file_mb": round(size_mb, 1),
            "inspector_phases_s": in_subprocess("phases", model, photo, max(runs, 3), "cpu", log=log),
            **({"trunk_phases_s": in_subprocess("trunk-phases", trunk, photo, max(runs, 3), "cpu", log=log)}
               if trunk else {}),
            "png_options": in_subprocess("png-options", model, photo, max(runs, 3), "cpu", log=log),
            **({"inspector_phases_cuda_s": in_subprocess("phases", model, photo, max(runs, 3), "cuda", log=log)}
               if device == "cuda" else {}),
            "notes": notes}


def trunk_file(model: str, log: str) -> str | None:
    """bench/out/<model>_trunk.onnx: only the ancestors of the 13 maps, weights inline (made once, not timed)."""
    target = os.path.join(OUT, os.path.splitext(os.path.basename(model))[0] + "_trunk.onnx")
    if not (os.path.exists(target) and os.path.getmtime(target) >= os.path.getmtime(model)):
        sample = measure([PYTHON, os.path.join(HERE, "floor.py"), "make-trunk", model, target], log=log)
        if sample.returncode != 0:
            return None
    return target


def _goal(value, limit, how) -> bool | None:
    if value is None:
        return None
    return value <= limit if how == "<=" else value >= limit


def inspector_phases(model: str, photo: str, runs: int, device: str, imports_s: float = 0.0) -> dict:
    """Where ``inspector maps --all`` spends its time, phase by phase, in this process (medians)."""
    import statistics

    import inspector
    from inspector.atomic import ensure_dir, safe_name
    from inspector.render import draw_all, map_grid, save_maps_png

    out_dir = ensure_dir(_fresh_dir(os.path.join(OUT, "maps", "phases")))
    phases: dict[str, list[float]] = {"imports (once, fresh process)": [imports_s]}

    def tick(name, start):
        now = time.perf_counter()
        phases.setdefault(name, []).append(now - start)
        return now

    for _ in range(runs):
        t = time.perf_counter()
        m = inspector.load(model)
        layers = m.select(None, all_layers=True)
        t = tick("open model, find layers", t)
        spec = m.preprocessing()
        batch = m.image_batch([photo], spec)
        t = tick("read + preprocess photo", t)
        session = m.session(layers, device=device)
        t = tick("create session (cut to the maps' subgraph)", t)
        maps = {name: value[0] for name, value in session.run(batch).items()}
        t = tick("one inference", t)

        def draw(layer):
            grid = map_grid(maps[layer.name], layer, m.name, image_name="photo", preprocess=spec.mode,
                            cmap="viridis", max_maps=64, norm="map", untrained=m.untrained)
            save_maps_png(grid, os.path.join(out_dir, f"maps_{layer.index:02d}_{safe_name(layer.name)}.png"))

        list(draw_all(draw, layers))  # as `inspector maps` draws: every core
        tick("draw + write 13 PNGs", t)
        del session
    return {name: round(statistics.median(values), 3) for name, values in phases.items()}


def trunk_phases(trunk: str, photo: str, runs: int, device: str, imports_s: float = 0.0) -> dict:
    """The bare trunk script's phases (floor.py --trunk), in this process, for the same table."""
    import statistics

    import onnxruntime as ort
    from floor import _caffe

    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    phases: dict[str, list[float]] = {"imports (once, fresh process)": [imports_s]}
    for _ in range(runs):
        t = time.perf_counter()
        session = ort.InferenceSession(trunk, providers=providers)
        first = session.get_inputs()[0]
        now = time.perf_counter()
        phases.setdefault("create session (trunk file)", []).append(now - t)
        x = _caffe(photo, first.shape[1] == 3)
        t = time.perf_counter()
        phases.setdefault("read + preprocess photo", []).append(t - now)
        session.run(None, {first.name: x})
        phases.setdefault("one inference", []).append(time.perf_counter() - t)
        del session
    return {name: round(statistics.median(values), 3) for name, values in phases.items()}


def png_options(model: str, photo: str, runs: int, device: str) -> dict:
    """Seconds and bytes to encode the 13 map grids of ``maps --all``, per encoder, level and thread count."""
    import io
    import statistics

    import numpy as np

    import inspector
    from inspector.render import draw_all, map_grid, png_bytes

    m = inspector.load(model)
    layers = m.select(None, all_layers=True)
    spec = m.preprocessing()
    maps = {name: value[0] for name, value in m.session(layers, device=device).run(m.image_batch([photo], spec)).items()}
    images = [map_grid(maps[layer.name], layer, m.name, cmap="viridis", max_maps=64).to_image(min_tile=64, max_tile=112)
              for layer in layers]
    pixels = [np.asarray(image) for image in images]

    def pillow(level):
        def encode(image):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=level)
            return buffer.tell()
        return encode, images

    import zlib

    from inspector import render

    def unfiltered(module, level):
        return (lambda array: len(png_bytes(array, level, deflate=module))), pixels

    options = {"Pillow level 3 (adaptive row filters; the first version)": pillow(3), "Pillow level 1": pillow(1)}
    for level in (1, 3, 6):
        options[f"unfiltered rows, zlib level {level}" + (" (before zlib-ng)" if level == 1 else "")] = unfiltered(
            zlib, level)
    ng = render._deflate()
    if ng is not zlib:
        for level in (1, 2, 3):
            options[f"unfiltered rows, zlib-ng level {level}" + (" (inspector)" if level == render.PNG_LEVEL
                                                                   else "")] = unfiltered(ng, level)
    result = {"pixels_mb": round(sum(a.nbytes for a in pixels) / 2**20, 1), "grids": len(pixels), "options": {}}
    for name, (encode, items) in options.items():
        row = {}
        for threads in (1, os.cpu_count() or 1):
            seconds = []
            for _ in range(runs):
                t = time.perf_counter()
                sizes = list(draw_all(encode, items, workers=threads))
                seconds.append(time.perf_counter() - t)
            row[f"{threads} thread(s) s"] = round(statistics.median(seconds), 3)
        row["MB"] = round(sum(sizes) / 2**20, 2)
        result["options"][name] = row
    return result


# -------------------------------------------------------------------- item 2: added outputs

THREADS = 2  # pinned, so that the compared runs use the same pool whatever the machine


def _sessions(m, outputs: list[str], device: str):
    """Plain and all-outputs sessions over the same light model, same options, ``THREADS`` intra-op threads."""
    import onnxruntime as ort

    from inspector.execution import add_outputs, session_options

    providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda"
                 else ["CPUExecutionProvider"])

    def make(model):
        options = session_options(m.file.folder)
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(m.file.serialized(model), options, providers=providers)
        return session

    plain = make(m.file.model)
    added = make(add_outputs(m.file.model, outputs))
    return plain, added, plain.get_providers()[0]


def _bound_runner(session, feeds: dict, names: list[str], device: str):
    """``run_with_iobinding`` into output buffers allocated once and reused on every call."""
    import numpy as np

    shapes = [value.shape for value in session.run(names, feeds)]
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    buffers = []
    for name, shape in zip(names, shapes):
        buffer = np.empty(shape, np.float32)
        buffers.append(buffer)
        binding.bind_output(name, "cpu", 0, np.float32, list(shape), buffer.ctypes.data)

    def call():
        session.run_with_iobinding(binding)
        return buffers

    return call


def _paired(timings: dict, numerator: str, denominator: str) -> float:
    """Median over rounds of (numerator's call / denominator's call in the same round)."""
    import statistics

    pairs = zip(timings[numerator]["samples_s"], timings[denominator]["samples_s"])
    return round(statistics.median(a / b for a, b in pairs), 3)


def overhead_section(model: str, photo: str, runs: int, device: str, batch_sizes=(1, 8)) -> dict:
    """One inference with every conv output added / the same light model run plainly, in one process.

    Four calls interleaved after warm-ups: the plain model and the all-outputs
    model, each through ``session.run`` (fresh output arrays every call, as
    inspector does today) and through IOBinding into preallocated buffers.
    ``runs`` calls each at batch 1; batch 8 (seconds per call on 2 cores) gets
    a third as many, at least 3.
    """
    import numpy as np

    import inspector

    m = inspector.load(model)
    layers = m.select(None, all_layers=True)
    conv_outputs = list(dict.fromkeys(layer.output for layer in layers))
    plain, added, provider = _sessions(m, conv_outputs, device)
    plain_outputs = [o.name for o in plain.get_outputs()]
    all_outputs = plain_outputs + [name for name in conv_outputs if name not in plain_outputs]
    one = m.image_batch([photo])
    result = {"provider": provider, "intra_op_threads": THREADS, "outputs_added": len(conv_outputs),
              "batches": {}}
    for size in batch_sizes:
        batch = np.ascontiguousarray(np.repeat(one, size, axis=0))
        feeds = {m.input.name: batch}
        output_mb = sum(v.nbytes for v in added.run(all_outputs, feeds)) / 2**20
        repeats = runs if size == 1 else max(3, runs // 3)
        # (a third as many at batch 8: each call takes seconds on 2 cores)
        timings = timed_calls({
            "plain": lambda: plain.run(plain_outputs, feeds),
            "all_conv_outputs": lambda: added.run(all_outputs, feeds),
            "plain_iobinding": _bound_runner(plain, feeds, plain_outputs, device),
            "all_conv_outputs_iobinding": _bound_runner(added, feeds, all_outputs, device),
        }, runs=repeats, warmup=3 if size == 1 else 1)
        # The ratio of one round's neighbouring calls shares that moment's machine load; the median of
        # those per-round ratios is steadier on a shared machine than a ratio of two medians.
        result["batches"][str(size)] = {
            **timings, "outputs_mb": round(output_mb, 1),
            "ratio": _paired(timings, "all_conv_outputs", "plain"),
            "ratio_min": ratio(timings["all_conv_outputs"]["min_s"], timings["plain"]["min_s"], 3),
            "ratio_iobinding": _paired(timings, "all_conv_outputs_iobinding", "plain"),
            "ratio_iobinding_min": ratio(timings["all_conv_outputs_iobinding"]["min_s"],
                                         timings["plain"]["min_s"], 3),
            "ratio_plain_iobinding": _paired(timings, "plain_iobinding", "plain"),
            "ratio_iobinding_vs_plain_iobinding": _paired(timings, "all_conv_outputs_iobinding", "plain_iobinding"),
            "ratio_of_medians": ratio(timings["all_conv_outputs"]["median_s"], timings["plain"]["median_s"], 3)}
    worst = max(b["ratio"] for b in result["batches"].values())
    worst_bound = max(b["ratio_iobinding"] for b in result["batches"].values())
    result["goals"] = {"overhead_ratio": worst, "overhead_at_most_1.10": _goal(worst, 1.10, "<="),
                       "overhead_ratio_iobinding": worst_bound,
                       "overhead_iobinding_at_most_1.10": _goal(worst_bound, 1.10, "<=")}
    return result


# ------------------------------------------------------------------ item 3: filters, 550 MB

def filters_section(model: str, runs: int, log: str, echo=print) -> dict:
    size_mb = os.path.getsize(model) / 2**20
    commands = {
        "inspector": [INSPECTOR, "filters", model, "--all", "-o", _fresh_dir(os.path.join(OUT, "filters"))],
        # What a script does without lazy reading: onnx.load, then every conv kernel as an array.
        "onnx.load": [PYTHON, "-c", (
            "import sys, onnx; from onnx import numpy_helper as h; m = onnx.load(sys.argv[1]); "
            "inits = {t.name: t for t in m.graph.initializer}; "
            "ws = [h.to_array(inits[n.input[1]]) for n in m.graph.node if n.op_type == 'Conv']; "
            "print(len(ws))"), model],
    }
    measured = interleaved(commands, runs, env={"MPLBACKEND": "Agg"}, log=log, echo=echo)
    ways = {name: m.summary() for name, m in measured.items()}
    for way in ways.values():
        way["peak_rss_over_file"] = ratio(way["peak_rss_mb"], size_mb)
    peak = ways["inspector"]["peak_rss_over_file"]
    return {"file_mb": round(size_mb, 1), "ways": ways,
            "goals": {"peak_rss_over_file": peak, "peak_at_most_1.5x_file": _goal(peak, 1.5, "<=")}}


def in_subprocess(task: str, *arguments, log: str | None = None) -> dict | None:
    """Run one in-process measurement in a child, so that this (the harness) process stays small.

    A child started from a big parent keeps the parent's high-water mark
    through exec, and its ``ru_maxrss`` would report at least the parent's
    peak: the harness must never load models itself (common.check_harness).
    """
    import json
    import tempfile

    with tempfile.TemporaryDirectory(dir=OUT) as folder:
        target = os.path.join(folder, "result.json")
        sample = measure([PYTHON, os.path.abspath(__file__), task, *map(str, arguments), target], log=log)
        if sample.returncode != 0 or not os.path.exists(target):
            return None
        with open(target) as handle:
            return json.load(handle)


def model_info(path: str) -> dict:
    import inspector

    model = inspector.load(path)
    return {"size_mb": round(os.path.getsize(path) / 2**20, 1),
            "weights": "random" if model.untrained else model.metadata.get("inspector.weights_source", "unknown"),
            "conv_layers": len(model.layers), "input_layout": model.input.layout,
            "source_framework": model.metadata.get("inspector.source_framework"),
            "converter": model.metadata.get("inspector.converter")}


def main(argv) -> None:
    import argparse

    imports_s = 0.0
    if argv[:1] == ["phases"]:  # what `inspector maps` imports, timed first thing in this fresh process
        started = time.perf_counter()
        import inspector.api, inspector.cli, inspector.commands.maps, inspector.render, inspector.subgraph  # noqa
        import onnx, onnxruntime, PIL.Image, PIL.ImageDraw  # noqa: E401, F401
        imports_s = time.perf_counter() - started
    elif argv[:1] == ["trunk-phases"]:  # what floor.py --trunk imports
        started = time.perf_counter()
        import numpy, onnxruntime, PIL.Image  # noqa: E401, F401
        imports_s = time.perf_counter() - started

    from common import make_vgg16_onnx, write_json

    parser = argparse.ArgumentParser(description="in-process parts of the benchmark (bench/run.py calls these)")
    sub = parser.add_subparsers(dest="task", required=True)
    sub.add_parser("generate").add_argument("path")
    for task in ("keras-weights", "model-info"):
        sub.add_parser(task).add_argument("args", nargs="+")
    for task in ("overhead", "phases", "trunk-phases", "png-options"):
        p = sub.add_parser(task)
        for name in ("model", "photo", "runs", "device", "out"):
            p.add_argument(name)
        p.add_argument("--batches", default="1,8", help="overhead: comma-separated batch sizes")
    args = parser.parse_args(argv)
    if args.task == "generate":
        make_vgg16_onnx(args.path)
    elif args.task == "keras-weights":
        _copy_onnx_weights_into_keras(*args.args)
    elif args.task == "model-info":
        write_json(args.args[1], model_info(args.args[0]))
    elif args.task == "overhead":
        write_json(args.out, overhead_section(args.model, args.photo, int(args.runs), args.device,
                                                    tuple(int(b) for b in args.batches.split(","))))
    elif args.task == "phases":
        write_json(args.out, inspector_phases(args.model, args.photo, int(args.runs), args.device, imports_s))
    elif args.task == "trunk-phases":
        write_json(args.out, trunk_phases(args.model, args.photo, int(args.runs), args.device, imports_s))
    elif args.task == "png-options":
        write_json(args.out, png_options(args.model, args.photo, int(args.runs), args.device))


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main(sys.argv[1:])
