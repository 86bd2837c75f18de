"""Shared benchmark machinery: measured subprocesses, interleaved rounds, medians, the machine.

Every compared command runs as its own process so that wall time includes the
imports and the model loading a user pays for, CPU time is user + system of
that process (``os.wait4``), and peak RSS is the kernel's high-water mark for
it (``ru_maxrss``). Rounds interleave the commands (A B C D, A B C D, ...) so
that a slow minute of the machine hurts every contender alike.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
PYTHON = sys.executable
INSPECTOR = os.path.join(os.path.dirname(PYTHON), "inspector")

MB = 1024 * 1024


@dataclass
class Sample:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int


@dataclass
class Measured:
    """Samples of one command over the rounds, and their medians."""

    name: str
    command: list[str]
    samples: list[Sample] = field(default_factory=list)

    def median(self, attribute: str) -> float | None:
        values = [getattr(s, attribute) for s in self.samples if s.returncode == 0]
        return statistics.median(values) if values else None

    def summary(self) -> dict:
        return {
            "command": " ".join(_short(c) for c in self.command),
            "runs": len(self.samples),
            "failed_runs": sum(s.returncode != 0 for s in self.samples),
            "wall_s": _round(self.median("wall_s")),
            "cpu_s": _round(self.median("cpu_s")),
            "peak_rss_mb": _round(self.median("peak_rss_mb"), 1),
            "samples": [asdict(s) for s in self.samples],
        }


def _round(value, digits=3):
    return None if value is None else round(value, digits)


def _short(part: str) -> str:
    return os.path.relpath(part, ROOT) if os.path.isabs(part) and part.startswith(ROOT) else part


def measure(command: list[str], env: dict | None = None, log: str | None = None) -> Sample:
    """Run one command to completion: wall, CPU (user + sys) and peak RSS of that process tree.

    ``ru_maxrss`` from ``wait4`` is the largest resident set of the child or of
    any descendant it waited for, in KiB on Linux.
    """
    check_harness()
    stdout = open(log, "ab") if log else subprocess.DEVNULL
    try:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})}, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            stdout.close()
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, process.returncode)


# A child started with vfork/fork + exec keeps its parent's high-water mark: Linux folds the old
# memory's peak into the child's ``ru_maxrss`` at exec (checked here: a bare ``python -c pass``
# started by a parent that once held 1.9 GB reports 1.9 GB). So the harness must never load a model
# or TensorFlow itself; every measurement refuses to run once it has grown past this.
HARNESS_LIMIT_MB = 200


def harness_peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_harness() -> None:
    peak = harness_peak_mb()
    if peak > HARNESS_LIMIT_MB:
        raise RuntimeError(f"the benchmark harness itself reached {peak:.0f} MB; every child's peak RSS would "
                           f"read at least that much (run in-process measurements through in_subprocess)")


def interleaved(commands: dict[str, list[str]], runs: int, env: dict | None = None,
                log: str | None = None, echo=print) -> dict[str, Measured]:
    """``runs`` rounds of every command in turn; one warm-up round first (page cache, .pyc files)."""
    results = {name: Measured(name, command) for name, command in commands.items()}
    for round_index in range(runs + 1):
        for name, command in commands.items():
            sample = measure(command, env, log)
            label = "warm-up" if round_index == 0 else f"run {round_index}/{runs}"
            status = "" if sample.returncode == 0 else f"  FAILED (exit {sample.returncode}, see {log})"
            echo(f"  {name:<12} {label:<9} {sample.wall_s:7.2f} s wall {sample.cpu_s:7.2f} s cpu "
                 f"{sample.peak_rss_mb:7.0f} MB peak{status}")
            if round_index:
                results[name].samples.append(sample)
    return results


def timed_calls(calls: dict[str, callable], runs: int, warmup: int = 2) -> dict[str, dict]:
    """In-process timing of callables, interleaved; median seconds per call."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(warmup + runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                times[name].append(elapsed)
    return {name: {"median_s": round(statistics.median(values), 5), "min_s": round(min(values), 5),
                   "runs": len(values), "samples_s": [round(v, 5) for v in values]}
            for name, values in times.items()}


