"""`make bench`'s `imports` section: what each command imports as it runs, against the bare floor.

Each command runs once for real on a tiny model (built here with onnx.helper: what a command
imports depends on its code path, not on the model's size) and lists the modules it has loaded
when it returns, lazy imports included. Then a fresh interpreter imports exactly those modules
under ``python -X importtime``: the command's import cost is the sum of the top-level cumulative
times. (Timing the imports inside the real run instead counts the time an import waits for the
GIL while another thread decodes images or draws: audit and diff then read 0.5 s more.) The
floor is a bare onnxruntime script's imports (``import numpy, onnxruntime, PIL.Image``), measured
the same way. Rounds interleave the floor
and every command. Two figures per side: ``-X importtime``'s wall seconds (fastest round, and the
median), and the importing process's CPU seconds (user + system, median; interpreter start-up
cancels in the difference). The goals use CPU: an import is a fixed amount of work, and on this
shared 2-core machine another job stretches the wall figures of the same runs by 2x or more,
the CPU figures by about a quarter.

Budgets (the goal lines):
- each hot command (layers, filters, maps, cam, audit, diff, prune) at most 0.20 s of CPU over the floor.
  Today about 0.1 s (onnx and its protobuf, inspector's own modules, Pillow's drawing). The
  issue-11 goal leaves `maps --all` on the 528 MB VGG16 0.25 s of headroom over the trunk floor
  for everything it does beyond a bare run; imports may take at most 0.2 s of that, and a
  dependency release adding 0.5 s (ml_dtypes 0.7.0) misses it by far. `report` is shown without a
  goal: it draws its charts with matplotlib.
- ``import ml_dtypes`` (onnx imports it, so every command pays it) at most 0.10 s after NumPy
  (importtime, fastest round):
  0.6.0 takes about 0.01 s, 0.7.0 took 0.5 s.

Usage: bench/bench_imports.py --json FILE [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HOT = ("layers", "filters", "maps", "cam", "audit", "diff", "prune")
BUDGET_S = 0.20
ML_DTYPES_BUDGET_S = 0.10
FLOOR = "import numpy, onnxruntime, PIL.Image"
_CHILD = ("import json, sys\n"
          "from inspector.cli import main\n"
          "code = main(sys.argv[1:])\n"
          "print('MODULES ' + json.dumps([code, sorted(sys.modules)]), file=sys.stderr)\n")
# Imports the modules named on its command line (parents sort before their submodules).
_IMPORTER = ("import importlib, sys\n"
             "for name in sys.argv[1:]:\n"
             "    try:\n"
             "        importlib.import_module(name)\n"
             "    except Exception:  # a module that only its parent can load (a C extension's part)\n"
             "        pass\n")


def parse_importtime(text: str) -> dict[str, float]:
    """``{"": total, top-level module: cumulative}`` in seconds from ``-X importtime``'s stderr."""
    times = {"": 0.0}
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        if not name[1:].startswith(" "):
            times[name.strip()] = int(cumulative) / 1e6
            times[""] += int(cumulative) / 1e6
    return times


def importable(modules: list[str]) -> list[str]:
    return [m for m in modules if not m.startswith("__") and m != "_distutils_hack"]


