"""Conversion of the full VGG16: wall time and peak RSS, per stage and for the whole process.

    python bench/bench_convert.py --json bench/out/convert.json [--runs N] [--no-check] [--no-torch]
    python bench/bench_convert.py --only torch      # the torch run alone (about 30 s)

Every conversion runs in a fresh child process (one at a time: they are heavy).
Keras VGG16 gets random weights (``--weights none``: ImageNet's cannot be
downloaded here; time and memory do not depend on the values). Measured:

- ``keras``: ``inspector convert keras-app VGG16 --weights none`` as a plain
  command, whole process (``ru_maxrss`` from ``wait4``; goal <= 4 GB, <= 60 s);
- ``keras_stages``: the same conversion in-process with ``converters.measure``
  (exact per-stage peaks from the kernel's high-water mark);
- ``keras_check``: the same with ``--check`` (parity per conv layer on random input);
- ``torch``: a VGG16-sized torch model built in code (no torchvision download),
  through ``inspector convert torch bench/bench_convert.py:torch_vgg16``; goal:
  peak <= 2x the model's weights + the interpreter (torch, onnx, onnxruntime
  imported, measured in the same child before the model is built).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PYTHON = sys.executable
GB = 1024.0  # MB

# Quoted from issue 3 (measured there on this machine; not re-measured: the first eats 14 GB).
BASELINES = {
    "tf2onnx.convert.from_keras (default)": "passes 14 GB, killed",
    "keras model.export(format='onnx')": "passes 14 GB, killed",
    "tf2onnx, grappler and optimizers off": "43 s, 6.8 GB, 36 Transpose nodes, 4 s onnxruntime session start",
    "tf2onnx default, include_top=False base (58 MB)": "3.2 GB peak",
}


# ------------------------------------------------------------------ the torch model

def torch_vgg16():
    """VGG16 as torchvision lays it out (features.N, classifier.N), random weights: 138M parameters."""
    from torch import nn

    layers, channels = [], 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width

    class VGG16(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
                nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 1000))

        def forward(self, x):
            return self.classifier(self.avgpool(self.features(x)).flatten(1))

    return VGG16()


# ------------------------------------------------------------------ children

def _child(kind: str, out_json: str, check: bool) -> int:
    """One conversion in this (fresh) process; figures to ``out_json``."""
    sys.path.insert(0, ROOT)
    from converters.measure import current_rss_mb

    target = os.path.join(tempfile.mkdtemp(prefix="bench-convert-"), "model.onnx")
    start = time.perf_counter()
    if kind == "keras":
        from converters import api

        result = api.convert_keras_app("VGG16", target, weights="none", check=check, measure=True,
                                       warn=lambda _m: None)
        extra = {}
    else:
        import onnx  # noqa: F401  (the interpreter the goal allows: everything imported, no model yet)
        import onnxruntime  # noqa: F401
        import torch

        from converters import api

        interpreter = current_rss_mb()
        module = torch_vgg16()
        weights_mb = sum(p.numel() * p.element_size() for p in module.parameters()) / 2**20
        del module
        result = api.convert_torch(torch_vgg16, (1, 3, 224, 224), target, check=check, measure=True)
        extra = {"interpreter_rss_mb": interpreter, "weights_mb": weights_mb, "torch": torch.__version__}
    wall = time.perf_counter() - start
    summary = result.stages
    figures = {
        "seconds": wall,
        "peak_rss_mb": summary["peak_rss_mb"],
        "stages": {s["name"]: {"seconds": s["seconds"], "peak_rss_mb": s["peak_rss_mb"]} for s in summary["stages"]},
        "conv_layers": len(result.conv_layers),
        "nodes": sum(result.ops.values()),
        "transposes": result.transposes,
        "file_mb": os.path.getsize(target) / 2**20,
        "worst_relative": max((d.relative for d in result.parity), default=None),
        **extra,
    }
    os.unlink(target)
    os.rmdir(os.path.dirname(target))
    with open(out_json, "w") as handle:
        json.dump(figures, handle)
    return 0


def _measure(command: list[str]) -> dict:
    """Wall, CPU and peak RSS (``wait4``) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    output = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"failed (exit {code}): {' '.join(command)}\n{output[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def _child_figures(kind: str, check: bool) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        path = handle.name
    try:
        command = [PYTHON, os.path.abspath(__file__), "--child", kind, path] + (["--check"] if check else [])
        process = _measure(command)
        with open(path) as handle:
            figures = json.load(handle)
    finally:
        os.unlink(path)
    figures["process_wall_s"] = process["wall_s"]
    return figures


