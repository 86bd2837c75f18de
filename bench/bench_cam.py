"""ScoreCAM: `inspector cam`'s time against C x plain batched onnxruntime inference of the same model,
and against pytorch-grad-cam's ScoreCAM on the torch model itself, side by side in one run.

The model: torchvision's ResNet-18 (its own initial weights, seeded; speed does not depend on the
values) at 128x128, exported by our converter (dynamic batch). The target layer: layer3's last conv,
256 channels of 8x8, so ScoreCAM runs 256 masked inputs. Three ways, each in a fresh process of its
own, interleaved (plain, inspector, grad-cam, plain, ...), medians over the rounds; each way's time
is measured in its process from the model file on disk to the result (session or module creation
included, interpreter and imports excluded):

  plain      onnxruntime.InferenceSession on the exported file; 256 random inputs in batches of B.
  inspector  inspector.load(file).cam(photo, "scorecam", layer, batch=B).
  gradcam    pytorch_grad_cam.ScoreCAM(model=resnet18, target_layers=[layer3]) with batch_size B, on torch (CPU).

Goal: inspector / plain <= 1.2.

``--methods scorecam,ablationcam,eigencam`` adds inspector's and grad-cam's other methods (one way
each per method); ``--device cuda`` runs every way on the GPU (onnxruntime's CUDAExecutionProvider,
torch on cuda) and names the provider that ran.

  python bench/bench_cam.py --json bench/out/cam_raw.json [--runs N] [--batch B] [--quick]
                            [--device cpu|cuda] [--methods M,...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import OUT, PYTHON, ROOT  # noqa: E402

SIZE = 128
LAYER = 14  # layer3.1.conv2 (the converter names it conv2.conv5 here)
MODEL = os.path.join(OUT, "cam_resnet18.onnx")
METHODS = ("scorecam", "ablationcam", "eigencam")
GRADCAM_CLASSES = {"scorecam": "ScoreCAM", "ablationcam": "AblationCAM", "eigencam": "EigenCAM"}


def ways(methods) -> list[str]:
    """plain, then inspector and grad-cam per method (ScoreCAM's keep their first names)."""
    out = ["plain"]
    for method in methods:
        suffix = "" if method == "scorecam" else f":{method}"
        out += [f"inspector{suffix}", f"gradcam{suffix}"]
    return out


def resnet18():
    import torch
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def photo_path() -> str:
    from common import sample_photo

    return sample_photo()


def export() -> None:
    if os.path.exists(MODEL):
        return
    sys.path.insert(0, ROOT)
    import converters

    os.makedirs(OUT, exist_ok=True)
    converters.convert_torch(resnet18, (1, 3, SIZE, SIZE), MODEL)


def worker(way: str, batch: int, device: str = "cpu") -> dict:
    import numpy as np

    tool, _, method = way.partition(":")
    method = method or "scorecam"
    started = time.perf_counter()
    if tool == "plain":
        import onnxruntime as ort

        if device == "cuda" and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        session = ort.InferenceSession(MODEL, providers=["CUDAExecutionProvider" if device == "cuda"
                                                         else "CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        channels = 256
        inputs = np.random.default_rng(0).standard_normal((channels, 3, SIZE, SIZE)).astype(np.float32)
        for start in range(0, channels, batch):
            session.run(None, {name: inputs[start:start + batch]})
        return {"seconds": time.perf_counter() - started, "runs": channels, "provider": session.get_providers()[0]}
    if tool == "inspector":
        sys.path.insert(0, ROOT)
        import inspector

        result = inspector.load(MODEL).cam(photo_path(), method, LAYER, batch=batch, device=device)
        return {"seconds": time.perf_counter() - started, "runs": result.runs, "layer_shape": list(result.layer_shape),
                "provider": result.provider}
    import torch
    import pytorch_grad_cam

    sys.path.insert(0, ROOT)
    import inspector

    x = torch.from_numpy(inspector.load(MODEL).image_batch([photo_path()]))
    started = time.perf_counter()  # the module is built in memory: no file to load
    net = resnet18()
    if device == "cuda":
        net, x = net.cuda(), x.cuda()
    with getattr(pytorch_grad_cam, GRADCAM_CLASSES[method])(model=net, target_layers=[net.layer3]) as cam:
        cam.batch_size = batch
        cam(input_tensor=x, targets=None)
    if device == "cuda":
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - started, "runs": 256 if method != "eigencam" else 1,
            "torch_threads": torch.get_num_threads(), "provider": f"torch {x.device.type}"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=os.path.join(OUT, "cam_raw.json"), metavar="FILE")
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds after one warm-up round (default 3)")
    parser.add_argument("--batch", type=int, default=16, metavar="B")
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--methods", default="scorecam", metavar="M,...",
                        help=f"methods to time (default scorecam; any of {','.join(METHODS)})")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if set(methods) - set(METHODS):
        parser.error(f"--methods: choose from {','.join(METHODS)}")
    methods = list(dict.fromkeys(["scorecam", *methods]))  # ScoreCAM is the goal's method: always timed
    if args.worker:
        os.environ.setdefault("TQDM_DISABLE", "1")
        print(json.dumps(worker(args.worker, args.batch, args.device)))
        return 0
    runs = 1 if args.quick else max(1, args.runs)
    export()
    names = ways(methods)
    samples: dict[str, list] = {way: [] for way in names}
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for round_ in range(runs + 1):  # round 0 warms the disk cache and is dropped
        for way in names:
            done = subprocess.run([PYTHON, __file__, "--worker", way, "--batch", str(args.batch), "--device",
                                   args.device], capture_output=True, text=True, env=env, cwd=ROOT)
            if done.returncode != 0:
                sys.exit(f"{way} failed: {done.stderr.strip().splitlines()[-1:]}")
            data = json.loads(done.stdout.strip().splitlines()[-1])
            if round_:
                samples[way].append(data)
            print(f"round {round_} {way}: {data['seconds']:.2f} s ({data.get('provider')})", flush=True)
    medians = {way: statistics.median(s["seconds"] for s in samples[way]) for way in names}
    result = {
        "network": f"torchvision resnet18 (random init, seed 0) at {SIZE}x{SIZE}, exported by inspector's converter",
        "layer": f"conv layer {LAYER}, layer3.1.conv2 (inspector) / layer3 (grad-cam): 256 channels of 8x8", "batch": args.batch, "rounds": runs,
        "device": args.device,
        "ways": {way: {"median_s": round(medians[way], 3), "samples_s": [round(s["seconds"], 3) for s in samples[way]],
                       "provider": samples[way][-1].get("provider")}
                 for way in names},
        "inspector_over_plain": round(medians["inspector"] / medians["plain"], 3),
        "gradcam_over_inspector": round(medians["gradcam"] / medians["inspector"], 3),
        "goal_inspector_over_plain_max": 1.2,
    }
    for method in methods[1:]:
        result[f"gradcam_over_inspector_{method}"] = round(
            medians[f"gradcam:{method}"] / medians[f"inspector:{method}"], 3)
    result["goal_met"] = result["inspector_over_plain"] <= 1.2
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k != "ways"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
