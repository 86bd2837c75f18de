"""Benchmark: `inspector view` on VGG16 (528 MB): a layer click after the first image, and the server's peak memory
against `inspector maps --all` on the same model and photo.

Interleaved rounds, each in fresh processes (peak RSS is that process's alone):

  maps    `inspector maps MODEL PHOTO --all -o DIR`: every conv layer's maps drawn; its peak RSS.
  view    `inspector view MODEL PHOTO --no-browser` in a child; this harness is the page: info, the layer
          list, the audit started as the page starts it (a background job, polled until done), then the
          first image (the first layer's maps: session built, one run), then a click on every layer in a
          fixed shuffled order as the page makes it (the filters' PNG, then the maps' float32), twice over
          (first visits render the filters' picture; later ones read caches). The child's peak RSS (VmHWM)
          is read before it is stopped.

``click_ms``: the median over the first visits and, apart, over the second ones (goal: under 300 ms);
``peak_ratio``: view's peak over maps --all's, medians over rounds (goal: at most 1.3). The load average
is recorded: the machine may be shared.

  python bench/bench_view.py --json bench/out/view.json [--model models/vgg16.onnx] [--runs 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
from common import OUT, ROOT  # noqa: E402

INSPECTOR = os.path.join(os.path.dirname(sys.executable), "inspector")
GOAL_MS = 300.0
GOAL_PEAK = 1.3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=os.path.join(OUT, "view.json"), metavar="FILE")
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "vgg16.onnx"))
    parser.add_argument("--photo", help="default: matplotlib's grace_hopper.jpg")
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds (medians reported)")
    parser.add_argument("--no-audit", action="store_true", help="the page's audit is not started")
    return parser.parse_args(argv)


class Page:
    """The page's calls, over one keep-alive connection, with the token."""

    def __init__(self, url: str):
        rest = url.split("http://", 1)[1]
        host, token = rest.split("/#token=")
        self.host, self.token = host, token
        address, port = host.split(":")
        self.connection = http.client.HTTPConnection(address, int(port), timeout=600)

    def get(self, path: str, method: str = "GET") -> bytes:
        self.connection.request(method, path, headers={"X-Inspector-Token": self.token, "Host": self.host})
        response = self.connection.getresponse()
        body = response.read()
        if response.status not in (200, 202):
            raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
        if response.getheader("Connection", "").lower() == "close":
            self.connection.close()
        return body

    def json(self, path: str, method: str = "GET"):
        return json.loads(self.get(path, method))


def peak_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def view_round(model: str, photo: str, audit: bool, order_seed: int) -> dict:
    process = subprocess.Popen([INSPECTOR, "view", model, photo, "--no-browser"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        started = time.perf_counter()
        url = process.stdout.readline().split(": ", 1)[1].strip()
        page = Page(url)
        page.json("/api/info")
        layers = page.json("/api/layers?model=0")
        ready_s = time.perf_counter() - started
        audit_s = None
        if audit:
            t = time.perf_counter()
            job = page.json("/api/jobs?kind=audit&model=0", method="POST")
            while page.json(f"/api/jobs?id={job['id']}")["state"] == "running":
                time.sleep(0.1)
            page.json("/api/audit?model=0")
            audit_s = time.perf_counter() - t
        t = time.perf_counter()
        page.get("/api/maps?model=0&layer=0&image=0")
        first_s = time.perf_counter() - t
        order = list(range(len(layers)))
        random.Random(order_seed).shuffle(order)
        visits = []
        for _ in range(2):
            times = []
            for index in order:
                t = time.perf_counter()
                page.get(f"/api/filters?model=0&layer={index}")
                page.get(f"/api/maps?model=0&layer={index}&image=0")
                times.append((time.perf_counter() - t) * 1000)
            visits.append(times)
        maps_only = []
        for index in order:
            t = time.perf_counter()
            page.get(f"/api/maps?model=0&layer={index}&image=0")
            maps_only.append((time.perf_counter() - t) * 1000)
        peak = peak_kb(process.pid) / 1024
    finally:
        process.terminate()
        process.wait(timeout=60)
    return {"ready_s": round(ready_s, 2), "audit_s": None if audit_s is None else round(audit_s, 2),
            "first_image_s": round(first_s, 2), "first_visit_ms": [round(v, 1) for v in visits[0]],
            "second_visit_ms": [round(v, 1) for v in visits[1]], "maps_only_ms": [round(v, 1) for v in maps_only],
            "peak_rss_mb": round(peak, 1), "layers": [layers[i]["name"] for i in order]}


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.path.exists(args.model):
        sys.exit(f"no model at {args.model} (make demo writes models/vgg16.onnx, or: inspector convert keras-app "
                 "VGG16 --weights none -o FILE, then --model FILE)")
    photo = args.photo or common.sample_photo()
    rounds, maps_peaks, maps_walls, loads = [], [], [], []
    for run in range(args.runs):
        loads.append(os.getloadavg()[0])
        with tempfile.TemporaryDirectory() as folder:
            sample = common.measure([INSPECTOR, "maps", args.model, photo, "--all", "-o", folder])
        if sample.returncode != 0:
            sys.exit(f"inspector maps --all failed (exit {sample.returncode})")
        maps_peaks.append(sample.peak_rss_mb)
        maps_walls.append(sample.wall_s)
        loads.append(os.getloadavg()[0])
        rounds.append(view_round(args.model, photo, not args.no_audit, run))
        print(f"round {run + 1}: maps --all {sample.peak_rss_mb:.0f} MB {sample.wall_s:.1f} s; view "
              f"{rounds[-1]['peak_rss_mb']:.0f} MB, first image {rounds[-1]['first_image_s']} s, click median "
              f"{statistics.median(rounds[-1]['first_visit_ms']):.0f} / "
              f"{statistics.median(rounds[-1]['second_visit_ms']):.0f} ms", file=sys.stderr)
    first = statistics.median(v for r in rounds for v in r["first_visit_ms"])
    second = statistics.median(v for r in rounds for v in r["second_visit_ms"])
    maps_only = statistics.median(v for r in rounds for v in r["maps_only_ms"])
    slowest = max(v for r in rounds for v in r["first_visit_ms"])
    view_peak = statistics.median(r["peak_rss_mb"] for r in rounds)
    maps_peak = statistics.median(maps_peaks)
    data = {
        "model": os.path.relpath(args.model, ROOT) if args.model.startswith(ROOT) else args.model,
        "model_mb": round(os.path.getsize(args.model) / 2**20, 1), "photo": os.path.basename(photo),
        "runs": args.runs, "cores": os.cpu_count(), "load_average": [round(v, 2) for v in loads],
        "audit_started": not args.no_audit,
        "click_first_visit_median_ms": round(first, 1), "click_second_visit_median_ms": round(second, 1),
        "maps_only_median_ms": round(maps_only, 1), "click_slowest_ms": round(slowest, 1),
        "first_image_s": statistics.median(r["first_image_s"] for r in rounds),
        "view_peak_rss_mb": view_peak, "maps_all_peak_rss_mb": maps_peak,
        "maps_all_wall_s": round(statistics.median(maps_walls), 2),
        "peak_ratio": common.ratio(view_peak, maps_peak),
        "goal_click_ms": GOAL_MS, "goal_peak_ratio": GOAL_PEAK,
        "click_ok": first < GOAL_MS and second < GOAL_MS,
        "peak_ok": view_peak <= GOAL_PEAK * maps_peak,
        "rounds": rounds,
    }
    common.write_json(args.json, data)
    print(json.dumps({k: v for k, v in data.items() if k != "rounds"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
