"""Benchmark: the audit's batches on Ray (``--ray``) against one process at the same thread count.

Two ways, each in a fresh process of its own, interleaved (single, ray, single, ray, ...), medians:

  single  inspector.audit.audit(model, files) in one process whose onnxruntime sessions run ONE
          intra-op thread (execution.INTRA_OP_THREADS = 1): what one Ray actor runs.
  ray     the same audit with ray=local:W: a local cluster of W CPUs started first (not timed), then
          W actors of one thread each (--ray-threads 1, the default), at the single process's priority
          (RAY_worker_niceness=0: Ray's default of 15 starves the actors on a machine shared with other jobs).

Timed in both: the batch phase, the part Ray distributes (run._run_batches, distributed.partials_on_ray:
the sessions' creation, decoding, runs, partials, merging; on Ray also its actors' start), and the whole
audit call. ``per_worker_ratio`` = (images / ray batch phase / W) / (images / single batch phase): 1.0 when a
Ray worker is as fast as one process of the same thread count (goal: within 20%, >= 0.8). The same
images, batch and preprocessing in both (``--preprocess``, default torch: no inference from the images);
no hold-out (all images judged), so the batch phase is the whole dataset.

  python bench/bench_audit_ray.py --json bench/out/audit_ray.json [--images N] [--workers W] [--model M]
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

DEFAULT_IMAGES = 96
DEFAULT_BATCH = 16


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=os.path.join(OUT, "audit_ray.json"), metavar="FILE")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES, metavar="N",
                        help=f"images (default {DEFAULT_IMAGES}; VGG16: about 0.15 s each per way per core)")
    parser.add_argument("--workers", type=int, default=None, metavar="W",
                        help="Ray actors, one CPU and one thread each (default: the usable cores)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, metavar="B")
    parser.add_argument("--runs", type=int, default=1, help="interleaved runs of each way (median reported)")
    parser.add_argument("--preprocess", default="torch", help="preprocessing for both ways (default torch)")
    parser.add_argument("--model", help="ONNX model (default: as bench/bench_audit.py chooses)")
    parser.add_argument("--photos", metavar="DIR", help="make the images from the photos in DIR (bench_audit.py)")
    parser.add_argument("--images-dir", metavar="DIR", help="where the generated images are kept")
    parser.add_argument("--goal", type=float, default=0.8, metavar="R")
    parser.add_argument("--worker", choices=("single", "ray"), help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers is None:
        args.workers = max(1, len(os.sched_getaffinity(0)))
    if min(args.images, args.batch, args.runs, args.workers) < 1:
        parser.error("--images, --batch, --runs and --workers must be at least 1")
    return args


def worker(way: str, args, files: list[str]) -> dict:
    """One way, timed in this process: the batch phase and the whole audit call."""
    import inspector
    from inspector import execution
    from inspector.audit import audit, distributed
    from inspector.audit import run as audit_run

    phase = {"s": 0.0}

    def timed(function):
        def inner(*a, **k):
            started = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                phase["s"] += time.perf_counter() - started
        return inner

    if way == "ray":
        # Ray starts its workers at niceness 15 (they yield to its own daemons and to every other process):
        # on a machine shared with other jobs the actors would get a fraction of the single process's share.
        # Both ways at the same priority, as on a cluster that runs nothing else.
        os.environ["RAY_worker_niceness"] = "0"
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        cluster_s = time.perf_counter() - started
        distributed.partials_on_ray = timed(distributed.partials_on_ray)
        target = "auto"  # connect() finds the cluster started above
    else:
        cluster_s = 0.0
        execution.INTRA_OP_THREADS = 1  # what one actor runs
        audit_run._run_batches = timed(audit_run._run_batches)
        target = None
    model = inspector.load(args.model)
    started = time.perf_counter()
    result = audit(model, files, batch=args.batch, preprocess=args.preprocess, device="cpu", quiet=True,
                   hold_out=False, ray=target)
    whole = time.perf_counter() - started
    if way == "ray":
        import ray

        ray.shutdown()
    return {"batch_phase_s": phase["s"], "audit_s": whole, "cluster_start_s": cluster_s, "images": result.images,
            "dead_channels": sum(len(layer.dead_channels) for layer in result.layers)}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        with open(args.files) as handle:
            files = json.load(handle)
        print(json.dumps(worker(args.worker, args, files)))
        return 0
    import bench_audit

    if args.model:
        model, how = os.path.abspath(args.model), "given with --model"
    else:
        model, how = bench_audit.default_model()
    files = bench_audit.make_images(args.images, args.photos, args.images_dir or bench_audit.IMAGES_DIR)
    files_file = os.path.join(OUT, "audit_ray_images.json")
    common.write_json(files_file, files)
    print(f"audit on Ray: {args.images} images, batch {args.batch}, {args.workers} worker(s) of 1 thread against "
          f"one process of 1 thread, {args.runs} run(s), {os.path.relpath(model, ROOT)}", flush=True)
    samples = {"single": [], "ray": []}
    loads = []
    for run in range(1, args.runs + 1):
        for way in samples:
            command = [PYTHON, os.path.abspath(__file__), "--worker", way, "--model", model, "--batch",
                       str(args.batch), "--workers", str(args.workers), "--preprocess", args.preprocess,
                       "--images", str(args.images), "--files", files_file]
            loads.append(os.getloadavg()[0])
            sample = common.run_json_worker(way, command)
            samples[way].append(sample)
            print(f"  {way:<6} run {run}/{args.runs}  batch phase {sample['batch_phase_s']:7.2f} s  "
                  f"audit {sample['audit_s']:7.2f} s  {sample['images'] / sample['batch_phase_s']:6.2f} images/s "
                  f"(load {loads[-1]:.1f})", flush=True)
    if samples["single"][0]["images"] != samples["ray"][0]["images"]:
        raise SystemExit("the two ways counted different images")

    def median(way, key):
        return statistics.median(s[key] for s in samples[way])

    images = samples["single"][0]["images"]
    single_rate = images / median("single", "batch_phase_s")
    ray_rate = images / median("ray", "batch_phase_s")
    per_worker = ray_rate / args.workers
    result = {
        "images": images,
        "batch": args.batch,
        "workers": args.workers,
        "threads_per_worker": 1,
        "runs": args.runs,
        "model": os.path.relpath(model, ROOT),
        "model_how": how,
        "single_batch_phase_s": round(median("single", "batch_phase_s"), 3),
        "ray_batch_phase_s": round(median("ray", "batch_phase_s"), 3),
        "single_audit_s": round(median("single", "audit_s"), 3),
        "ray_audit_s": round(median("ray", "audit_s"), 3),
        "ray_cluster_start_s": round(median("ray", "cluster_start_s"), 3),
        "single_images_per_s": round(single_rate, 3),
        "ray_images_per_s": round(ray_rate, 3),
        "ray_images_per_s_per_worker": round(per_worker, 3),
        "per_worker_ratio": round(per_worker / single_rate, 3),
        "paired_per_worker_ratios": [round((images / r["batch_phase_s"] / args.workers)
                                           / (images / s["batch_phase_s"]), 3)
                                     for s, r in zip(samples["single"], samples["ray"])],
        "goal": f"per_worker_ratio >= {args.goal} (a Ray worker within {round((1 - args.goal) * 100)}% of one "
                "process at the same thread count)",
        "goal_met": per_worker / single_rate >= args.goal,
        "load_average_1min": round(statistics.median(loads), 2),
        "samples": samples,
        "machine": common.machine(),
    }
    common.write_json(os.path.abspath(args.json), result)
    print(f"one process of 1 thread {single_rate:.2f} images/s; Ray {args.workers} workers {ray_rate:.2f} images/s, "
          f"{per_worker:.2f} a worker: ratio {result['per_worker_ratio']} (goal >= {args.goal}) -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
