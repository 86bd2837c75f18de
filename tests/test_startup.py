"""Start-up guard (issue 23): what each command imports, and what a dependency's import costs.

Each command runs for real in a fresh interpreter on a tiny model; the modules it
has loaded when it returns are checked against a list of known-heavy ones. Costs
are compared as ratios of ``python -X importtime`` figures taken in the same
conditions (never against a wall-clock limit): a dependency release that adds
half a second to every command (ml_dtypes 0.7.0 did, through ``import onnx``)
fails here as well as in ``make bench``'s ``imports`` section.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

import builders as b

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Known-heavy modules no command but `convert` (and `report`, for matplotlib) has a use for, each
# 0.1 s to several seconds to import: the frameworks the converters load; matplotlib (the colour
# maps ship as colormaps.npz, the tiles' labels are drawn with Pillow); SciPy, scikit-learn, pandas
# and OpenCV, which inspector never uses; onnx's Python reference evaluator and onnxscript, which
# ``import onnx`` does not load but a careless ``from onnx import reference`` would; and tqdm, which
# only draws a progress bar when stderr is a terminal (never in these subprocesses).
HEAVY = ("tensorflow", "keras", "tf2onnx", "torch", "torchvision", "timm", "jax", "matplotlib", "scipy",
         "sklearn", "pandas", "cv2", "onnx.reference", "onnxscript", "tqdm")
# `report` draws its charts with matplotlib; the rest of the list holds for it too.
ALLOWED = {"report": ("matplotlib",)}

# What each command imports as it runs, printed by the child when the command returns.
_CHILD = ("import json, sys\n"
          "from inspector.cli import main\n"
          "code = main(sys.argv[1:])\n"
          "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}), file=sys.stderr)\n")


def _env() -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


def _last_json(stderr: str) -> dict:
    return json.loads(stderr.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("startup")
    m, _ = b.conv_relu_nchw(size=32)
    import onnx

    onnx.save(m, str(folder / "m.onnx"))
    b.random_photo(folder / "photo.png", 32, 32)
    b.random_photo(folder / "other.png", 32, 32, seed=1)
    return folder


def commands(folder) -> dict[str, list[str]]:
    model, photo, other, out = (str(folder / n) for n in ("m.onnx", "photo.png", "other.png", "out"))
    return {
        "layers": ["layers", model],
        "filters": ["filters", model, "--all", "-o", out],
        "maps": ["maps", model, photo, "--all", "--preprocess", "raw", "-o", out],
        "cam": ["cam", model, photo, "--method", "eigencam", "--preprocess", "raw", "-o", out],
        "audit": ["audit", model, photo, other, "--preprocess", "raw", "--json", os.path.join(out, "audit.json")],
        "diff": ["diff", model, model, photo, "--preprocess", "raw", "--json", os.path.join(out, "diff.json")],
        "prune": ["prune", model, "--dry-run"],
        "report": ["report", model, photo, "--preprocess", "raw", "-o", os.path.join(out, "report.html")],
    }


def loaded_modules(argv: list[str]) -> list[str]:
    result = subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True,
                            env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    data = _last_json(result.stderr)
    assert data["code"] == 0, f"inspector {argv[0]} exited {data['code']}: {result.stderr[-2000:]}"
    return data["modules"]


@pytest.mark.parametrize("name", ["layers", "filters", "maps", "cam", "audit", "diff", "prune", "report"])
def test_command_imports_no_heavy_module(workdir, name):
    argv = commands(workdir)[name]
    modules = loaded_modules(argv)
    assert "onnxruntime" in modules or name in ("layers", "filters", "prune")  # it really ran
    heavy = [m for m in modules
             if any(m == h or m.startswith(h + ".") for h in HEAVY if h not in ALLOWED.get(name, ()))]
    assert not heavy, f"inspector {name} imported {', '.join(sorted(heavy)[:12])}"


def test_no_command_imports_at_parse_time():
    """`inspector --help` and building every subparser load no third-party module but the package."""
    code = ("import sys\nfrom inspector.cli import build_parser\nbuild_parser()\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    third_party = set(result.stdout.split()) - set(sys.stdlib_module_names) - {"inspector", "__main__"}
    third_party = {m for m in third_party if not m.startswith("_")}
    assert not third_party, f"building the parser imported {sorted(third_party)}"


# ------------------------------------------------------------------------------ import costs

def import_times(statement: str) -> dict[str, float]:
    """Cumulative import time (s) of each top-level module ``statement`` imports, in a fresh
    interpreter, from ``python -X importtime``: ``{"": total, name: cumulative}``."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", statement], capture_output=True,
                            text=True, env=_env(), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return parse_importtime(result.stderr)


# bench/bench_imports.py measures the same import times for `make bench`: one parser for both.
parse_importtime = b.bench_module("bench_imports.py", "bench_imports").parse_importtime


def test_parse_importtime():
    text = ("import time: self [us] | cumulative | imported package\n"
            "import time:       100 |        100 |   numpy._core\n"
            "import time:       300 |        400 | numpy\n"
            "import time:        50 |         50 | ml_dtypes\n")
    assert parse_importtime(text) == pytest.approx({"": 450e-6, "numpy": 400e-6, "ml_dtypes": 50e-6})


def test_ml_dtypes_import_stays_cheap():
    """ml_dtypes (imported by onnx, so by every command) costs less than NumPy itself to import.

    0.6.0: 0.01-0.2x NumPy's import on this 2-core machine, idle or loaded; 0.7.0: 6-20x
    (0.5 s more for every command). Median of three fresh interpreters.
    """
    ratios = []
    for _ in range(3):
        times = import_times("import numpy; import ml_dtypes")
        ratios.append(times["ml_dtypes"] / times["numpy"])
    import ml_dtypes

    assert statistics.median(ratios) < 1.0, (
        f"importing ml_dtypes {ml_dtypes.__version__} costs {statistics.median(ratios):.1f}x importing NumPy: "
        "exclude that release in pyproject.toml and re-lock (make lock)")


def test_maps_import_cost_against_the_bare_floor(workdir):
    """Everything `inspector maps` imports as it runs costs at most 3x a bare onnxruntime script's
    imports (numpy, onnxruntime, PIL): about 1.8x today, over 5x with ml_dtypes 0.7.0."""
    argv = commands(workdir)["maps"]
    code = "import sys\nfrom inspector.cli import main\nsys.exit(main(sys.argv[1:]))"
    ratios = []
    for _ in range(3):  # interleaved, so a busy moment of the machine costs both alike
        floor = import_times("import numpy, onnxruntime, PIL.Image")[""]
        result = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *argv], capture_output=True,
                                text=True, env=_env(), timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        ratios.append(parse_importtime(result.stderr)[""] / floor)
    assert statistics.median(ratios) < 3.0, f"inspector maps' imports cost {sorted(ratios)} x the bare floor's"
