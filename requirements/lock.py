"""`make lock`: re-resolve the pinned environments from pyproject.toml's ranges.

For each variant (cpu: onnxruntime, gpu: onnxruntime-gpu) pip resolves, in a throwaway
virtual environment and without installing anything (``pip install --dry-run
--ignore-installed --report``), exactly the set of distributions that ``make .venv``
would install into an empty venv: every transitive dependency, for this interpreter and
platform. The result is written as ``requirements/lock-VARIANT.txt``, one ``name==version``
a line, which ``make .venv`` passes to pip as constraints (``-c``). So the GPU variant is
resolved without onnxruntime-gpu ever being installed, let alone beside onnxruntime.

Usage: python requirements/lock.py [--variant cpu|gpu ...] [--check] [--torch V --torchvision V]
       VENV/bin/python requirements/lock.py --verify requirements/lock-cpu.txt
  --check   resolve again and compare with the committed files; exit 1 when they differ
  --verify  in a built venv: exit 1 when a distribution installed there is missing from the lock or
            at another version (pip constraints only hold the packages they list: a dependency
            added to pyproject.toml without `make lock` would otherwise float)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("cpu", "gpu")
EXTRAS = "keras,torch,ray,test"  # what `make .venv` installs beside the onnxruntime flavour
PROJECT = "inspector-cnn"


def lock_path(variant: str) -> str:
    return os.path.join(ROOT, "requirements", f"lock-{variant}.txt")


def resolve(python: str, variant: str, torch: str, torchvision: str) -> dict[str, str]:
    """{distribution name: version} that pip would install for ``variant`` into an empty venv."""
    with tempfile.TemporaryDirectory(prefix="inspector-lock-") as tmp:
        report = os.path.join(tmp, "report.json")
        # torch and torchvision pinned as a matching pair: an unpinned pair can load operators
        # that do not exist ('torchvision::nms does not exist').
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
                        "--report", report, f"torch=={torch}", f"torchvision=={torchvision}",
                        f"{ROOT}[{variant},{EXTRAS}]"], check=True, cwd=tmp)
        with open(report, encoding="utf-8") as handle:
            data = json.load(handle)
    pins = {}
    for item in data["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if canonical(name) != PROJECT:
            pins[canonical(name)] = version
    # tf_keras (the legacy-keras extra) is installed with --no-deps: its `tensorflow` requirement would put
    # a second TensorFlow over tensorflow-cpu. Its releases follow TensorFlow's.
    pins["tf-keras"] = pins["tensorflow-cpu"]
    return pins


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def render(variant: str, pins: dict[str, str], pip_version: str, python_version: str) -> str:
    other = "onnxruntime" if variant == "gpu" else "onnxruntime-gpu"
    lines = [
        f"# The {variant.upper()} environment of `make .venv{' ORT=gpu' if variant == 'gpu' else ''}`: "
        "every distribution pinned, used as pip constraints (-c).",
        f"# Written by `make lock` (requirements/lock.py) from pyproject.toml's ranges; resolved by pip "
        f"{pip_version} for CPython {python_version} on Linux x86_64. Do not edit by hand.",
        f"# Never install {other} into the same environment.",
        f"pip=={pip_version}",
    ]
    lines += [f"{name}=={version}" for name, version in sorted(pins.items())]
    return "\n".join(lines) + "\n"


def verify(lock: str) -> int:
    """Every distribution of this interpreter's environment is in ``lock`` at the locked version."""
    from importlib.metadata import distributions

    pins = {}
    with open(lock, encoding="utf-8") as handle:
        for line in handle:
            if line.strip() and not line.startswith("#"):
                name, version = line.strip().split("==", 1)
                pins[canonical(name)] = version
    wrong = []
    for dist in distributions():
        name = canonical(dist.metadata["Name"])
        if name != PROJECT and pins.get(name) != dist.version:
            wrong.append(f"{name} {dist.version} (lock: {pins.get(name, 'absent')})")
    if wrong:
        print(f"installed but not as {os.path.relpath(lock, ROOT)} pins them: {', '.join(sorted(wrong))}; "
              "run `make lock` if pyproject.toml changed, or rebuild the venv if they were installed by hand",
              file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="default: both")
    parser.add_argument("--check", action="store_true", help="compare a fresh resolution with the committed files")
    parser.add_argument("--torch", default="2.14.1")
    parser.add_argument("--torchvision", default="0.29.1")
    parser.add_argument("--python", default=sys.executable, help="interpreter the venvs are built with")
    parser.add_argument("--verify", metavar="LOCK", help="check this environment against LOCK and exit")
    args = parser.parse_args(argv)
    if args.verify:
        return verify(args.verify)
    variants = args.variant or list(VARIANTS)
    with tempfile.TemporaryDirectory(prefix="inspector-lock-venv-") as venv:
        subprocess.run([args.python, "-m", "venv", venv], check=True)
        python = os.path.join(venv, "bin", "python")
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
        pip_version = subprocess.run([python, "-c", "import pip; print(pip.__version__)"], check=True,
                                     capture_output=True, text=True).stdout.strip()
        python_version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                                        check=True, capture_output=True, text=True).stdout.strip()
        differ = []
        for variant in variants:
            text = render(variant, resolve(python, variant, args.torch, args.torchvision), pip_version,
                          python_version)
            path = lock_path(variant)
            if args.check:
                old = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
                if old != text:
                    differ.append(os.path.relpath(path, ROOT))
                continue
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
            print(f"{os.path.relpath(path, ROOT)}: {text.count(chr(10)) - 3} pins")
    if differ:
        print(f"a fresh resolution differs from {', '.join(differ)}: run `make lock` and review the diff",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
