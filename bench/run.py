"""`make bench`: the tutorial's Keras way, keract's way, inspector and the bare floor, side by side.

Writes one JSON file per section under bench/out/sections/ (``NAME.json`` on CPU
runs, ``NAME_cuda.json`` with ``--device cuda``), merges every section file found
there into bench/results.json and renders bench/results.md. Sections:

  maps      item 1: inspector maps --all vs the floor (and, with `keras`, the tutorial and keract ways)
  keras     adds the two Keras ways to `maps` (needs tensorflow)
  overhead  item 2: one inference with all conv outputs added / a plain one (session.run and IOBinding)
  filters   item 3: filters of all conv layers of the 550 MB model
  convert   item 4: bench/bench_convert.py --json bench/out/convert_raw.json
  audit     item 5: bench/bench_audit.py --json bench/out/audit_raw.json [--images N] [--device D]
  audit_ray item 5c: bench/bench_audit_ray.py: the audit on a local Ray cluster, a worker against one process
            at the same thread count (needs the ray extra)
  prune     item 7: bench/bench_prune.py --json bench/out/prune_raw.json: VGG16 with 30% dead filters pruned
  cam       item 8: bench/bench_cam.py --json bench/out/cam_raw.json [--runs N]: ScoreCAM vs C plain runs vs grad-cam
  diff      item 9: bench/bench_diff.py --json bench/out/diff_raw.json (float vs int8 QDQ vgg16_tumor)
  imports   item 10: bench/bench_imports.py --json bench/out/imports_raw.json: each command's imports vs the bare floor's

Examples:
  bench/run.py                         # everything, 3 interleaved rounds (~15 minutes on 2 cores)
  bench/run.py --quick                 # 1 round, 64 audit images, overhead at batch 1 only (~5 minutes)
  bench/run.py --only maps,overhead,audit --device cuda   # item 6 on a GPU machine
  bench/run.py --table-only            # re-render from bench/out/sections/ (e.g. after copying *_cuda.json in)
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import INSPECTOR, OUT, PYTHON, ROOT, ratio, read_json, write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SECTIONS = ("maps", "keras", "overhead", "filters", "convert", "audit", "audit_ray", "prune", "cam", "diff", "imports",
            "view")
CONVERTED = os.path.join(ROOT, "models", "vgg16.onnx")
GENERATED = os.path.join(OUT, "vgg16_generated.onnx")
LOG = os.path.join(OUT, "bench.log")
# One file per section, as the last run of that section left it; results.json merges them.
SECTIONS_DIR = os.path.join(OUT, "sections")
RESULTS_JSON = os.path.join(HERE, "results.json")
RESULTS_MD = os.path.join(HERE, "results.md")


def echo(text: str = "") -> None:
    print(text, flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: maps and audit also on CUDAExecutionProvider, beside CPU (item 6)")
    parser.add_argument("--runs", type=int, default=None,
                        help="interleaved rounds per compared command, after one warm-up round (default 3, --quick 1)")
    parser.add_argument("--quick", action="store_true",
                        help="1 round, 64 audit images, overhead at batch 1 only: about 5 minutes on 2 cores")
    parser.add_argument("--model", help="VGG16 ONNX file (default models/vgg16.onnx, converted when missing)")
    parser.add_argument("--table-only", action="store_true", help="only re-render results from bench/out/*.json")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    if "keras" in args.sections and "maps" not in args.sections:
        args.sections.append("maps")  # the Keras ways are rows of the maps table
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


# ------------------------------------------------------------------------------------ model

def model_info(path: str, how: str) -> dict:
    from bench_maps import in_subprocess

    info = in_subprocess("model-info", path, log=LOG)
    if info is None:
        sys.exit(f"cannot read {path} with inspector; see {os.path.relpath(LOG, ROOT)}")
    return {"path": os.path.relpath(path, ROOT), "how": how, **info}


def choose_model(args) -> dict:
    if args.model:
        return model_info(os.path.abspath(args.model), "given with --model")
    if os.path.exists(CONVERTED):
        info = model_info(CONVERTED, "models/vgg16.onnx as found")
        if info.get("source_framework") == "keras":
            info["how"] = f"converted from Keras VGG16 by `inspector convert keras-app` ({info['converter']})"
        return info
    if common.has_module("tensorflow") and os.path.isdir(os.path.join(ROOT, "converters")):
        echo("models/vgg16.onnx is missing: converting Keras VGG16 (random weights; ImageNet's cannot be "
             "downloaded here) ...")
        os.makedirs(os.path.dirname(CONVERTED), exist_ok=True)
        sample = common.measure([INSPECTOR, "convert", "keras-app", "VGG16", "--weights", "none", "-o", CONVERTED],
                                log=LOG)
        if sample.returncode == 0 and os.path.exists(CONVERTED):
            return model_info(CONVERTED, "converted from Keras VGG16 by `inspector convert keras-app`")
        echo(f"  conversion failed (exit {sample.returncode}, see {os.path.relpath(LOG, ROOT)})")
    if not os.path.exists(GENERATED):
        echo("building a VGG16-shaped ONNX file with random weights (onnx.helper) ...")
        common.measure([PYTHON, os.path.join(HERE, "bench_maps.py"), "generate", GENERATED], log=LOG)
    return model_info(GENERATED, "VGG16-shaped stand-in built with onnx.helper by bench/common.py "
                                 "(models/vgg16.onnx missing and the converter unavailable)")


# ---------------------------------------------------------------------------------- helpers

HELPERS = {"convert": "bench_convert.py", "audit": "bench_audit.py", "audit24": "bench_audit.py",
           "audit_ray": "bench_audit_ray.py", "prune": "bench_prune.py", "cam": "bench_cam.py",
           "diff": "bench_diff.py", "imports": "bench_imports.py", "view": "bench_view.py"}


def run_helper(section: str, args, model: dict | None) -> dict:
    """bench_convert.py / bench_audit.py as a measured child; their JSON, or ``{"not_run": reason}``.

    Their interface: ``--json FILE`` (both), ``--images N``, ``--runs N`` and
    ``--device cpu|cuda`` (audit; conversion runs once, its own default). A flag
    is passed only when the script's ``--help`` lists it.
    """
    script = HELPERS[section]
    path = os.path.join(HERE, script)
    if not os.path.exists(path):
        echo(f"{section}: bench/{script} is not there: not run")
        return {"not_run": f"bench/{script} does not exist yet"}
    target = os.path.join(OUT, f"{section}_raw{'_cuda' if args.device == 'cuda' else ''}.json")
    log = os.path.join(OUT, f"{section}.log")
    try:
        usage = subprocess.run([PYTHON, path, "--help"], capture_output=True, text=True, timeout=120,
                               cwd=ROOT).stdout
    except subprocess.SubprocessError:
        usage = ""
    if "--json" not in usage:
        echo(f"{section}: bench/{script} --help lists no --json option: not run")
        return {"not_run": f"bench/{script} has no --json option (or its --help failed; see {_rel(log)})"}
    command = [PYTHON, path, "--json", target]
    if section == "audit":
        if "--device" in usage:
            command += ["--device", args.device]
        elif args.device == "cuda":
            return {"not_run": f"bench/{script} has no --device option"}
        if args.quick and "--images" in usage:
            command += ["--images", "64"]
        if args.runs > 1 and "--runs" in usage:
            command += ["--runs", str(args.runs)]
        if model and "--model" in usage:
            command += ["--model", os.path.join(ROOT, model["path"])]
        if "--ceiling" in usage:  # where a batch's time goes, and the best ratio an exact audit can reach
            command += ["--ceiling", "3" if args.quick else "10"]
    if section == "audit24":  # issue 11's item: 24 images, beside the statistics computed from the maps
        command += ["--images", "24", "--runs", str(max(args.runs, 5)), "--map-path", "--goal", "1.1",
                    "--device", args.device]
        if model:
            command += ["--model", os.path.join(ROOT, model["path"])]
    if section == "audit_ray":
        if not common.has_module("ray"):
            echo("audit_ray: Ray is not installed (pip install 'inspector-cnn[ray]'): not run")
            return {"not_run": "Ray is not installed (the ray extra; `make .venv` installs it)"}
        command += ["--runs", str(args.runs)] + (["--images", "32"] if args.quick else [])
        if model:
            command += ["--model", os.path.join(ROOT, model["path"])]
    if section == "prune":
        command += ["--runs", str(max(args.runs, 5))]
        if model:
            command += ["--model", os.path.join(ROOT, model["path"])]
    if section == "cam":
        command += ["--quick"] if args.quick else ["--runs", str(args.runs)]
        if args.device == "cuda":  # every attribution method on the GPU, beside grad-cam's on torch cuda
            command += ["--device", "cuda", "--methods", "scorecam,ablationcam,eigencam"]
    if section == "imports":
        command += ["--runs", str(max(args.runs, 5))]
    if section == "view":  # issue 22: layer clicks and peak memory of `inspector view` on VGG16
        command += ["--runs", str(max(args.runs, 3))]
        if model:
            command += ["--model", os.path.join(ROOT, model["path"])]
    if section == "diff":
        if "--device" in usage:
            command += ["--device", args.device]
        if args.quick:
            command += ["--quick"]
        elif args.runs > 1:
            command += ["--runs", str(args.runs)]
    echo(f"{section}: {' '.join(_rel(c) for c in command)}")
    if os.path.exists(target):
        os.remove(target)
    with open(log, "w"):
        pass
    sample = common.measure(command, log=log)
    echo(f"  {sample.wall_s:.1f} s wall, {sample.cpu_s:.1f} s cpu, {sample.peak_rss_mb:.0f} MB peak, "
         f"exit {sample.returncode}")
    whole = {"command": " ".join(_rel(c) for c in command), "wall_s": round(sample.wall_s, 2),
             "cpu_s": round(sample.cpu_s, 2), "peak_rss_mb": round(sample.peak_rss_mb, 1),
             "exit_code": sample.returncode}
    if sample.returncode != 0:
        return {"not_run": f"bench/{script} failed with exit {sample.returncode}: {_last_line(log)}",
                "process": whole}
    data = read_json(target)
    if not isinstance(data, dict):
        return {"not_run": f"bench/{script} wrote no readable {_rel(target)}", "process": whole}
    return {**data, "process": whole}


def _rel(path: str) -> str:
    return os.path.relpath(path, ROOT) if os.path.isabs(path) and path.startswith(ROOT) else path


def _last_line(log: str) -> str:
    try:
        with open(log, errors="replace") as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        return "no output"
    return (lines[-1][:300] if lines else "no output") + f" (log: {_rel(log)})"


# -------------------------------------------------------------------------------------- main

def stamp(data: dict, args, model: dict | None, machine: dict) -> dict:
    return {**data, "measured_at": datetime.datetime.now().isoformat(timespec="seconds"),
            # Children inherit this process's peak RSS (see common.check_harness): it must stay small.
            "harness_peak_rss_mb": round(common.harness_peak_mb(), 1),
            "runs": args.runs, "quick": args.quick, "device": args.device, "model": model,
            "machine": {k: machine[k] for k in ("cpu_model", "cores", "gpu")}}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(SECTIONS_DIR, exist_ok=True)
    if args.table_only:
        write_results()
        return 0
    started = time.perf_counter()
    machine = common.machine()
    if args.device == "cuda":
        import onnxruntime  # the harness stays small: this is ~40 MB

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            echo("--device cuda: this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
            return 2
    # The measuring method's own floor: a bare interpreter, measured exactly as every contender.
    bare = common.measure([PYTHON, "-c", "pass"])
    machine["calibration"] = {"bare_python_peak_rss_mb": round(bare.peak_rss_mb, 1),
                              "bare_python_wall_s": round(bare.wall_s, 3),
                              "harness_peak_rss_mb": round(common.harness_peak_mb(), 1)}
    write_json(os.path.join(SECTIONS_DIR, "machine.json" if args.device == "cpu" else "machine_cuda.json"), machine)
    echo(f"machine: {machine['cpu_model']}, {machine['cores']} cores ({machine['usable_cores']} usable), "
         f"{machine['memory_gb']} GB, {machine['gpu'] or 'no GPU'}; Python {machine['python']}")
    echo("libraries: " + ", ".join(f"{k} {v}" for k, v in machine["libraries"].items()))
    echo(f"a bare `python -c pass` child measures {bare.peak_rss_mb:.0f} MB peak, {bare.wall_s:.2f} s "
         f"(harness {common.harness_peak_mb():.0f} MB)")
    suffix = "_cuda" if args.device == "cuda" else ""

    # Conversion first: it is item 4, and it runs TensorFlow while nothing else of ours runs.
    if "convert" in args.sections and args.device == "cpu":
        data = run_helper("convert", args, None)
        write_json(os.path.join(SECTIONS_DIR, "convert.json"), stamp(data, args, None, machine))
    model, model_path = None, None
    if set(args.sections) & {"maps", "overhead", "filters", "audit", "audit_ray", "prune", "view"}:  # the others need no VGG16
        model = choose_model(args)
        model_path = os.path.join(ROOT, model["path"])
        echo(f"model: {model['path']} ({model['size_mb']} MB, {model['weights']} weights; {model['how']})")
    photo = common.sample_photo()
    keras = "keras" in args.sections and "maps" in args.sections
    if keras and not common.has_module("tensorflow"):
        echo("keras: tensorflow is not installed: the tutorial and keract ways are not run")
        keras = False

    if "maps" in args.sections:
        echo(f"maps: {args.runs} interleaved round(s) after one warm-up round")
        from bench_maps import maps_section

        data = maps_section(model_path, photo, args.runs, args.device, keras, LOG, echo)
        write_json(os.path.join(SECTIONS_DIR, f"maps{suffix}.json"), stamp(data, args, model, machine))
    if "overhead" in args.sections:
        repeats, batches = (10, "1") if args.quick else (max(30, args.runs), "1,8")
        echo(f"overhead: all conv outputs added vs a plain run, {repeats} interleaved calls at batch 1"
             + ("" if args.quick else ", a third as many at batch 8"))
        from bench_maps import in_subprocess

        data = in_subprocess("overhead", model_path, photo, repeats, args.device, "--batches", batches, log=LOG)
        if data is None:
            data = {"not_run": f"the overhead child failed; see {_rel(LOG)}"}
            echo("  " + data["not_run"])
        else:
            echo("  " + "; ".join(f"batch {b}: x{v['ratio']} (IOBinding x{v['ratio_iobinding']})"
                                  for b, v in data["batches"].items()))
        write_json(os.path.join(SECTIONS_DIR, f"overhead{suffix}.json"), stamp(data, args, model, machine))
    if "filters" in args.sections and args.device == "cpu":
        echo("filters: all conv layers")
        from bench_maps import filters_section

        data = filters_section(model_path, max(args.runs, 3), LOG, echo)
        write_json(os.path.join(SECTIONS_DIR, "filters.json"), stamp(data, args, model, machine))
    if "audit" in args.sections:
        data = run_helper("audit", args, model)
        write_json(os.path.join(SECTIONS_DIR, f"audit{suffix}.json"), stamp(data, args, model, machine))
        data = run_helper("audit24", args, model)
        write_json(os.path.join(SECTIONS_DIR, f"audit24{suffix}.json"), stamp(data, args, model, machine))
    if "audit_ray" in args.sections and args.device == "cpu":
        data = run_helper("audit_ray", args, model)
        write_json(os.path.join(SECTIONS_DIR, "audit_ray.json"), stamp(data, args, model, machine))
    if "prune" in args.sections and args.device == "cpu":
        data = run_helper("prune", args, model)
        write_json(os.path.join(SECTIONS_DIR, "prune.json"), stamp(data, args, model, machine))
    if "cam" in args.sections:
        data = run_helper("cam", args, None)
        write_json(os.path.join(SECTIONS_DIR, f"cam{suffix}.json"), stamp(data, args, None, machine))
    if "diff" in args.sections:
        data = run_helper("diff", args, None)
        write_json(os.path.join(SECTIONS_DIR, f"diff{suffix}.json"), stamp(data, args, None, machine))
    if "view" in args.sections and args.device == "cpu":
        data = run_helper("view", args, model)
        write_json(os.path.join(SECTIONS_DIR, "view.json"), stamp(data, args, model, machine))
    if "imports" in args.sections and args.device == "cpu":
        data = run_helper("imports", args, None)
        write_json(os.path.join(SECTIONS_DIR, "imports.json"), stamp(data, args, None, machine))
    write_results()
    echo(f"bench finished in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


def write_results() -> None:
    # A section measured on this machine replaces the recorded one; the others stay as recorded (a fresh
    # checkout has no bench/out/sections: `--only audit` there must not drop every other section).
    results = {**(read_json(RESULTS_JSON) or {}), **collect(SECTIONS_DIR)}
    write_json(RESULTS_JSON, results)
    with open(RESULTS_MD + ".tmp", "w") as handle:
        handle.write(render(results))
    os.replace(RESULTS_MD + ".tmp", RESULTS_MD)
    echo(f"wrote {os.path.relpath(RESULTS_JSON, ROOT)} and {os.path.relpath(RESULTS_MD, ROOT)}")


# ---------------------------------------------------------------------------------- results

SECTION_FILES = ("machine", "machine_cuda", "convert", "maps", "overhead", "filters", "audit", "cam",
                 "maps_cuda", "overhead_cuda", "audit_cuda", "cam_cuda", "prune", "diff", "diff_cuda",
                 "audit24", "audit24_cuda", "audit_ray", "imports", "view")


def collect(folder: str) -> dict:
    """Every section file present in ``folder``, keyed by its name."""
    found = {}
    for name in SECTION_FILES:
        data = read_json(os.path.join(folder, f"{name}.json"))
        if data is not None:
            found[name] = data
    return found


def _num(value, digits=2, unit="") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def _verdict(ok) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**missed**")


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


WAY_LABELS = {
    "tutorial": "the tutorial's way (Keras, one `Model` per layer, pyplot subplots)",
    "keract": "keract's way (Keras, one multi-output model, pyplot subplots; emulated)",
    "inspector": "`inspector maps vgg16.onnx photo --all`",
    "floor": "**floor**: onnx.load + outputs added + onnxruntime session + one run, no pictures",
    "plain": "reference: onnxruntime session from the file path + one plain run (no maps)",
    "trunk": "**trunk floor**: onnxruntime session on a file holding only the conv trunk + one run, no pictures",
    "inspector_layer1": "`inspector maps vgg16.onnx photo --layer block1_conv1`",
    "imports": "imports of the maps path (`inspector.cli`, `commands.maps`, `api`, `render`, `onnx`, `onnxruntime`, "
               "`PIL`)",
    "imports_floor": "imports of the trunk floor (`numpy`, `onnxruntime`, `PIL.Image`)",
    "trunk_cuda": "trunk floor on CUDAExecutionProvider",
    "inspector_cuda": "`inspector maps ... --all --device cuda`",
    "floor_cuda": "floor on CUDAExecutionProvider",
    "plain_cuda": "reference plain run on CUDAExecutionProvider",
}

# Figures from an earlier session on a lent GPU machine, quoted until a CUDA run replaces them.
PREVIOUS_GPU = [
    "Measured in an earlier session (not in this run), on an NVIDIA H100 with onnxruntime-gpu 1.31.1, "
    "on a VGG16-shaped model:",
    "",
    "| measurement | CUDA | that machine's 16-core CPU |",
    "|---|---|---|",
    "| one run (batch 1), all 13 conv outputs added | 4.62 ms | 38.1 ms |",
    "| one plain run (batch 1) | 0.89 ms | 30.0 ms |",
    "| added outputs / plain | 5.2x | 1.27x |",
    "| batch 32, all conv outputs | 123.7 ms (259 img/s) | 637 ms (50 img/s) |",
    "| whole `inspector maps --all` process | ~2.8 s | ~2.6 s |",
    "",
    "The whole one-photo process is dominated by start-up, session creation and drawing, so CUDA does "
    "not shorten it; it pays off for batches (the audit).",
]


def _maps_rows(ways: dict, names, trunk: bool = False) -> list[list]:
    rows = []
    for name in names:
        if name not in ways:
            continue
        way = ways[name]
        r = way.get("ratio_to_floor", {})
        failed = f" ({way['failed_runs']} failed)" if way.get("failed_runs") else ""
        rows.append([WAY_LABELS.get(name, name) + failed, _num(way["wall_s"]), _num(way["cpu_s"]),
                     _num(way["peak_rss_mb"], 0), _num(r.get("wall_s"), 2, "x"), _num(r.get("cpu_s"), 2, "x"),
                     _num(r.get("peak_rss_mb"), 2, "x")])
        if trunk:
            t = way.get("ratio_to_trunk", {})
            rows[-1] += [_num(t.get("wall_s"), 2, "x"), _num(t.get("peak_rss_mb"), 2, "x"),
                         _num(way.get("peak_rss_over_file"), 2, "x")]
    return rows


def _trunk_lines(maps: dict) -> list[str]:
    """Issue 11's goals against the trunk floor, the phases side by side, and the PNG encoders."""
    goals, lines = maps["goals"], []
    if "inspector_wall_over_trunk" in goals:
        lines.append(f"- Goal: `maps --all` within 1.5x of the trunk floor's wall time (a bare onnxruntime script over "
                     f"a file holding only the trunk, which draws nothing): "
                     f"{_num(goals['inspector_wall_over_trunk'], 2, 'x')}, "
                     f"{_verdict(goals['inspector_within_1.5x_of_trunk'])}.")
    if "inspector_peak_rss_over_file" in goals:
        lines.append(f"- Goal: `maps --all` peak RSS at most 0.7x the model file ({_num(maps.get('file_mb'), 1)} MB): "
                     f"{_num(goals['inspector_peak_rss_over_file'], 2, 'x')}, "
                     f"{_verdict(goals['inspector_peak_at_most_0.7x_file'])}; `maps --layer block1_conv1` under 0.3x: "
                     f"{_num(goals.get('layer1_peak_rss_over_file'), 2, 'x')}, "
                     f"{_verdict(goals.get('layer1_peak_under_0.3x_file'))}.")
    ours, floor = maps.get("inspector_phases_s") or {}, maps.get("trunk_phases_s") or {}
    if ours:
        lines += ["", "Phases in-process (median s), inspector `maps --all` beside the trunk floor:", ""]
        floor_by_kind = {k.split(" (")[0]: v for k, v in floor.items()}
        lines += _table(["phase", "inspector", "trunk floor"],
                        [[k, _num(v, 3), _num(floor_by_kind.get(k.split(" (")[0]), 3)] for k, v in ours.items()])
    png = maps.get("png_options")
    if png and png.get("options"):
        lines += ["", f"PNG encoding of the {png['grids']} map grids ({png['pixels_mb']} MB of pixels), median s "
                      "and bytes written:", ""]
        columns = [c for c in next(iter(png["options"].values())) if c != "MB"]
        lines += _table(["encoder", *columns, "MB"],
                        [[k, *(_num(v[c], 3) for c in columns), _num(v["MB"], 2)] for k, v in png["options"].items()])
    return lines


