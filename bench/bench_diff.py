"""Benchmark: `inspector diff` of a float model and its int8 QDQ quantization over N images, against two
plain inference runs of the same images (one per model), and its peak memory at N and at 5N images.

Each way runs in a fresh process of its own (peak RSS is that way's alone), interleaved, medians:

  plain   for model A, then model B: onnxruntime.InferenceSession on the file, graph outputs only;
          per batch: decode + preprocess the images (Model.image_batch), run. Two plain inference runs.
  diff    inspector.compare.diff(A, B, files, batch=B): weights compared, then per batch each image
          decoded once, ONE run of each model with every conv layer's output added, streamed SQNR.

``ratio`` = diff_s / plain_s (goal <= 1.3). ``peak_flat`` compares diff's peak RSS over N and over
5N images (goal: flat, within 5%).

Default models: models/trained/vgg16_tumor.onnx (trained Keras VGG16, tf2onnx) and its QDQ per-channel
quantization by onnxruntime.quantization.quantize_static, calibrated on four photos and written to
bench/out/ (never committed).

  python bench/bench_diff.py --json bench/out/diff.json [--images 32] [--peak-images 160] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
from common import OUT, PYTHON, ROOT  # noqa: E402

FLOAT = os.path.join(ROOT, "models", "trained", "vgg16_tumor.onnx")
QUANTIZED = os.path.join(OUT, "vgg16_tumor_qdq.onnx")
CALIBRATION = ("grace_hopper.jpg", "camera.png", "coffee.png", "chelsea.png")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", "--out", dest="json", default=os.path.join(OUT, "diff.json"), metavar="FILE")
    parser.add_argument("--images", type=int, default=32, metavar="N", help="images for the time ratio (default 32)")
    parser.add_argument("--peak-images", type=int, default=160, metavar="M",
                        help="a second diff run over M images, for the memory's flatness (default 160; 0 skips it)")
    parser.add_argument("--batch", type=int, default=8, metavar="B", help="batch of both ways (default 8, diff's own)")
    parser.add_argument("--runs", type=int, default=1, help="interleaved runs of each way (median reported)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--preprocess", default="raw", help="preprocessing of both models (default raw: vgg16_tumor)")
    parser.add_argument("--model-a", default=FLOAT)
    parser.add_argument("--model-b", help="default: model A quantized with quantize_static (QDQ, per channel)")
    parser.add_argument("--quick", action="store_true", help="16 images, 48 for the peak, one run")
    parser.add_argument("--worker", choices=("plain", "diff"), help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.peak_images, args.runs = 16, 48, 1
    return args


def quantized(float_path: str, preprocess: str) -> str:
    """Model A quantized by onnxruntime (QDQ, per channel, int8), calibrated on four photos."""
    if os.path.exists(QUANTIZED):
        return QUANTIZED
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    import inspector

    model = inspector.load(float_path)
    photos = [os.path.join(ROOT, "models", "trained", "photos", p) for p in CALIBRATION]
    batch = model.image_batch([p for p in photos if os.path.exists(p)] or [common.sample_photo()], preprocess)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{model.input.name: batch[i:i + 1]} for i in range(len(batch))])

        def get_next(self):
            return next(self.feeds, None)

    os.makedirs(OUT, exist_ok=True)
    quantize_static(float_path, QUANTIZED + ".part", Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    os.replace(QUANTIZED + ".part", QUANTIZED)
    return QUANTIZED


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_plain(args, files) -> dict:
    import onnxruntime as ort

    import inspector

    started = time.perf_counter()
    infer = 0.0
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if args.device == "cuda" else ["CPUExecutionProvider"]
    for path in (args.model_a, args.model_b):
        model = inspector.load(path)
        session = ort.InferenceSession(path, providers=providers)
        spec = model.preprocessing(args.preprocess)
        for start in range(0, len(files), args.batch):
            inputs = model.image_batch(files[start:start + args.batch], spec)
            before = time.perf_counter()
            session.run(None, {model.input.name: inputs})
            infer += time.perf_counter() - before
    return {"seconds": time.perf_counter() - started, "inference_s": infer, "peak_rss_mb": peak_rss_mb()}


def worker_diff(args, files) -> dict:
    from inspector.compare import diff

    started = time.perf_counter()
    result = diff(args.model_a, args.model_b, files, batch=args.batch, preprocess=args.preprocess,
                  devices=[args.device], quiet=True)
    summary = result.to_dict()
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(), "images": result.images,
            "worst_layer": summary["worst_layer"], "min_sqnr_db": summary["summary"]["min_sqnr_db"],
            "providers": list(result.providers)}


def run_worker(way: str, args, files: list[str]) -> dict:
    files_file = os.path.join(OUT, f"diff_images_{len(files)}.json")
    common.write_json(files_file, files)
    command = [PYTHON, os.path.abspath(__file__), "--worker", way, "--files", files_file, "--batch", str(args.batch),
               "--device", args.device, "--preprocess", args.preprocess, "--model-a", args.model_a,
               "--model-b", args.model_b]
    return common.run_json_worker(way, command)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        with open(args.files) as handle:
            files = json.load(handle)
        print(json.dumps((worker_plain if args.worker == "plain" else worker_diff)(args, files)))
        return 0
    from bench_audit import make_images

    if not os.path.exists(args.model_a):
        common.write_json(os.path.abspath(args.json), {"not_run": f"{os.path.relpath(args.model_a, ROOT)} is missing "
                                                                   "(make models-trained)"})
        print(f"diff benchmark: {args.model_a} is missing: not run")
        return 0
    args.model_b = os.path.abspath(args.model_b) if args.model_b else quantized(args.model_a, args.preprocess)
    files = make_images(max(args.images, args.peak_images))
    print(f"diff benchmark: {os.path.relpath(args.model_a, ROOT)} against {os.path.relpath(args.model_b, ROOT)}, "
          f"{args.images} images (peak also at {args.peak_images}), batch {args.batch}, {args.runs} run(s), "
          f"{args.device}", flush=True)
    samples = {"plain": [], "diff": []}
    for run in range(1, args.runs + 1):
        for way in ("plain", "diff"):
            sample = run_worker(way, args, files[:args.images])
            samples[way].append(sample)
            print(f"  {way:<6} run {run}/{args.runs}  {sample['seconds']:7.2f} s  {sample['peak_rss_mb']:7.0f} MB peak",
                  flush=True)
    peak_large = None
    if args.peak_images:
        peak_large = run_worker("diff", args, files[:args.peak_images])
        print(f"  diff over {args.peak_images} images  {peak_large['seconds']:7.2f} s  "
              f"{peak_large['peak_rss_mb']:7.0f} MB peak", flush=True)

    def median(way, key):
        return statistics.median(s[key] for s in samples[way])

    plain_s, diff_s = median("plain", "seconds"), median("diff", "seconds")
    peak_small = median("diff", "peak_rss_mb")
    result = {
        "images": args.images,
        "batch": args.batch,
        "device": args.device,
        "model_a": os.path.relpath(args.model_a, ROOT),
        "model_b": os.path.relpath(args.model_b, ROOT),
        "two_plain_runs_s": round(plain_s, 3),
        "two_plain_runs_inference_only_s": round(median("plain", "inference_s"), 3),
        "diff_s": round(diff_s, 3),
        "ratio": round(diff_s / plain_s, 3),
        "goal": "diff at most 1.3x the time of two plain inference runs; peak RSS flat from N to 5N images",
        "goal_met_time": diff_s / plain_s <= 1.3,
        "plain_peak_rss_mb": round(median("plain", "peak_rss_mb"), 1),
        "diff_peak_rss_mb": round(peak_small, 1),
        "peak_images": args.peak_images or None,
        "diff_peak_rss_mb_at_peak_images": round(peak_large["peak_rss_mb"], 1) if peak_large else None,
        "diff_s_at_peak_images": round(peak_large["seconds"], 3) if peak_large else None,
        "peak_growth": round(peak_large["peak_rss_mb"] / peak_small, 3) if peak_large else None,
        "goal_met_memory": (peak_large["peak_rss_mb"] <= 1.05 * peak_small) if peak_large else None,
        "worst_layer": samples["diff"][0]["worst_layer"],
        "providers": samples["diff"][0]["providers"],
        "samples": samples,
        "machine": common.machine(),
    }
    common.write_json(os.path.abspath(args.json), result)
    print(f"two plain runs {plain_s:.2f} s, diff {diff_s:.2f} s: ratio {result['ratio']} (goal <= 1.3); diff peak "
          f"{peak_small:.0f} MB at {args.images} images"
          + (f", {peak_large['peak_rss_mb']:.0f} MB at {args.peak_images}" if peak_large else "")
          + f" -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