def timed(argv: list[str]) -> tuple[dict[str, float], list[str]]:
    """``-X importtime``'s figures (wall, key ``""`` the total) plus ``"cpu"``: the process's user +
    system seconds, start-up included; and the modules a command child reported."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    result = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True,
                            env=env, timeout=600)
    modules = []
    for line in result.stderr.splitlines():
        if line.startswith("MODULES "):
            code, modules = json.loads(line[len("MODULES "):])
            if code != 0:
                raise RuntimeError(f"{argv[2:4]} exited {code}: {result.stderr[-1000:]}")
    if result.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed: {result.stderr[-1000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    times = parse_importtime(result.stderr)
    times["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return times, modules


def tiny_inputs(folder: str) -> dict[str, list[str]]:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from PIL import Image

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("w1", (8, 3, 3, 3)), ("b1", (8,)), ("w2", (16, 8, 3, 3)), ("b2", (16,)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["y"], name="relu2")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = os.path.join(folder, "tiny.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    photos = []
    for seed in (0, 1):
        path = os.path.join(folder, f"photo{seed}.png")
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        photos.append(path)
    out = os.path.join(folder, "out")
    photo, other = photos
    raw = ["--preprocess", "raw"]
    return {
        "layers": ["layers", model],
        "filters": ["filters", model, "--all", "-o", out],
        "maps": ["maps", model, photo, "--all", *raw, "-o", out],
        "cam": ["cam", model, photo, "--method", "eigencam", *raw, "-o", out],
        "audit": ["audit", model, photo, other, *raw, "--json", os.path.join(out, "audit.json")],
        "diff": ["diff", model, model, photo, *raw, "--json", os.path.join(out, "diff.json")],
        "prune": ["prune", model, "--dry-run"],
        "report": ["report", model, photo, *raw, "-o", os.path.join(out, "report.html")],
    }


def third_party(modules: list[str]) -> list[str]:
    tops = {m.split(".")[0] for m in modules}
    return sorted(m for m in tops - set(sys.stdlib_module_names) - {"__main__", "inspector"}
                  if not m.startswith("_"))


def measure(runs: int) -> dict:
    floor: list[float] = []
    floor_cpu: list[float] = []
    cpu: dict[str, list[float]] = {}
    ml_dtypes: list[float] = []
    onnx_over_floor: list[float] = []
    totals: dict[str, list[float]] = {}
    differences: dict[str, list[float]] = {}
    modules: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as folder:
        commands = tiny_inputs(folder)
        for name, argv in commands.items():
            modules[name] = importable(timed(["-c", _CHILD, *argv])[1])
        for round_ in range(runs + 1):  # round 0 warms the file cache and is not counted
            base_times = timed(["-c", FLOOR])[0]
            base = base_times[""]
            md = timed(["-c", "import numpy; import ml_dtypes"])[0]["ml_dtypes"]
            ox = timed(["-c", FLOOR + "; import onnx"])[0]["onnx"]
            if round_:
                floor.append(base)
                floor_cpu.append(base_times["cpu"])
                ml_dtypes.append(md)
                onnx_over_floor.append(ox)
            for name in commands:
                times = timed(["-c", _IMPORTER, *modules[name]])[0]
                if round_:
                    totals.setdefault(name, []).append(times[""])
                    cpu.setdefault(name, []).append(times["cpu"])
                    differences.setdefault(name, []).append(times[""] - base)
    median = statistics.median
    load = os.getloadavg()[0]  # after the rounds: what the machine was doing meanwhile
    rows = {}
    for name in commands:
        rows[name] = {"import_s": round(min(totals[name]), 3),
                      "over_floor_s": round(min(totals[name]) - min(floor), 3),
                      "ratio_to_floor": round(min(totals[name]) / min(floor), 2),
                      "median_import_s": round(median(totals[name]), 3),
                      "median_over_floor_s": round(median(differences[name]), 3),
                      "cpu_s": round(median(cpu[name]), 3),
                      "cpu_over_floor_s": round(median(cpu[name]) - median(floor_cpu), 3),
                      "modules": len(modules[name]),
                      "third_party": " ".join(third_party(modules[name]))}
    worst = max(HOT, key=lambda n: rows[n]["cpu_over_floor_s"])
    return {
        "runs": runs,
        "load_average_1min": round(load, 1),
        "floor": FLOOR,
        "floor_import_s": round(min(floor), 3),
        "floor_median_import_s": round(median(floor), 3),
        "floor_cpu_s": round(median(floor_cpu), 3),
        "onnx_over_floor_s": round(min(onnx_over_floor), 3),
        "ml_dtypes_import_s": round(min(ml_dtypes), 3),
        "commands": rows,
        "budget_over_floor_s": BUDGET_S,
        "ml_dtypes_budget_s": ML_DTYPES_BUDGET_S,
        "goals": {"worst_command": worst,
                  "worst_cpu_over_floor_s": rows[worst]["cpu_over_floor_s"],
                  "hot_commands_within_budget": rows[worst]["cpu_over_floor_s"] <= BUDGET_S,
                  "ml_dtypes_within_budget": min(ml_dtypes) <= ML_DTYPES_BUDGET_S},
        "samples": {"floor": floor, "floor_cpu": floor_cpu, "cpu": cpu, "ml_dtypes": ml_dtypes, "onnx_over_floor": onnx_over_floor, **totals},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="write the figures here")
    parser.add_argument("--runs", type=int, default=5, help="interleaved rounds after one warm-up (default 5)")
    args = parser.parse_args(argv)
    data = measure(max(args.runs, 1))
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
    print(f"floor ({FLOOR}): {data['floor_import_s']:.3f} s; onnx adds {data['onnx_over_floor_s']:.3f} s; "
          f"ml_dtypes {data['ml_dtypes_import_s']:.3f} s (budget {ML_DTYPES_BUDGET_S} s)")
    for name, row in data["commands"].items():
        print(f"  {name:8s} {row['import_s']:.3f} s, {row['over_floor_s']:+.3f} s over the floor "
              f"({row['ratio_to_floor']:.2f}x; medians {row['median_import_s']:.3f} s, "
              f"{row['median_over_floor_s']:+.3f} s), {row['modules']} modules: {row['third_party']}")
    goals = data["goals"]
    print(f"floor CPU {data['floor_cpu_s']:.3f} s; CPU over the floor: " + ", ".join(
        f"{n} {r['cpu_over_floor_s']:+.3f} s" for n, r in data["commands"].items()))
    print(f"goal: hot commands at most {BUDGET_S} s of CPU over the floor: worst {goals['worst_command']} "
          f"{goals['worst_cpu_over_floor_s']:+.3f} s: {'met' if goals['hot_commands_within_budget'] else 'MISSED'}; "
          f"ml_dtypes: {'met' if goals['ml_dtypes_within_budget'] else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