def _median_runs(runs: int, one) -> dict:
    samples = [one() for _ in range(runs)]
    if runs == 1:
        return samples[0]
    merged = dict(samples[-1])
    for key, value in samples[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(s[key] for s in samples)
    return merged


def run(args) -> dict:
    sys.path.insert(0, ROOT)
    inspector_cli = os.path.join(os.path.dirname(PYTHON), "inspector")
    cli = [inspector_cli] if os.path.exists(inspector_cli) else [PYTHON, "-m", "inspector"]
    data = {"note": "Keras VGG16 with random weights (--weights none: ImageNet weights cannot be downloaded "
                    "here; time and memory do not depend on the values); torch: a VGG16-sized module built in "
                    "code, random weights",
            "runs": args.runs}

    def plain_keras():
        with tempfile.TemporaryDirectory(prefix="bench-convert-") as folder:
            figures = _measure(cli + ["convert", "keras-app", "VGG16", "--weights", "none",
                                      "-o", os.path.join(folder, "vgg16.onnx")])
        return figures

    if args.only != "torch":
        print("keras VGG16, plain command ...", flush=True)
        keras = _median_runs(args.runs, plain_keras)
        keras["goal"] = "<= 4096 MB and <= 60 s"
        keras["goal_met"] = keras["peak_rss_mb"] <= 4 * GB and keras["wall_s"] <= 60
        data["keras"] = keras
        print("keras VGG16, stages ...", flush=True)
        staged = _child_figures("keras", check=False)
        data["keras_stages"] = staged.pop("stages")
        data["keras_file"] = {k: staged[k] for k in ("conv_layers", "nodes", "transposes", "file_mb")}
    if args.check and args.only != "torch":
        print("keras VGG16 with --check ...", flush=True)
        checked = _child_figures("keras", check=True)
        data["keras_check_stages"] = checked.pop("stages")
        data["keras_check"] = {"seconds": checked["process_wall_s"], "peak_rss_mb": checked["peak_rss_mb"],
                               "worst_relative": checked["worst_relative"],
                               "goal_met": checked["peak_rss_mb"] <= 4 * GB}
    if args.torch and args.only != "keras":
        print("torch VGG16-sized module ...", flush=True)
        torch_figures = _median_runs(args.runs, lambda: _child_figures("torch", check=False))
        data["torch_stages"] = torch_figures.pop("stages")
        allowed = 2 * torch_figures["weights_mb"] + torch_figures["interpreter_rss_mb"]
        data["torch"] = {"seconds": torch_figures["process_wall_s"], "peak_rss_mb": torch_figures["peak_rss_mb"],
                         "weights_mb": torch_figures["weights_mb"],
                         "interpreter_rss_mb": torch_figures["interpreter_rss_mb"],
                         "peak_over_interpreter_per_weights": (torch_figures["peak_rss_mb"]
                                                               - torch_figures["interpreter_rss_mb"])
                         / torch_figures["weights_mb"],
                         "goal": "peak <= 2 x weights + interpreter", "allowed_mb": allowed,
                         "goal_met": torch_figures["peak_rss_mb"] <= allowed,
                         "nodes": torch_figures["nodes"], "transposes": torch_figures["transposes"]}
    data["baselines_quoted_from_issue_3"] = BASELINES
    return data


def table(data: dict) -> str:
    lines = []
    if "keras" in data:
        k = data["keras"]
        lines.append(f"Keras VGG16 (random weights), whole `inspector convert` process: {k['wall_s']:.1f} s wall, "
                     f"{k['peak_rss_mb']:.0f} MB peak RSS (goal <= 4096 MB, <= 60 s: "
                     f"{'met' if k['goal_met'] else 'MISSED'})")
        f = data["keras_file"]
        lines.append(f"  file: {f['file_mb']:.0f} MB, {f['conv_layers']} conv layers, {f['nodes']} nodes, "
                     f"{f['transposes']} Transpose")
    for title, key in (("stages", "keras_stages"), ("stages with --check", "keras_check_stages"),
                       ("torch stages", "torch_stages")):
        if key not in data:
            continue
        lines.append(f"  {title}:")
        for name, stage in data[key].items():
            lines.append(f"    {name:<22} {stage['seconds']:6.1f} s  peak {stage['peak_rss_mb']:6.0f} MB")
        if key == "keras_check_stages":
            c = data["keras_check"]
            lines.append(f"    with --check: {c['seconds']:.1f} s, peak {c['peak_rss_mb']:.0f} MB, "
                         f"worst relative difference {c['worst_relative']:.2g}")
    if "torch" in data:
        t = data["torch"]
        lines.append(f"torch VGG16-sized ({t['weights_mb']:.0f} MB of weights): {t['seconds']:.1f} s, peak "
                     f"{t['peak_rss_mb']:.0f} MB = interpreter {t['interpreter_rss_mb']:.0f} MB + "
                     f"{t['peak_over_interpreter_per_weights']:.2f} x weights (goal <= 2 x: "
                     f"{'met' if t['goal_met'] else 'MISSED'})")
    lines.append("Baselines (quoted from issue 3, not re-measured):")
    for name, figure in data["baselines_quoted_from_issue_3"].items():
        lines.append(f"  {name}: {figure}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="FILE", help="write the figures here (e.g. bench/out/convert.json)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each measurement (median; default 1)")
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the --check run")
    parser.add_argument("--no-torch", dest="torch", action="store_false", help="skip the torch run")
    parser.add_argument("--only", choices=("keras", "torch"),
                        help="run only the Keras or only the torch measurements (--json: merged into the file)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--check", dest="child_check", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child[0], args.child[1], args.child_check)
    data = run(args)
    print(table(data))
    if args.json:
        sys.path.insert(0, ROOT)
        from inspector.atomic import ensure_parent, write_text

        ensure_parent(args.json)
        if args.only and os.path.exists(args.json):  # one half re-measured: keep the other's figures
            with open(args.json) as handle:
                data = {**json.load(handle), **data}
        write_text(args.json, json.dumps(data, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