def _generic(data: dict) -> list[str]:
    """Sections written by other helpers: scalars as a list, lists/dicts of records as tables."""
    lines, skip = [], {"machine", "model", "measured_at", "runs", "device", "quick", "harness_peak_rss_mb",
                       "process"}
    scalars = [(k, v) for k, v in data.items() if k not in skip and not isinstance(v, (dict, list))]
    for key, value in scalars:
        lines.append(f"- {key}: {_num(value)}")
    for key, value in data.items():
        if key in skip:
            continue
        records = None
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            records = [(str(i), v) for i, v in enumerate(value)]
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            records = list(value.items())
        elif isinstance(value, dict) and any(not isinstance(v, (dict, list)) for v in value.values()):
            lines.append(f"- {key}: " + ", ".join(f"{k} {_num(v)}" for k, v in value.items()
                                                   if not isinstance(v, (dict, list))))
        elif isinstance(value, list) and value and not any(isinstance(v, (dict, list)) for v in value):
            lines.append(f"- {key}: " + ", ".join(_num(v) for v in value))
        if records:
            columns = [c for c in dict.fromkeys(c for _, r in records for c in r)
                       if all(not isinstance(r.get(c), (dict, list)) for _, r in records)]
            lines += ["", f"{key}:", ""]
            lines += _table(["", *columns], [[name, *(_num(r.get(c)) for c in columns)] for name, r in records])
    return lines