def ratio(numerator, denominator, digits=2):
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def library_versions() -> dict[str, str | None]:
    """Versions from package metadata (importing tensorflow just to ask would cost seconds)."""
    from importlib import metadata

    names = ("inspector-cnn", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "matplotlib", "pillow",
             "tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "torch")
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": memory_gb(),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": library_versions(),
    }


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def sample_photo() -> str:
    import matplotlib.cbook

    return matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def run_json_worker(way: str, command: list[str]) -> dict:
    """Run one way's worker process; its last line of stdout is its JSON result."""
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{way} worker failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_json(path: str, data) -> None:
    """Benchmark output (not a user-facing artefact): temp file + rename all the same."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1)
        handle.write("\n")
    os.replace(tmp, path)


def read_json(path: str):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------- VGG16 stand-in

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG16_DENSE = (("fc1", 512 * 7 * 7, 4096), ("fc2", 4096, 4096), ("predictions", 4096, 1000))


def make_vgg16_onnx(path: str, seed: int = 0) -> str:
    """A VGG16-shaped ONNX file with random weights, built with onnx.helper (no TensorFlow).

    Same layers and sizes as Keras' VGG16 (13 convs named block1_conv1..,
    three dense layers, 138 M parameters, ~553 MB), NCHW input, caffe
    preprocessing stamped in the metadata and the weights marked random.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from inspector import metadata as md
    from inspector.preprocess import preset

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    tensor, channels = "input_1", 3

    def weight(name, shape, fan_in):
        # He-scaled so that activations neither vanish nor explode through 13 layers.
        values = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        inits.append(numpy_helper.from_array(values, name))
        return name

    for block, widths in enumerate(VGG16_BLOCKS, start=1):
        for conv, width in enumerate(widths, start=1):
            name = f"block{block}_conv{conv}"
            w = weight(f"{name}/kernel", (width, channels, 3, 3), channels * 9)
            b = weight(f"{name}/bias", (width,), 1e6)
            nodes.append(helper.make_node("Conv", [tensor, w, b], [f"{name}/conv"], name=f"{name}/Conv",
                                          pads=[1, 1, 1, 1], kernel_shape=[3, 3]))
            nodes.append(helper.make_node("Relu", [f"{name}/conv"], [name], name=f"{name}/Relu"))
            tensor, channels = name, width
        pool = f"block{block}_pool"
        nodes.append(helper.make_node("MaxPool", [tensor], [pool], name=pool, kernel_shape=[2, 2], strides=[2, 2]))
        tensor = pool
    nodes.append(helper.make_node("Flatten", [tensor], ["flatten"], name="flatten", axis=1))
    tensor = "flatten"
    for name, fan_in, width in VGG16_DENSE:
        w = weight(f"{name}/kernel", (fan_in, width), fan_in)
        b = weight(f"{name}/bias", (width,), 1e6)
        nodes.append(helper.make_node("Gemm", [tensor, w, b], [f"{name}/gemm"], name=f"{name}/Gemm"))
        activation = "Softmax" if name == "predictions" else "Relu"
        nodes.append(helper.make_node(activation, [f"{name}/gemm"], [name], name=f"{name}/{activation}"))
        tensor = name
    graph = helper.make_graph(
        nodes, "vgg16", [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info(tensor, TensorProto.FLOAT, ["N", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench/common.py")
    model.ir_version = 8
    for key, value in ((md.MODEL_NAME, "vgg16"), (md.INPUT_LAYOUT, "NCHW"),
                       (md.PREPROCESS, preset("caffe").to_json()), (md.WEIGHTS_TRAINED, "false"),
                       (md.WEIGHTS_SOURCE, "random")):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    onnx.save(model, tmp)
    os.replace(tmp, path)
    return path
