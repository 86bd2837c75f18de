"""`make zoo`: convert every model of the zoos with --check, one fresh process each, and print the table.

For each model: `inspector convert keras-app|torchvision|timm NAME --weights none --check -v` in its
own process (so that one model's memory does not count for the next, and TensorFlow and torch never
share an interpreter), then exit code, wall seconds of the whole process, peak RSS (the converter's
own measure, `-v`: the child's VmHWM), nodes, Transposes (the layout ones our passes promise to remove,
a failure when left, and the model's own: converters/transposes.py), conv layers compared, worst parity
(relative) and whether anything but our own one-line messages reached stderr (a traceback).

    python bench/zoo.py                          # every model (hours), a Markdown table on stdout
    python bench/zoo.py --set torchvision        # all of torchvision, smallest first (> 300 M skipped, said)
    python bench/zoo.py --set timm               # the smallest model of each timm architecture module
    python bench/zoo.py --set ci                 # the fast subset
    python bench/zoo.py --only keras-app:VGG16,timm:resnet18 --json bench/out/zoo.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

KERAS_APPS = ["VGG16", "VGG19", "ResNet50", "ResNet50V2", "ResNet101", "InceptionV3", "InceptionResNetV2",
              "Xception", "MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "DenseNet121",
              "NASNetMobile", "EfficientNetB0", "EfficientNetV2B0", "ConvNeXtTiny"]
TORCHVISION = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "regnet_x_400mf"]
TIMM = ["resnet18", "mobilenetv3_small_100", "efficientnet_b0"]
CI = [("keras-app", "MobileNet"), ("torchvision", "squeezenet1_1"), ("torchvision", "googlenet"),
      ("torchvision", "lraspp_mobilenet_v3_large"), ("torchvision", "ssdlite320_mobilenet_v3_large"),
      ("timm", "mobilenetv3_small_100")]  # one of each kind of capability, about two minutes in all
MODELS = [("keras-app", n) for n in KERAS_APPS] + [("torchvision", n) for n in TORCHVISION] + \
    [("timm", n) for n in TIMM]

SKIP_OVER = 300e6  # parameters: a conversion with --check needs several copies of the weights


def torchvision_all() -> list[tuple[str, str, int]]:
    """(kind, name, parameters) of every torchvision classification and segmentation model, smallest first.
    Parameters are counted on the meta device (no memory), falling back to a real build where a builder
    computes with tensors."""
    import warnings

    import torch
    from torchvision import models

    rows = []
    for module, kind in ((models, "torchvision"), (models.segmentation, "torchvision"),
                         (models.detection, "torchvision")):
        for name in models.list_models(module=module):
            extra = {} if module is models else {"weights_backbone": None}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    with torch.device("meta"):
                        built = models.get_model(name, weights=None, **extra)
                except Exception:
                    built = models.get_model(name, weights=None, **extra)
            rows.append((kind, name, sum(p.numel() for p in built.parameters())))
            del built
    return sorted(rows, key=lambda r: r[2])


CANDIDATES = 8  # per timm module, the names that sound smallest are built (all 1,371 take half an hour)
_SIZES = ("test", "atto", "femto", "pico", "nano", "xxs", "tiny", "xs", "mini", "small", "lite", "_s", "050",
          "075", "b0", "18", "100", "s_", "light", "base", "medium", "m_")


def _size_rank(name: str) -> tuple:
    hits = [k for k, token in enumerate(_SIZES) if token in name]
    return (min(hits) if hits else len(_SIZES), len(name), name)


def timm_smallest(cache: str | None = None) -> list[tuple[str, str, int | None]]:
    """(kind, name, parameters) of the smallest model of each timm architecture module (the module of each
    model's entrypoint: resnet, efficientnet, vision_transformer...), smallest first; parameters counted on
    the meta device, for the CANDIDATES names of each module that sound smallest (test, atto, nano, tiny...). The listing takes minutes: kept in ``cache`` (JSON) when given."""
    if cache and os.path.isfile(cache):
        with open(cache) as handle:
            found = json.load(handle)
    else:
        import warnings

        import timm
        import torch
        from timm.models import _registry

        modules: dict[str, list[str]] = {}
        for name in timm.list_models():
            modules.setdefault(_registry._model_to_module.get(name, "?"), []).append(name)
        found = {}
        for module, names in sorted(modules.items()):
            best = None
            for name in sorted(names, key=_size_rank)[:CANDIDATES]:
                try:
                    with warnings.catch_warnings(), torch.device("meta"):
                        warnings.simplefilter("ignore")
                        built = timm.create_model(name, pretrained=False)
                    parameters = sum(p.numel() for p in built.parameters())
                except Exception:
                    continue
                if best is None or parameters < best[1]:
                    best = (name, parameters)
            found[module] = {"model": best[0] if best else names[0], "parameters": best[1] if best else None,
                             "count": len(names)}
        if cache:
            os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
            with open(cache, "w") as handle:
                json.dump(found, handle, indent=1)
    rows = [("timm", entry["model"], entry["parameters"]) for entry in found.values()]
    return sorted(rows, key=lambda r: r[2] if r[2] is not None else 0)


_WROTE = re.compile(r"wrote .*?: (\d+) conv layers .*?, (\d+) nodes, (\d+) Transpose")
_TOTAL = re.compile(r"total ([\d.]+) s, peak RSS (\d+) MB")
_PARITY = re.compile(r"^\s+(\S.*?)\s+(\S+)\s+(\S+)\s+(ok.*|FAIL.*)$")
_OURS = ("inspector convert: warning:", "inspector convert: error:")


def run_one(kind: str, name: str, folder: str, timeout: int, parameters: int | None = None) -> dict:
    out = os.path.join(folder, f"{kind}_{name}.onnx")
    argv = [sys.executable, "-m", "inspector", "convert", kind, name, "--weights", "none", "--check", "-v",
            "-o", out]
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired:
        code, stdout, stderr = "timeout", "", ""
    seconds = time.perf_counter() - started
    row = {"kind": kind, "model": name, "parameters": parameters, "features": "backbone+neck" in stderr,
           "exit": code, "seconds": round(seconds, 1), "peak_mb": None,
           "nodes": None, "transposes": None, "convs": None, "compared": 0, "worst": None, "worst_layer": None,
           "foreign_stderr": [line for line in stderr.splitlines() if line and not line.startswith(_OURS)][:3],
           "stderr_tail": [line for line in stderr.splitlines() if line.strip()][-2:],
           "error": next((line for line in stderr.splitlines() if line.startswith(_OURS[1])), None)}
    wrote = _WROTE.search(stdout)
    if wrote:
        row["convs"], row["nodes"], row["transposes"] = (int(g) for g in wrote.groups())
    total = _TOTAL.search(stdout)
    if total:
        row["peak_mb"] = int(total.group(2))
    worst = None
    for line in stdout.splitlines():
        match = _PARITY.match(line)
        if not match or match.group(1) == "layer":
            continue
        try:
            relative = float(match.group(3))
        except ValueError:
            continue
        if not match.group(1).startswith("output"):
            row["compared"] += 1
        if worst is None or relative > worst[0]:
            worst = (relative, match.group(1))
    if worst:
        row["worst"], row["worst_layer"] = worst
    if os.path.exists(out):
        row["layout_transposes"], row["own_transposes"] = transposes_of(out)
        for leftover in (out, out + ".data"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return row


def transposes_of(path: str) -> tuple[int, int]:
    """(layout Transposes our passes promise to remove, the model's own: attention's, permutes in forward)."""
    import onnx

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from converters.transposes import classify

    return classify(onnx.load(path, load_external_data=False))


def layout_left(r: dict) -> int:
    """Layout Transposes left (a failure); rows from before the split count every Transpose above 2."""
    if "layout_transposes" in r:
        return r["layout_transposes"] or 0
    count = r["transposes"] or 0
    return count if count > 2 else 0


def outcome(r: dict) -> str:
    if r["exit"] == 0 and not r["foreign_stderr"] and layout_left(r):
        return f"FAIL: {layout_left(r)} layout Transposes left (our passes remove those)"
    if r["exit"] == 0 and not r["foreign_stderr"]:
        text = "ok, backbone+neck" if r.get("features") else "ok"
        if r.get("own_transposes"):  # the model's own permutes (attention's heads, windows) stay: said, not hidden
            text += f", {r['own_transposes']} of its own Transposes"
        return text
    if r["exit"] == "timeout":
        return "FAIL: timeout"
    text = "FAIL" + (" (traceback on stderr)" if r["foreign_stderr"] else "")
    if r["error"]:
        text += f": {r['error'][len(_OURS[1]):].strip()[:110]}"
    elif r["foreign_stderr"]:
        text += f": {(r.get('stderr_tail') or [''])[-1][:110]}"
    return text.replace("|", "/")


def markdown(rows: list[dict]) -> str:
    lines = ["| source | model | parameters (M) | seconds | peak RSS MB | nodes | Transposes (layout / own) | "
             "convs compared | worst parity (relative) | outcome |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    dash = lambda v: "-" if v is None else v  # noqa: E731
    for r in rows:
        convs = f"{r['compared']}/{r['convs']}" if r["convs"] is not None else "-"
        worst = f"{r['worst']:.2g}" if r["worst"] is not None else "-"
        params = f"{r['parameters'] / 1e6:.1f}" if r.get("parameters") else "-"
        transposes = dash(r["transposes"]) if "layout_transposes" not in r else \
            f"{r['transposes']} ({r['layout_transposes']} / {r['own_transposes']})"
        lines.append(f"| {r['kind']} | {r['model']} | {params} | {r['seconds']:.0f} | {dash(r['peak_mb'])} | "
                     f"{dash(r['nodes'])} | {transposes} | {convs} | {worst} | {outcome(r)} |")
    passed = sum(1 for r in rows if outcome(r).startswith("ok"))
    lines.append(f"\n{passed} of {len(rows)} converted with --check")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated KIND:NAME, e.g. keras-app:VGG16,timm:resnet18")
    parser.add_argument("--timm-cache", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out",
                                                             "timm_smallest.json"),
                        help="where --set timm keeps its listing of each module's smallest model")
    parser.add_argument("--set", choices=["all", "default", "torchvision", "timm", "ci"], default="all",
                        help="all (default): the keras.applications set, every torchvision model, each timm "
                             "module's smallest; torchvision: every classification, segmentation and detection "
                             "(backbone+neck) model, smallest first; timm: each module's smallest; default: the "
                             "17 keras.applications models and a few torch ones; ci: a fast subset")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--markdown", help="also write the table here")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per model (default 900)")
    args = parser.parse_args(argv)
    models = MODELS if not args.only else [tuple(item.split(":", 1)) for item in args.only.split(",")]
    rows, skipped, counts = [], [], {}
    if args.set == "ci" and not args.only:
        models = CI
    if args.set in ("torchvision", "timm", "all") and not args.only:
        models = []
        listing = []
        if args.set == "all":
            listing += [("keras-app", n, None) for n in KERAS_APPS]
        if args.set in ("torchvision", "all"):
            listing += torchvision_all()
        if args.set in ("timm", "all"):
            listing += timm_smallest(args.timm_cache)
        for kind, name, parameters in listing:
            counts[(kind, name)] = parameters
            if parameters is not None and parameters > SKIP_OVER:
                skipped.append(f"{kind} {name}: skipped, {parameters / 1e6:.0f} M parameters > "
                               f"{SKIP_OVER / 1e6:.0f} M (memory and time of --check on a shared machine)")
                print(skipped[-1], file=sys.stderr, flush=True)
            else:
                models.append((kind, name))
    with tempfile.TemporaryDirectory(prefix="inspector-zoo-") as folder:
        for kind, name in models:
            row = run_one(kind, name, folder, args.timeout, counts.get((kind, name)))
            rows.append(row)
            if args.json:  # after each model, so that a long run's rows survive an interruption
                os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
                with open(args.json, "w") as handle:
                    json.dump(rows, handle, indent=1)
            print(f"{kind} {name}: exit {row['exit']}, {row['seconds']} s, worst {row['worst']}"
                  f"{' ' + row['error'] if row['error'] else ''}"
                  f"{' FOREIGN ' + ' | '.join(row['stderr_tail']) if row['foreign_stderr'] else ''}",
                  file=sys.stderr, flush=True)
    table = markdown(rows) + "".join(f"\n- {line}" for line in skipped)
    print(table)
    if args.markdown:
        os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
        with open(args.markdown, "w") as handle:
            handle.write(table + "\n")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    failed = [r for r in rows if not outcome(r).startswith("ok")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