def _helper_section(data: dict | None, script: str) -> list[str]:
    if not data:
        return [f"Not run (no result from `bench/{script}` yet)."]
    if "not_run" in data:
        return [f"Not run: {data['not_run']} ({data.get('measured_at', '')})."]
    lines = [f"`bench/{script}`, measured {data.get('measured_at', '')}; its own figures:", ""] + _generic(data)
    process = data.get("process")
    if process:
        lines += ["", f"- The whole `{process['command']}` process as the harness measured it: "
                      f"{_num(process['wall_s'])} s wall, {_num(process['cpu_s'])} s CPU, "
                      f"{_num(process['peak_rss_mb'], 0)} MB peak RSS."]
    return lines


def _model_line(m: dict) -> str:
    weights = ("**random weights** (ImageNet weights cannot be downloaded on this machine; speed and "
               "memory do not depend on the values)" if m["weights"] == "random" else f"{m['weights']} weights")
    how = m["how"][0].upper() + m["how"][1:]
    return (f"Model: VGG16, `{m['path']}`, {m['size_mb']} MB, {m['conv_layers']} conv layers, "
            f"{m['input_layout']} input, {weights}. {how}.")


def render(results: dict) -> str:
    out = ["# Benchmark results", "",
           "Generated by `make bench` (`bench/run.py`; how to run and read it: `bench/README.md`); raw numbers "
           "in `bench/results.json`. Compared commands run as fresh processes, interleaved (A B C, A B C, ...) "
           "after one warm-up round; figures are medians over the rounds: wall time from start to the last "
           "file written, CPU time (user + system) and peak resident memory (`ru_maxrss` from `wait4`) of "
           "that process. Ratios are to the floor of each table (below 1.00x: less than the floor).", ""]
    machine = results.get("machine") or results.get("machine_cuda")
    if machine:
        libs = ", ".join(f"{k} {v}" for k, v in machine.get("libraries", {}).items())
        out += [f"Machine: {machine['cpu_model']}, {machine['cores']} cores, {machine.get('memory_gb')} GB RAM"
                + (f", {machine['gpu']}" if machine.get("gpu") else ", no GPU") + f"; Python {machine['python']}.",
                "", f"Libraries: {libs}.", ""]
        calibration = machine.get("calibration")
        if calibration:
            out += [f"Measuring floor: a bare `python -c pass` child measures "
                    f"{_num(calibration['bare_python_peak_rss_mb'], 0)} MB peak RSS and "
                    f"{_num(calibration['bare_python_wall_s'])} s. The harness never loads a model "
                    f"(its own peak: {_num(calibration['harness_peak_rss_mb'], 0)} MB), because a child "
                    "keeps its parent's high-water mark through exec.", ""]
    first = next((results[k] for k in ("maps", "overhead", "filters", "maps_cuda") if results.get(k, {}).get("model")),
                 None)
    if first:
        out += [_model_line(first["model"]), ""]

    out += ["## 1. Feature maps of all 13 conv layers for one photo, start to PNGs written", ""]
    maps = results.get("maps")
    if maps:
        out += [f"{maps['runs']} round(s), measured {maps['measured_at']}.", ""]
        out += _table(["way", "wall s", "CPU s", "peak RSS MB", "wall / floor", "CPU / floor", "RSS / floor",
                       "wall / trunk floor", "RSS / trunk floor", "RSS / file"],
                      _maps_rows(maps["ways"], ("tutorial", "keract", "inspector", "floor", "plain", "trunk",
                                                "inspector_layer1", "imports", "imports_floor"), trunk=True))
        goals = maps["goals"]
        out += [""] + _trunk_lines(maps)
        out += [""]
        if "speedup_over_tutorial" in goals:
            out.append(f"- Goal: inspector at least 5x faster than the tutorial's way: "
                       f"{_num(goals['speedup_over_tutorial'], 1, 'x')} faster (wall), "
                       f"{_verdict(goals['inspector_5x_faster_than_tutorial'])} "
                       f"(and {_num(goals.get('speedup_over_keract'), 1, 'x')} faster than keract's way).")
        else:
            out.append("- The Keras ways were not run (tensorflow missing or `--only` without `keras`).")
        out.append(f"- Goal: inspector within 1.5x of the floor: "
                   f"{_num(maps['ways']['inspector']['ratio_to_floor']['wall_s'], 2, 'x')} of the floor's wall time, "
                   f"{_verdict(goals['inspector_within_1.5x_of_floor'])}. The floor pays for `onnx.load` and "
                   "serialising 528 MB of weights; inspector memory-maps them and hands onnxruntime a light model.")
        check = maps.get("keras_weights_check")
        if check:
            out.append(f"- Same pictures: the Keras ways build `VGG16(weights=None)` and load the ONNX file's conv "
                       f"weights (the converter's random initialisation), so all ways draw the same maps: "
                       f"Keras and inspector agree on all {check['layers_copied']} layers to "
                       f"{check['max_relative_difference']:.1e} (relative). Every way draws the first 64 channels "
                       "per layer. PNGs written: "
                       + ", ".join(f"{k} {v}" for k, v in maps.get("pngs_written", {}).items()) + ".")
        out.append("- keract's way is emulated (`bench/keract_way.py`): keract 4.5.2 installs from PyPI but fails "
                   "on Keras 3 (`'Functional' object has no attribute '_is_compiled'`); the emulation evaluates "
                   "all layers in one pass and draws as keract's `display_activations` does.")
        phases = maps.get("inspector_phases_s")
        if phases:
            out.append("- Where inspector's time goes (in-process, median s): "
                       + "; ".join(f"{k} {v:.3f}" for k, v in phases.items())
                       + ". The rest of the wall time is Python start-up and imports.")
        for note in maps.get("notes", []):
            out.append(f"- Note: {note}.")
    else:
        out.append("Not run.")

    out += ["", "## 2. Cost of the added outputs in onnxruntime", ""]
    overhead = results.get("overhead")
    if overhead and "not_run" not in overhead:
        out += [f"One process, one light model: one inference returning the model's output plus all "
                f"{overhead['outputs_added']} conv outputs / the same inference returning only the model's output "
                f"({overhead['provider']}, {overhead['intra_op_threads']} intra-op threads pinned). The four calls "
                "are interleaved after warm-ups; `run` returns fresh arrays every call (as `inspector` does today), "
                "IOBinding writes into output buffers allocated once and reused. The ratio column is the median over "
                "rounds of (this call / the plain `run` call of the same round), so that both sides of each ratio "
                "saw the same machine load; the last column compares the fastest calls.",
                ""]
        rows = []
        for b, v in overhead["batches"].items():
            for key, label, r, rmin in (
                    ("plain", "plain, `run`", None, None),
                    ("plain_iobinding", "plain, IOBinding", None, None),
                    ("all_conv_outputs", "all conv outputs, `run`", "ratio", "ratio_min"),
                    ("all_conv_outputs_iobinding", "all conv outputs, IOBinding", "ratio_iobinding",
                     "ratio_iobinding_min")):
                t = v[key]
                paired = (v[r] if r else None if key == "plain" else v.get("ratio_plain_iobinding"))
                rows.append([b, label, t["runs"], _num(t["median_s"] * 1000, 1), _num(t["min_s"] * 1000, 1),
                             "1 (base)" if key == "plain" else _num(paired, 3, "x"),
                             _num(v[rmin], 3, "x") if rmin else "–"])
        out += _table(["batch", "call", "calls", "median ms", "min ms", "ratio to plain `run` (paired median)",
                       "min / plain min"], rows)
        g = overhead["goals"]
        out += ["", f"- Goal: at most 1.10: worst ratio {_num(g['overhead_ratio'], 3, 'x')} with `run`, "
                f"{_verdict(g['overhead_at_most_1.10'])}; with IOBinding {_num(g['overhead_ratio_iobinding'], 3, 'x')}, "
                f"{_verdict(g['overhead_iobinding_at_most_1.10'])}.",
                "- The maps returned per image: " + ", ".join(
                    f"batch {b}: {v['outputs_mb']} MB" for b, v in overhead["batches"].items())
                + ". Run-to-run spread on a shared 2-core machine can exceed the differences: read the min "
                "column too, and every sample in `results.json`."]
    else:
        out.append(f"Not run{': ' + overhead['not_run'] if overhead else ''}.")

    out += ["", "## 3. Filters of all conv layers of a 550 MB model", ""]
    filters = results.get("filters")
    if filters:
        out += [f"`inspector filters vgg16.onnx --all` (13 PNGs) beside a plain script: `onnx.load` + every conv "
                f"kernel as a NumPy array; file {filters['file_mb']} MB; {filters['runs']} round(s).", ""]
        out += _table(["way", "wall s", "CPU s", "peak RSS MB", "peak RSS / file size"],
                      [[f"`{n}`", _num(w["wall_s"]), _num(w["cpu_s"]), _num(w["peak_rss_mb"], 0),
                        _num(w["peak_rss_over_file"], 2, "x")] for n, w in filters["ways"].items()])
        out += ["", f"- Goal: peak RSS at most 1.5x the file: {_num(filters['goals']['peak_rss_over_file'], 2, 'x')}, "
                f"{_verdict(filters['goals']['peak_at_most_1.5x_file'])}.",
                "- An earlier version of this table showed both ways at exactly 2,559 MB: the harness process had "
                "grown to that size, and a child's `ru_maxrss` includes its parent's high-water mark (Linux "
                "carries it across exec). The harness now stays small and refuses to measure if it grows."]
    else:
        out.append("Not run.")

    out += ["", "## 4. Conversion of the full VGG16", ""]
    out += _helper_section(results.get("convert"), "bench_convert.py")
    audit = results.get("audit") or {}
    images = audit.get("images")
    out += ["", "## 5. Audit throughput over 256 images"
            + (f" (this run: {images} images)" if images not in (None, 256) else ""), ""]
    out += _helper_section(results.get("audit"), "bench_audit.py")
    out += ["", "### 5b. Audit of 24 images (the head skipped; statistics in the graph, and from the maps by NumPy)", ""]
    out += _helper_section(results.get("audit24"), "bench_audit.py")
    out += ["", "### 5c. The audit on a local Ray cluster: a worker against one process at the same thread count", ""]
    out += _helper_section(results.get("audit_ray"), "bench_audit_ray.py")

    out += ["", "## 6. GPU (CUDAExecutionProvider)", ""]
    gpu_maps, gpu_overhead, gpu_audit = (results.get(k) for k in ("maps_cuda", "overhead_cuda", "audit_cuda"))
    if not (gpu_maps or gpu_overhead or gpu_audit or results.get("cam_cuda")):
        out += ["Not measured in this run (no GPU on this machine). On a CUDA machine: "
                "`bench/run.py --only maps,overhead,audit --device cuda`, then copy its `bench/out/sections/*_cuda.json` "
                "into `bench/out/sections/` here and run `bench/run.py --table-only`.", ""] + PREVIOUS_GPU
    if gpu_maps:
        gm = gpu_maps["machine"]
        out += [f"Measured {gpu_maps['measured_at']} on {gm['cpu_model']}, {gm['cores']} cores, {gm['gpu']}; "
                f"{gpu_maps['runs']} round(s).", ""]
        out += _table(["way", "wall s", "CPU s", "peak RSS MB", "wall / floor", "CPU / floor", "RSS / floor"],
                      _maps_rows(gpu_maps["ways"], ("inspector", "floor", "plain", "inspector_cuda", "floor_cuda",
                                                    "plain_cuda")))
        goals = gpu_maps["goals"]
        out += ["", f"- Speed-up of CUDA over CPU, whole process: inspector "
                f"{_num(goals.get('cuda_speedup_inspector'), 2, 'x')}, floor {_num(goals.get('cuda_speedup_floor'), 2, 'x')}."]
        phases = gpu_maps.get("inspector_phases_cuda_s")
        if phases:
            out.append("- inspector on CUDA, in-process, median s: " + "; ".join(f"{k} {v:.3f}" for k, v in phases.items()) + ".")
    if gpu_overhead and "not_run" not in gpu_overhead:
        out.append("- Added outputs on CUDA: " + ", ".join(
            f"batch {b}: plain {_num(v['plain']['median_s'] * 1000, 2)} ms, all conv outputs "
            f"{_num(v['all_conv_outputs']['median_s'] * 1000, 2)} ms ({_num(v['ratio'], 3, 'x')}), with IOBinding "
            f"{_num(v['all_conv_outputs_iobinding']['median_s'] * 1000, 2)} ms ({_num(v['ratio_iobinding'], 3, 'x')})"
            for b, v in gpu_overhead["batches"].items()) + ".")
    if gpu_audit:
        out += ["", "Audit on CUDA:", ""] + _helper_section(gpu_audit, "bench_audit.py")
    if results.get("audit24_cuda"):
        out += ["", "Audit of 24 images on CUDA, statistics in the graph and from the maps:", ""]
        out += _helper_section(results["audit24_cuda"], "bench_audit.py")
    gpu_cam = results.get("cam_cuda")
    if gpu_cam:
        out += ["", "Attribution methods on CUDA (ResNet-18, 128x128, layer3: 256 channels), median s per way "
                "(provider in brackets):", ""]
        if "ways" in gpu_cam:
            out += _table(["way", "median s", "provider"],
                          [[name, _num(way["median_s"], 3), way.get("provider") or "–"]
                           for name, way in gpu_cam["ways"].items()])
        out += [""] + _helper_section({k: v for k, v in gpu_cam.items() if k != "ways"}, "bench_cam.py")
    out += ["", "## 7. Pruning VGG16 with 30% of its filters dead", ""]
    out += _helper_section(results.get("prune"), "bench_prune.py")
    out += ["", "## 8. ScoreCAM against C plain batched runs and pytorch-grad-cam", ""]
    out += _helper_section(results.get("cam"), "bench_cam.py")
    out += ["", "## 9. `inspector diff`: float against int8 over N images, against two plain inference runs", ""]
    out += _helper_section(results.get("diff"), "bench_diff.py")
    out += ["", "## 10. Start-up: what each command imports, against the bare floor", ""]
    out += _imports_section(results.get("imports"))
    out += ["", "## 11. `inspector view` on VGG16: a layer click after the first image, and peak memory against "
                "`maps --all`", ""]
    out += _helper_section(results.get("view"), "bench_view.py")
    return "\n".join(out) + "\n"


def _imports_section(data: dict | None) -> list[str]:
    if not data or "not_run" in data:
        return [f"Not run{': ' + data['not_run'] if data else ''}."]
    lines = [f"`bench/bench_imports.py`, measured {data.get('measured_at', '')}, {data['runs']} interleaved rounds "
             f"(load average {_num(data.get('load_average_1min'), 1)} on {data['machine']['cores']} cores): "
             "each command runs once on a tiny model and lists the modules it loaded; a fresh interpreter then "
             "imports exactly those under `python -X importtime`: its wall seconds (fastest round, and median) "
             "and the importing process's CPU seconds (median, start-up included; the goal uses CPU, which "
             f"another job on the machine moves far less). The floor: `{data['floor']}`, "
             f"{_num(data['floor_import_s'], 3)} s (median {_num(data.get('floor_median_import_s'), 3)} s), "
             f"{_num(data.get('floor_cpu_s'), 3)} s CPU; `import onnx` adds {_num(data['onnx_over_floor_s'], 3)} s "
             "to it.", ""]
    lines += _table(["command", "imports s", "over the floor s", "/ floor", "median s", "CPU s",
                     "CPU over the floor s", "modules", "third-party packages"],
                    [[f"`{name}`", _num(r["import_s"], 3), _num(r["over_floor_s"], 3),
                      _num(r["ratio_to_floor"], 2, "x"), _num(r.get("median_import_s"), 3), _num(r.get("cpu_s"), 3),
                      _num(r.get("cpu_over_floor_s"), 3), r["modules"], r["third_party"]]
                     for name, r in data["commands"].items()])
    goals = data["goals"]
    lines += ["", f"- Goal: every command but `report` at most {data['budget_over_floor_s']} s of CPU over the "
              f"floor (`report` draws its charts with matplotlib): worst `{goals['worst_command']}` "
              f"{_num(goals.get('worst_cpu_over_floor_s'), 3)} s, {_verdict(goals['hot_commands_within_budget'])}.",
              f"- Goal: `import ml_dtypes` (onnx imports it) at most {data['ml_dtypes_budget_s']} s after NumPy: "
              f"{_num(data['ml_dtypes_import_s'], 3)} s, {_verdict(goals['ml_dtypes_within_budget'])} "
              "(0.7.0 took 0.5 s; pyproject.toml excludes it)."]
    return lines


if __name__ == "__main__":
    sys.exit(main())
